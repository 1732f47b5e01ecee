"""``analyze()`` and ``session_report()``: run the aggregates, build the typed report."""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from llamonitor.analysis import _build as build
from llamonitor.analysis import _native, _sql, _suggest
from llamonitor.analysis import _sql_clickhouse as _ch
from llamonitor.analysis._models import (
    Bucket,
    Overview,
    Report,
    Scope,
    SessionReport,
    SessionSummary,
    TraceSummary,
    Trends,
)
from llamonitor.storage._duckdb import DuckDBQuery, Filters

Store = DuckDBQuery | str | os.PathLike[str]

DEFAULT_TOP = 10

_DIMENSIONS: tuple[_sql.Dimension, ...] = (
    "total", "model", "provider", "agent", "operation", "bucket",
)


def auto_bucket(first: datetime | None, last: datetime | None) -> Bucket:
    """Minutes up to 6 hours of data, hours up to 14 days, days beyond."""
    if first is None or last is None:
        return "hour"
    span = last - first
    if span <= timedelta(hours=6):
        return "minute"
    if span <= timedelta(days=14):
        return "hour"
    return "day"


@contextmanager
def _opened(store: Store) -> Iterator[DuckDBQuery]:
    if isinstance(store, DuckDBQuery):
        yield store
        return
    from llamonitor.storage import _parquet_read

    q = _parquet_read.query(Path(store))
    try:
        yield q
    finally:
        q.close()


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    return value


