"""``GET /api/traces`` (a page of traces), ``GET /api/traces/{trace_id}`` (one
trace as a tree) and ``GET /api/traces/{trace_id}/spans/{span_id}`` (one span,
every column)."""

from __future__ import annotations

import json
import queue
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from llamonitor.server import _tree
from llamonitor.server._deps import state
from llamonitor.server._errors import BadParameter, NotFound
from llamonitor.server._query import MAX_TEXT, SpanFilters, decode_cursor, encode_cursor
from llamonitor.server._query import span_filters as span_filters_dep
from llamonitor.server._scores import scores_of
from llamonitor.server._settings import DEFAULT_PAGE_SIZE
from llamonitor.storage._duckdb import Filters

router = APIRouter(tags=["traces"])

UTC = timezone.utc
DEFAULT_MAX_SPANS = 20_000
MAX_SPANS = 100_000
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such trace (or span)."}}


class TraceSummary(BaseModel):
    trace_id: str
    session_id: str | None
    root_operation: str | None
    start: datetime
    end: datetime
    duration_ms: float | None
    spans: int
    errors: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    models: list[str]


class TracePage(BaseModel):
    traces: list[TraceSummary]
    next_cursor: str | None


class Subtree(BaseModel):
    spans: int
    errors: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None


class TreeSpan(BaseModel):
    span_id: str
    parent_span_id: str | None
    depth: int
    operation_name: str
    operation_type: str
    start_offset_ms: float
    duration_ms: float | None
    self_ms: float | None
    error: bool
    error_type: str | None
    model: str | None
    provider: str | None
    agent_name: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    on_critical_path: bool
    child_count: int
    children_omitted: bool
    subtree: Subtree


class TraceTree(BaseModel):
    trace_id: str
    session_id: str | None
    start: datetime
    end: datetime
    duration_ms: float
    span_count: int
    error_count: int
    truncated: bool
    critical_path: list[str]
    scores: list[dict[str, Any]] = []
    spans: list[TreeSpan]


# -- the list ----------------------------------------------------------------

SORTS: dict[str, tuple[str, type]] = {
    "start": ("start", datetime),
    "duration_ms": ("duration_ms", float),
    "cost_usd": ("cost_usd", float),
    "spans": ("spans", int),
    "errors": ("errors", int),
}
"""``sort`` -> (the column of the summary it orders by, its cursor type)."""

_SUMMARY_SQL = """
WITH s AS (SELECT * FROM {{rel}}),
hit AS (SELECT DISTINCT trace_id FROM s {where}),
t AS (
  SELECT s.trace_id,
    arg_min(s.session_id, s."timestamp") AS session_id,
    coalesce(arg_min(s.operation_name, s."timestamp") FILTER (WHERE s.parent_span_id IS NULL),
             arg_min(s.operation_name, s."timestamp")) AS root_operation,
    min(s."timestamp") AS start,
    min(epoch_us(s."timestamp")) AS start_us,
    max(epoch_us(s."timestamp") + coalesce(s.duration_ms, 0) * 1000) AS end_us,
    count(*) AS spans,
    count(*) FILTER (WHERE s.error) AS errors,
    sum(s.input_tokens) AS input_tokens,
    sum(s.output_tokens) AS output_tokens,
    sum(s.total_tokens) AS total_tokens,
    sum(s.cost_usd) AS cost_usd,
    list(DISTINCT s.model ORDER BY s.model) FILTER (WHERE s.model IS NOT NULL) AS models
  FROM s SEMI JOIN hit ON s.trace_id = hit.trace_id
  GROUP BY s.trace_id
),
k AS (SELECT *, (end_us - start_us) / 1000.0 AS duration_ms FROM t)
SELECT * FROM k {after}
ORDER BY ({key} IS NULL), {key} {dir}, trace_id {dir}
LIMIT ?
"""


def _sort(sort: str) -> tuple[str, bool]:
    name = sort.removeprefix("-")
    if name not in SORTS:
        raise BadParameter(
            "sort", f"{sort[:40]!r} is not one of {', '.join(SORTS)} ('-' first: descending)"
        )
    return name, sort.startswith("-")


def _after(key: str, desc: bool, cursor: list[Any]) -> tuple[str, list[Any]]:
    """Rows after the cursor's (key, trace_id) in ``ORDER BY (key IS NULL), key, trace_id``."""
    value, trace_id = cursor
    op = "<" if desc else ">"
    if value is None:
        return f"WHERE {key} IS NULL AND trace_id {op} ?", [trace_id]
    return (
        f"WHERE {key} IS NULL OR {key} {op} ? OR ({key} = ? AND trace_id {op} ?)",
        [value, value, trace_id],
    )


def _ts(us: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(us))


