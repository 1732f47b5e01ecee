"""Statement rows -> the typed results (cost, latency, tokens, quality, trends)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from llamonitor.analysis import _sql
from llamonitor.analysis import _suggest as suggest
from llamonitor.analysis._models import (
    Bottleneck,
    Bucket,
    CostBreakdown,
    CostGroup,
    CriticalPath,
    ErrorPattern,
    ErrorTypeCount,
    LatencyBreakdown,
    LatencyGroup,
    OperationErrors,
    QualityBreakdown,
    Report,
    RetryStats,
    SessionSummary,
    Suggestion,
    TokenBreakdown,
    TokenGroup,
    TraceSummary,
    TrendPoint,
)
from llamonitor.analysis._score_section import model_scores

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def num(value: Any) -> float:
    return 0.0 if value is None else float(value)


def integer(value: Any) -> int:
    return 0 if value is None else int(value)


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def key_of(dim: _sql.Dimension, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in _sql.DIMENSIONS[dim])


def label_of(dim: _sql.Dimension, row: dict[str, Any]) -> Any:
    return {
        "model": row["model"], "provider": row["provider"], "agent": row["agent_name"],
        "operation": row["operation_name"], "bucket": row["bucket"], "total": None,
    }[dim]


def by_dimension(
    rows: list[dict[str, Any]], dims: tuple[_sql.Dimension, ...]
) -> dict[_sql.Dimension, list[dict[str, Any]]]:
    gids = _sql.grouping_ids(dims)
    out: dict[_sql.Dimension, list[dict[str, Any]]] = {d: [] for d in dims}
    for row in rows:
        dim = gids.get(int(row["gid"]))
        if dim is not None:
            out[dim].append(row)
    return out


def percentiles(
    structure: Any, dims: dict[_sql.Dimension, list[dict[str, Any]]]
) -> tuple[dict[tuple[Any, ...], list[float]], dict[int, tuple[str, float]]]:
    """Percentiles by (dimension, *key); and each operation's hash -> (name, p50).

    The structure pass knows groups by hash (and buckets by number); the
    profile rows name them.
    """
    out: dict[tuple[Any, ...], list[float]] = {}
    found = structure.percentiles
    out[("total",)] = [float(v) for v in found["total"][0]]
    operations: dict[int, tuple[str, float]] = {}
    for dim, codes_name, hash_col in (
        ("operation", "op", "op_hash"), ("model", "model", "model_hash"),
        ("agent", "agent", "agent_hash"),
    ):
        index = {h: i for i, h in enumerate(structure.codes[codes_name].hashes)}
        for row in dims[dim]:  # type: ignore[index]
            code = index.get(int(row[hash_col]))
            if code is None:
                continue  # written after the structure pass read the store
            qs = [float(v) for v in found[dim][code]]
            key = (dim, *key_of(dim, row))  # type: ignore[arg-type]
            out[key] = qs
            if dim == "operation":
                operations[int(row["op_hash"])] = (name_of(row["operation_name"]), qs[0])
    for row in dims["bucket"]:
        code = int(row["bucket"]) - structure.first_bucket
        if 0 <= code < len(found["bucket"]):
            out[("bucket", row["bucket"])] = [float(v) for v in found["bucket"][code]]
    return out, operations


def latency_group(
    dim: _sql.Dimension, row: dict[str, Any], qs: dict[tuple[Any, ...], list[float]]
) -> LatencyGroup:
    p50, p95, p99 = qs.get((dim, *key_of(dim, row)), [0.0, 0.0, 0.0])
    count = integer(row["spans"])
    return LatencyGroup(
        key=label_of(dim, row) if dim != "total" else None,
        provider=row["provider"] if dim == "model" else None,
        count=count,
        total_ms=num(row["total_ms"]),
        avg_ms=ratio(num(row["total_ms"]), count),
        p50_ms=p50, p95_ms=p95, p99_ms=p99,
        max_ms=num(row["max_ms"]),
    )


def cost_group(dim: _sql.Dimension, row: dict[str, Any], total: float) -> CostGroup:
    cost = num(row["cost_usd"])
    return CostGroup(
        key=label_of(dim, row),
        provider=row["provider"] if dim == "model" else None,
        spans=integer(row["spans"]),
        calls=integer(row["llm_calls"]),
        cost_usd=cost,
        input_cost_usd=num(row["input_cost_usd"]),
        output_cost_usd=num(row["output_cost_usd"]),
        unpriced_calls=integer(row["unpriced_calls"]),
        share=ratio(cost, total),
    )


def token_group(dim: _sql.Dimension, row: dict[str, Any]) -> TokenGroup:
    calls = integer(row["token_calls"])
    return TokenGroup(
        key=label_of(dim, row),
        provider=row["provider"] if dim == "model" else None,
        calls=calls,
        input_tokens=integer(row["input_tokens"]),
        output_tokens=integer(row["output_tokens"]),
        total_tokens=integer(row["total_tokens"]),
        input_per_call=ratio(integer(row["input_tokens"]), calls),
        output_per_call=ratio(integer(row["output_tokens"]), calls),
    )


def name_of(value: Any) -> str:
    return "" if value is None else str(value)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """The fields sessions and traces share (from ``_sql._SUMMARY``)."""
    return dict(
        spans=integer(row["spans"]), llm_calls=integer(row["llm_calls"]),
        errors=integer(row["errors"]), cost_usd=num(row["cost"]),
        unpriced_calls=integer(row["unpriced_calls"]), tokens=integer(row["tokens"]),
        start=row["start"], duration_ms=num(row["duration_ms"]),
    )


def session_summary(row: dict[str, Any]) -> SessionSummary:
    return SessionSummary(
        session_id=str(row["session_id"]), traces=integer(row["roots"]), **_summary(row)
    )


def trace_summary(row: dict[str, Any]) -> TraceSummary:
    return TraceSummary(
        trace_id=str(row["trace_id"]), session_id=row["trace_session"],
        root_operation=row["root_operation"], **_summary(row),
    )


def _quality_base(
    total: dict[str, Any],
    operations: list[dict[str, Any]],
    errors: list[dict[str, Any]],
) -> QualityBreakdown:
    spans, failed = integer(total["spans"]), integer(total["errors"])
    types = sorted(
        (r for r in errors if r["gid"] == _sql.ERRORS_BY_TYPE_GID),
        key=lambda r: (-r["n"], r["et"]),
    )
    matrix: dict[str, list[tuple[str, int]]] = {}
    for r in errors:
        if r["gid"] == _sql.ERRORS_BY_OPERATION_GID:
            matrix.setdefault(str(r["op"]), []).append((str(r["et"]), int(r["n"])))
    by_op = []
    for row in operations:
        n_err = integer(row["errors"])
        if not n_err:
            continue
        name = name_of(row["operation_name"])
        kinds = sorted(matrix.get(name, []), key=lambda kv: (-kv[1], kv[0]))
        by_op.append(
            OperationErrors(
                operation=name, spans=integer(row["spans"]), errors=n_err,
                error_rate=ratio(n_err, integer(row["spans"])), error_types=dict(kinds),
            )
        )
    by_op.sort(key=lambda o: (-o.errors, -o.error_rate, o.operation))
    patterns = sorted(
        (
            ErrorPattern(
                pattern=str(r["pat"]), error_type=str(r["et"]), count=int(r["n"]),
                example=str(r["example"]), operations=[str(o) for o in r["ops"] or []],
                first=r["first"], last=r["last"],
            )
            for r in errors
            if r["gid"] == _sql.ERRORS_BY_PATTERN_GID
        ),
        key=lambda p: (-p.count, p.error_type, p.pattern),
    )
    return QualityBreakdown(
        spans=spans, errors=failed,
        success_rate=ratio(spans - failed, spans), error_rate=ratio(failed, spans),
        by_error_type=[
            ErrorTypeCount(error_type=str(r["et"]), count=int(r["n"]), share=ratio(r["n"], failed))
            for r in types
        ],
        by_operation=by_op,
        patterns=patterns,
    )


@dataclass
class Walked:
    path: CriticalPath
    bottlenecks: list[Bottleneck]
    extra: dict[str, tuple[int, int]]  # operation -> (extra attempts, after an error)


def named(acc: Any, excess: Any, operations: dict[int, tuple[str, float]]) -> Walked:
    """Name the structure pass's figures; ``operations``: hash -> (name, p50 ms)."""
    names = [operations.get(int(h), ("?", 0.0))[0] for h in acc.op_hashes]
    total_ms = acc.total_us / 1000
    bottlenecks = [
        Bottleneck(
            operation=names[i],
            critical_ms=float(acc.critical_us[i]) / 1000,
            share=ratio(float(acc.critical_us[i]) / 1000, total_ms),
            spans_on_path=int(acc.on_path[i]),
            avg_ms_on_path=ratio(float(acc.critical_us[i]) / 1000, int(acc.on_path[i])),
            excess_ms=float(excess[i]) / 1000,
        )
        for i in range(len(names))
        if acc.critical_us[i] > 0
    ]
    bottlenecks.sort(key=lambda b: (-b.critical_ms, b.operation))
    extra = {
        names[i]: (int(acc.extra_attempts[i]), int(acc.after_error[i]))
        for i in range(len(names))
        if acc.extra_attempts[i] > 0
    }
    path = CriticalPath(
        roots=acc.roots, orphans=max(0, acc.roots - acc.declared_roots), spans=acc.spans,
        total_ms=total_ms,
    )
    return Walked(path, bottlenecks, extra)