class _Runner:
    """Runs statements with the scope's filters and keeps the time of each."""

    def __init__(self, q: DuckDBQuery, filters: Filters) -> None:
        self.q = q
        self.filters = filters
        self.timings: dict[str, float] = {}

    def table(self, name: str, sql: str, params: list[Any] | None = None) -> pa.Table | None:
        started = time.perf_counter()
        where, wparams = self.q.where(self.filters)
        table = self.q.run(sql.replace("{where}", where), [*wparams, *(params or [])], self.filters)
        self.timings[name] = (time.perf_counter() - started) * 1000
        return table

    def rows(self, name: str, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return _table_rows(self.table(name, sql, params))

    @property
    def native(self) -> bool:
        """Whether the store runs the aggregates itself (ClickHouse): the filters
        have no operation glob (the report's never do)."""
        return _native.usable(self.q, self.filters)

    def native_rows(
        self, name: str, sql: str, params: dict[str, Any] | None = None,
        then: str | None = None, times: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Rows of a statement in the store's own SQL; ``then``: a DuckDB
        statement run over its result (``{rel}``) for the rows."""
        started = time.perf_counter()
        table = _native.run(self.q, sql, params, self.filters, times)
        if then is not None and table is not None:
            table = _native.local(table, then)
        self.timings[name] = (time.perf_counter() - started) * 1000
        return _table_rows(table)


def _table_rows(table: pa.Table | None) -> list[dict[str, Any]]:
    if table is None:
        return []
    return [{k: _utc(v) for k, v in row.items()} for row in table.to_pylist()]


def _tops(
    run: _Runner, top: int
) -> tuple[list[SessionSummary], list[TraceSummary], list[TraceSummary], int, int]:
    """Most expensive sessions; most expensive and longest traces; how many of each."""
    if run.native:
        rows = run.native_rows("top", _ch.top_sql(top))
    else:
        rows = run.rows("top", _sql.top_sql(top))
    ids = {kind: [str(r["id"]) for r in rows if r["rank_by"] == kind]
           for kind in ("session_cost", "trace_cost", "trace_time")}
    counts = {r["rank_by"]: build.integer(r["n"]) for r in rows if r["id"] is None}
    sessions_wanted = ids["session_cost"]
    traces_wanted = sorted(set(ids["trace_cost"]) | set(ids["trace_time"]))
    sessions: dict[str, SessionSummary] = {}
    traces: dict[str, TraceSummary] = {}
    if sessions_wanted or traces_wanted:
        if run.native:
            details = run.native_rows(
                "details",
                _ch.details_sql(bool(sessions_wanted), bool(traces_wanted)),
                {"sessions": tuple(sessions_wanted), "traces": tuple(traces_wanted)},
                times=("start",),
            )
        else:
            details = run.rows("details", _sql.details_sql(), [sessions_wanted, traces_wanted])
        for r in details:
            if r["gid"] == 1 and r["session_id"] in sessions_wanted:
                sessions[str(r["session_id"])] = build.session_summary(r)
            elif r["gid"] == 2 and r["trace_id"] in traces_wanted:
                traces[str(r["trace_id"])] = build.trace_summary(r)
    by_cost = sorted(sessions.values(), key=lambda s: (-s.cost_usd, s.session_id))
    t_cost = sorted((traces[t] for t in ids["trace_cost"] if t in traces),
                    key=lambda t: (-t.cost_usd, t.trace_id))
    t_time = sorted((traces[t] for t in ids["trace_time"] if t in traces),
                    key=lambda t: (-t.duration_ms, t.trace_id))
    return by_cost, t_cost, t_time, counts.get("sessions", 0), counts.get("traces", 0)


def _walk(run: _Runner, head: dict[str, Any], bucket: Bucket, streamed: threading.Event) -> Any:
    """The structure pass (critical path, retries, percentiles): a ``Structure``.

    The spans are streamed from DuckDB (on a cursor of their own), never held
    whole; ``streamed`` is set once the stream is read (or failed).
    """
    try:
        return _stream_and_walk(run, head, bucket, streamed)
    finally:
        streamed.set()  # also when it failed before reading: the caller waits for it


def _stream_and_walk(
    run: _Runner, head: dict[str, Any], bucket: Bucket, streamed: threading.Event
) -> Any:
    try:
        from llamonitor.analysis import _structure
    except ImportError as exc:  # pragma: no cover - numpy is a dependency
        raise ImportError(
            "llamonitor.analysis needs numpy for the critical path: pip install numpy"
        ) from exc
    spans = build.integer(head["spans"])
    partitions = max(1, math.ceil(spans / _structure.PARTITION_SPANS))
    where, params = run.q.where(run.filters)
    sql = _sql.structure_sql(partitions).replace("{where}", where)
    begun = time.perf_counter()
    filters = run.filters.reading(_sql.STRUCTURE_COLUMNS)
    with _read_ahead(run.q.stream(sql, params, filters)) as batches:
        structure = _structure.run(
            _until_read(batches, streamed), partitions,
            bucket_us=_sql.BUCKET_US[bucket],
            first_us=_epoch_us(head["first"]), last_us=_epoch_us(head["last"]),
        )
    run.timings["structure"] = (time.perf_counter() - begun) * 1000
    return structure


PREFETCH_BATCHES = 2
"""Record batches the structure pass's reader keeps ready ahead of the walk."""


@contextmanager
def _read_ahead(
    batches: Generator[pa.RecordBatch, None, None],
) -> Iterator[Iterator[pa.RecordBatch]]:
    """``batches`` read by a thread of their own, up to :data:`PREFETCH_BATCHES`
    ahead: DuckDB makes the next batch (without the GIL) while the caller
    works on this one. The reader is closed when the caller is done."""
    ready: queue.Queue[Any] = queue.Queue(PREFETCH_BATCHES)
    stop = threading.Event()
    end = object()

    def read() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(end)
        except BaseException as exc:  # handed to the caller, raised there
            ready.put(exc)
        finally:
            batches.close()

    def consume() -> Iterator[pa.RecordBatch]:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item

    reader = threading.Thread(target=read, name="llamonitor-analysis-read", daemon=True)
    reader.start()
    try:
        yield consume()
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        reader.join()


def _until_read(
    batches: Iterator[pa.RecordBatch], streamed: threading.Event
) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    finally:
        streamed.set()


def _check_buckets(bucket: Bucket, first: datetime, last: datetime) -> None:
    from llamonitor.analysis._structure import MAX_BUCKETS

    width = _sql.BUCKET_US[bucket]
    n = _epoch_us(last) // width - _epoch_us(first) // width + 1
    if n > MAX_BUCKETS:
        raise ValueError(
            f"bucket: {n:,} {bucket}s between the first and the last span, at most "
            f"{MAX_BUCKETS:,}: choose a coarser bucket or a shorter time range"
        )


def _epoch_us(t: datetime) -> int:
    return (t - build.EPOCH) // timedelta(microseconds=1)


def analyze(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    project: str | None = None,
    session: str | None = None,
    trace: str | None = None,
    bucket: Bucket | None = None,
    top: int = DEFAULT_TOP,
    suggestions: bool = True,
    scores: Any = None,
) -> Report:
    """Analyze the spans of a scope: cost, latency, tokens, quality, trends, suggestions.

    Every figure comes from aggregates written once in DuckDB SQL (so the same
    report runs on every store), plus one streamed, vectorized pass over the
    spans for the critical path, retries and percentiles (in bounded memory).

    Args:
        store: a query object (``llamonitor.storage.parquet.query(dir)`` or any
            store's ``DuckDBQuery``), or the directory of a Parquet store.
        since: spans that started at or after this time (naive = UTC).
        until: spans that started before this time.
        project: only this ``project_name``.
        session: only this session id.
        trace: only this trace id.
        bucket: the trends' time bucket (default: from the data's time span).
        top: how many sessions and traces to list.
        suggestions: compute the suggestions.
        scores: where the scores are: a ``StorageConfig`` (the store's own;
            default for a directory ``store``: its Parquet scores). With
            scores, the report has a ``scores`` section and the cheaper-model
            suggestion compares the two models' scores.

    Returns:
        A :class:`Report` (``report.empty`` when no span is in the scope).

    Raises:
        ValueError: ``top`` below 1, or ``bucket`` too fine for the time range
            (more than 1,000 buckets).
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    filters = Filters(
        session_id=session, trace_id=trace, since=since, until=until, project_name=project
    )
    scope = Scope(since=since, until=until, project=project, session=session, trace=trace)
    report = Report(scope=scope, generated_at=datetime.now(timezone.utc))
    if scores is None and not isinstance(store, DuckDBQuery):
        scores = _parquet_scores(Path(store))
    with _opened(store) as q:
        run = _Runner(q, filters)
        started = time.perf_counter()
        if run.native:
            span = run.native_rows("range", _ch.RANGE_SQL, times=("first", "last"))
            if span and not span[0]["spans"]:
                span = []
        else:
            span = run.rows("range", _sql.RANGE_SQL)
        head: dict[str, Any] = span[0] if span else {"spans": 0, "first": None, "last": None}
        scope.bucket = bucket or auto_bucket(head["first"], head["last"])
        if not build.integer(head["spans"]):
            report.trends.bucket = scope.bucket
            report.timings_ms = run.timings
            return report
        _check_buckets(scope.bucket, head["first"], head["last"])
        _fill(report, run, head, scope.bucket, top, suggestions, scores)
        run.timings["total"] = (time.perf_counter() - started) * 1000
        report.timings_ms = run.timings
    return report


def _fill(
    report: Report,
    run: _Runner,
    head: dict[str, Any],
    bucket: Bucket,
    top: int,
    with_suggestions: bool,
    scores: Any = None,
) -> None:
    first, last = head["first"], head["last"]
    # The structure pass runs in a thread. Its stream goes first, alone: DuckDB
    # makes a streamed result only as it is read, so beside other statements it
    # would finish last, and its walk (numpy, one core) would be left alone at
    # the end. Read first, it is walked while DuckDB computes the other
    # statements on the other cores (numpy and DuckDB both release the GIL).
    with ThreadPoolExecutor(2, thread_name_prefix="llamonitor-analysis") as pool:
        streamed = threading.Event()
        walking = pool.submit(_walk, run, head, bucket, streamed)
        streamed.wait()
        if run.native:
            profile = run.native_rows(
                "profile", _ch.profile_sql(bucket), then=_sql.profile_rollup_sql(_DIMENSIONS)
            )
        else:
            profile = run.rows("profile", _sql.profile_sql(_DIMENSIONS, bucket))
        dims = build.by_dimension(profile, _DIMENSIONS)
        if not dims["total"]:
            walking.result()
            return  # the store changed between two statements: report it as empty
        # The candidates' prices, while the other statements run (see _suggest).
        pricing = (
            pool.submit(_suggest.prepare_cheaper_models, dims["model"])
            if with_suggestions
            else None
        )
        total = dims["total"][0]
        top_sessions, top_traces, slowest, n_sessions, n_traces = _tops(run, top)
        errors: list[dict[str, Any]] = []
        repeated: list[dict[str, Any]] = []
        if build.integer(total["errors"]):
            errors = (
                run.native_rows("errors", _ch.errors_sql(), then=_sql.errors_rollup_sql(),
                                times=("first", "last"))
                if run.native else run.rows("errors", _sql.errors_sql())
            )
        if with_suggestions:
            repeated = (
                run.native_rows("cache", _ch.cache_sql(), then=_sql.cache_rollup_sql())
                if run.native else run.rows("cache", _sql.cache_sql())
            )
        structure = walking.result()
        prices = pricing.result() if pricing is not None else None
    qs, operations = build.percentiles(structure, dims)
    walked = build.named(structure.path, structure.excess_us, operations)
    report.overview = Overview(
        spans=build.integer(total["spans"]), traces=n_traces, sessions=n_sessions,
        errors=build.integer(total["errors"]), llm_calls=build.integer(total["llm_calls"]),
        first=first, last=last, sampled_spans=build.integer(total["sampled_spans"]),
        estimated_spans=float(total["estimated_spans"] or 0.0),
    )
    report.cost = build.cost(dims, top_sessions, top_traces)
    report.latency = build.latency(dims, qs, walked, slowest)
    report.tokens = build.tokens(dims, top)
    report.quality = build.quality(dims, errors, walked)
    report.trends = Trends(bucket=bucket, points=build.trend(dims["bucket"], qs, bucket))
    if scores is not None:
        from llamonitor.analysis import _score_section

        begun = time.perf_counter()
        report.scores = _score_section.score_section(scores, run.q, run.filters, bucket)
        run.timings["scores"] = (time.perf_counter() - begun) * 1000
    if with_suggestions:
        begun = time.perf_counter()
        report.suggestions = build.suggestions(report, dims, repeated, prices)
        if any(r["agent_name"] is not None for r in dims["agent"]):
            from llamonitor.analysis import _agents

            spans = build.integer(total["spans"])
            if spans <= _agents.MAX_SPANS:
                graph = _agents.graph_of(run.q, run.filters, spans=spans)
                report.suggestions = _suggest.ranked(report.suggestions + graph.suggestions)
        run.timings["suggestions"] = (time.perf_counter() - begun) * 1000


def _parquet_scores(directory: Path) -> Any:
    """The ``StorageConfig`` of a Parquet directory's scores (``None``: not a directory)."""
    if not directory.is_dir():
        return None
    from llamonitor.schema.config import StorageConfig

    return StorageConfig(backend="parquet", output_dir=directory)


def session_report(
    store: Store,
    session_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    project: str | None = None,
    trace: str | None = None,
    bucket: Bucket | None = None,
    top: int = DEFAULT_TOP,
    scores: Any = None,
) -> SessionReport:
    """The :class:`SessionReport` of one session: every breakdown, and suggestions.

    Args:
        store: as for :func:`analyze`.
        session_id: the session.
        since, until, project, trace: narrow the session further (as for :func:`analyze`).
        bucket: the trends' time bucket (default: from the session's length).
        top: how many traces to list.
        scores: as for :func:`analyze`.
    """
    report = analyze(
        store, session=session_id, since=since, until=until, project=project, trace=trace,
        bucket=bucket, top=top, scores=scores,
    )
    fields = {f: getattr(report, f) for f in report.__dataclass_fields__}
    return SessionReport(**fields, session_id=session_id)