def _summary(row: dict[str, Any]) -> TraceSummary:
    return TraceSummary(
        trace_id=row["trace_id"],
        session_id=row["session_id"],
        root_operation=row["root_operation"],
        start=row["start"].astimezone(UTC),
        end=_ts(row["end_us"]),
        duration_ms=_tree.finite(row["duration_ms"]),
        spans=row["spans"],
        errors=row["errors"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        total_tokens=row["total_tokens"],
        cost_usd=_tree.finite(row["cost_usd"]),
        models=row["models"] or [],
    )


def _trace_scope(f: SpanFilters) -> Filters:
    """The pushdown that keeps every span of a matching trace: only what is the
    same over all of a trace's spans (its session, its id)."""
    return Filters(session_id=f.session, trace_id=f.trace)


@router.get("/api/traces", response_model=TracePage)
def list_traces(
    request: Request,
    filters: Annotated[SpanFilters, Depends(span_filters_dep)],
    sort: Annotated[str, Query(max_length=40, description="start, duration_ms, cost_usd, "
                               "spans or errors; '-' first for descending")] = "-start",
    limit: Annotated[int | None, Query(ge=1, description="Traces per page")] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> TracePage:
    """Traces with at least one span passing the filters; figures over all their spans."""
    s = state(request)
    limit = limit or min(DEFAULT_PAGE_SIZE, s.config.max_page_size)
    if limit > s.config.max_page_size:
        raise BadParameter("limit", f"at most {s.config.max_page_size} (server.max_page_size)")
    name, desc = _sort(sort)
    key, kind = SORTS[name]
    where, params = filters.where()
    after, after_params = "", list[Any]()
    if cursor:
        sort_name, value, trace_id = decode_cursor(cursor, (str, kind, str))
        if sort_name != sort or trace_id is None:
            raise BadParameter("cursor", "is not a cursor of this sort")
        after, after_params = _after(key, desc, [value, trace_id])
    sql = _SUMMARY_SQL.format(where=where, after=after, key=key, dir="DESC" if desc else "ASC")
    rows = s.store.rows(sql, [*params, *after_params, limit + 1], _trace_scope(filters))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        value = last[key].astimezone(UTC) if kind is datetime else last[key]
        next_cursor = encode_cursor([sort, value, last["trace_id"]])
    return TracePage(traces=[_summary(r) for r in rows], next_cursor=next_cursor)


# -- one trace ---------------------------------------------------------------

TraceId = Annotated[str, Path(max_length=MAX_TEXT)]


@router.get("/api/traces/{trace_id:path}", response_model=TraceTree, responses=NOT_FOUND)
def trace_tree(
    request: Request,
    trace_id: TraceId,
    root: Annotated[str | None, Query(max_length=MAX_TEXT,
                                      description="A span id: only its subtree")] = None,
    max_spans: Annotated[int, Query(ge=1, le=MAX_SPANS, description="Spans shown at most; "
                                    "the deepest are left out past it")] = DEFAULT_MAX_SPANS,
) -> Response:
    """The trace as a tree, flattened depth first (children by start time)."""
    table = state(request).store.run(_tree.SQL, [trace_id], Filters(trace_id=trace_id))
    if table is None or len(table) == 0:
        raise NotFound(f"no trace {trace_id!r}")
    head, spans = build_tree(trace_id, table, root, max_spans)
    head = {**{k: v for k, v in head.items() if k != "spans"},
            "scores": scores_of(request, trace_id=trace_id), "spans": []}
    # Thousands of spans: encoded by DuckDB from the columns, not validated again
    # (the schema is TraceTree's; the tests check the bodies against it).
    body = json.dumps(head, allow_nan=False, separators=(",", ":"))
    return Response(f'{body[:-3]}[{",".join(_json_rows(spans))}]}}',
                    media_type="application/json")


_SPAN_COLUMNS = ("operation_name", "operation_type", "error_type", "model", "provider",
                 "agent_name", "input_tokens", "output_tokens")
"""Columns of a tree's span as they are stored."""
_SUBTREE = ("spans", "errors", "input_tokens", "output_tokens", "total_tokens", "cost_usd")

_POOL: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
"""In-memory DuckDB connections that encode trees, each used by one request at a time."""


def _json_rows(spans: pa.Table) -> list[str]:
    """Each row of ``spans`` as a JSON object (DuckDB's ``to_json``)."""
    try:
        con = _POOL.get_nowait()
    except queue.Empty:
        con = duckdb.connect(":memory:")
    try:
        con.register("tree_spans", spans)
        try:
            out: list[str] = (
                con.sql("SELECT to_json(s)::VARCHAR AS j FROM tree_spans s")
                .to_arrow_table().column(0).to_pylist()
            )
        finally:
            con.unregister("tree_spans")
    except BaseException:
        con.close()
        raise
    _POOL.put(con)
    return out


def _masked(values: Any, known: Any) -> pa.Array:
    return pa.array(values, mask=~np.asarray(known, np.bool_))


def build_tree(
    trace_id: str, table: pa.Table, root: str | None, max_spans: int
) -> tuple[dict[str, Any], pa.Table]:
    """:class:`TraceTree` with ``spans`` empty, and the spans as columns (named
    and ordered as :class:`TreeSpan`), for :data:`_tree.SQL`'s rows.

    Depth, offsets and the critical path are those of the whole trace, with
    ``root`` too (so a fetched subtree fits where it was left out).
    """
    tree = _tree.Tree.of(table)
    if root is None:
        top, base = tree.roots(), 0
    else:
        found = pc.index(table.column("span_id"), root).as_py()
        if found < 0:
            raise NotFound(f"no span {root!r} in trace {trace_id!r}")
        top, base = [found], tree.depth_of(found)
    order, depth = tree.preorder(top)
    shown = np.asarray(_tree.keep(order, depth, max_spans), np.int64)
    rows = np.asarray(order, np.int64)[shown]
    prow = tree.parent[rows]
    kept = np.bincount(prow[prow >= 0], minlength=tree.n)
    child_count = tree.child_count()
    t0 = int(tree.start_us.min())
    end_us = int((tree.start_us + tree.dur_us).max())
    dur = table.column("duration_ms").to_numpy(zero_copy_only=False).astype(np.float64)[rows]
    known = np.isfinite(dur)
    cost = table.column("cost_usd").to_numpy(zero_copy_only=False).astype(np.float64)[rows]
    err = table.column("error").to_numpy(zero_copy_only=False).astype(np.bool_)
    on_path = tree.critical()[rows]
    take = pa.array(rows)
    ids = table.column("span_id")
    sub = _tree.rollups(tree, order)
    cols: dict[str, Any] = {c: table.column(c).take(take) for c in _SPAN_COLUMNS}
    cols.update(
        span_id=ids.take(take),
        parent_span_id=ids.take(pa.array(prow, mask=prow < 0)),
        depth=pa.array(np.asarray(depth, np.int64)[shown] + base),
        start_offset_ms=pa.array((tree.start_us[rows] - t0) / 1000.0),
        duration_ms=_masked(np.where(known, dur, 0.0), known),
        self_ms=_masked(tree.self_us()[rows] / 1000.0, known),
        error=pa.array(err[rows]),
        cost_usd=_masked(np.where(np.isfinite(cost), cost, 0.0), np.isfinite(cost)),
        on_critical_path=pa.array(on_path),
        child_count=pa.array(child_count[rows]),
        children_omitted=pa.array(kept[rows] < child_count[rows]),
        subtree=pa.StructArray.from_arrays(
            [_masked(sub[k][0][shown], sub[k][1][shown]) for k in _SUBTREE], list(_SUBTREE)),
    )
    names = list(TreeSpan.model_fields)
    spans = pa.table([cols[n] for n in names], names=names)
    head = {
        "trace_id": trace_id,
        "session_id": table.column("session_id")[0].as_py(),
        "start": _iso(_ts(t0)),
        "end": _iso(_ts(end_us)),
        "duration_ms": (end_us - t0) / 1000.0,
        "span_count": tree.n,
        "error_count": int(err.sum()),
        "truncated": bool(rows.size < len(order)),
        "critical_path": spans.column("span_id").filter(pa.array(on_path)).to_pylist(),
        "spans": [],
    }
    return head, spans


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@router.get("/api/traces/{trace_id:path}/spans/{span_id}", response_model=dict[str, Any],
            responses=NOT_FOUND)
def one_span(
    request: Request, trace_id: TraceId, span_id: Annotated[str, Path(max_length=MAX_TEXT)]
) -> dict[str, Any]:
    """One span, every column; ``custom_attributes`` as an object."""
    rows = state(request).store.rows(
        'SELECT * REPLACE (coalesce(error, false) AS error) FROM {rel} '
        'WHERE trace_id = ? AND span_id = ? ORDER BY "timestamp", event_id LIMIT 1',
        [trace_id, span_id],
        Filters(trace_id=trace_id),
    )
    if not rows:
        raise NotFound(f"no span {span_id!r} in trace {trace_id!r}")
    return {**span_json(rows[0]), "scores": scores_of(request, span_id=span_id)}


def span_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as JSON: UTC times, no NaN, ``custom_attributes`` parsed
    (``{"_raw": text}`` when it is not a JSON object)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = _iso(value)
        out[key] = _tree.finite(value)
    raw = out.get("custom_attributes")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw, parse_constant=lambda _c: None)
        except ValueError:
            parsed = None
        out["custom_attributes"] = parsed if isinstance(parsed, dict) else {"_raw": raw}
    return out


# A trace id may hold a slash (sent as %2F): both routes take a path, and the
# span's, the longer, must be tried first.
router.routes.sort(key=lambda r: 0 if getattr(r, "path", "").endswith("/spans/{span_id}") else 1)