def trend(
    rows: list[dict[str, Any]], qs: dict[tuple[Any, ...], list[float]], bucket: Bucket
) -> list[TrendPoint]:
    width = _sql.BUCKET_US[bucket]
    points = []
    for row in sorted(rows, key=lambda r: r["bucket"]):
        p50, p95, p99 = qs.get(("bucket", row["bucket"]), [0.0, 0.0, 0.0])
        spans, errors = integer(row["spans"]), integer(row["errors"])
        start = EPOCH + timedelta(microseconds=int(row["bucket"]) * width)
        points.append(
            TrendPoint(
                start=start, spans=spans, errors=errors, error_rate=ratio(errors, spans),
                llm_calls=integer(row["llm_calls"]), cost_usd=num(row["cost_usd"]),
                input_tokens=integer(row["input_tokens"]),
                output_tokens=integer(row["output_tokens"]),
                p50_ms=p50, p95_ms=p95, p99_ms=p99,
            )
        )
    return points


Dims = dict[_sql.Dimension, list[dict[str, Any]]]


def cost(
    dims: Dims, top_sessions: list[SessionSummary], top_traces: list[TraceSummary]
) -> CostBreakdown:
    total = dims["total"][0]
    cost_total = num(total["cost_usd"])

    def groups(dim: _sql.Dimension) -> list[CostGroup]:
        items = [cost_group(dim, r, cost_total) for r in dims[dim]]
        return sorted(items, key=lambda g: (-g.cost_usd, -g.calls, -g.spans, name_of(g.key)))

    return CostBreakdown(
        total_usd=cost_total, input_usd=num(total["input_cost_usd"]),
        output_usd=num(total["output_cost_usd"]), llm_calls=integer(total["llm_calls"]),
        priced_calls=integer(total["priced_calls"]),
        unpriced_calls=integer(total["unpriced_calls"]),
        by_model=groups("model"), by_provider=groups("provider"), by_agent=groups("agent"),
        by_operation=groups("operation"), top_sessions=top_sessions, top_traces=top_traces,
    )


def latency(
    dims: Dims, qs: dict[tuple[Any, ...], list[float]], walked: Walked,
    slowest: list[TraceSummary],
) -> LatencyBreakdown:
    def groups(dim: _sql.Dimension) -> list[LatencyGroup]:
        items = [latency_group(dim, r, qs) for r in dims[dim]]
        return sorted(items, key=lambda g: (-g.total_ms, name_of(g.key)))

    return LatencyBreakdown(
        overall=latency_group("total", dims["total"][0], qs), by_operation=groups("operation"),
        by_model=groups("model"), by_agent=groups("agent"),
        critical_path=walked.path, bottlenecks=walked.bottlenecks, slowest_traces=slowest,
    )


def tokens(dims: Dims, top: int) -> TokenBreakdown:
    total = dims["total"][0]

    def groups(dim: _sql.Dimension) -> list[TokenGroup]:
        items = [token_group(dim, r) for r in dims[dim] if integer(r["token_calls"])]
        return sorted(items, key=lambda g: (-g.total_tokens, name_of(g.key)))

    calls = integer(total["token_calls"])
    return TokenBreakdown(
        input_tokens=integer(total["input_tokens"]),
        output_tokens=integer(total["output_tokens"]),
        total_tokens=integer(total["total_tokens"]),
        cache_read_tokens=integer(total["cache_read_tokens"]),
        cache_write_tokens=integer(total["cache_write_tokens"]),
        reasoning_tokens=integer(total["reasoning_tokens"]),
        calls_with_tokens=calls,
        llm_calls_without_tokens=integer(total["missing_token_calls"]),
        input_per_call=ratio(integer(total["input_tokens"]), calls),
        output_per_call=ratio(integer(total["output_tokens"]), calls),
        by_model=groups("model"), by_agent=groups("agent"),
        top_operations=groups("operation")[:top],
    )


def quality(dims: Dims, errors: list[dict[str, Any]], walked: Walked) -> QualityBreakdown:
    out = _quality_base(dims["total"][0], dims["operation"], errors)
    spans_of = {name_of(r["operation_name"]): integer(r["spans"]) for r in dims["operation"]}
    out.retries = sorted(
        (
            RetryStats(operation=op, spans=spans_of.get(op, 0), extra_attempts=n, after_error=e)
            for op, (n, e) in walked.extra.items()
        ),
        key=lambda r: (-r.extra_attempts, r.operation),
    )
    out.extra_attempts = sum(r.extra_attempts for r in out.retries)
    out.after_error = sum(r.after_error for r in out.retries)
    return out


def suggestions(
    report: Report,
    dims: Dims,
    repeated: list[dict[str, Any]],
    prices: suggest.Prices | None = None,
) -> list[Suggestion]:
    failed = {
        name_of(r["operation_name"]): (
            None if r["failed_cost_usd"] is None else num(r["failed_cost_usd"]),
            num(r["failed_ms"]),
        )
        for r in dims["operation"]
    }
    q = report.quality
    return suggest.ranked(
        suggest.cheaper_models(dims["model"], prices, model_scores(report.scores))
        + suggest.cache(repeated)
        + suggest.errors(q.by_operation, failed, q.patterns, {r.operation: r for r in q.retries})
        + suggest.bottlenecks(
            report.latency.bottlenecks, {name_of(g.key): g for g in report.latency.by_operation}
        )
    )
