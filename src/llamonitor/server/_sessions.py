"""``GET /api/sessions`` (totals per session over the spans passing the filters,
a page at a time) and ``GET /api/sessions/{session_id}`` (a session's totals and
its traces in order of start, as a conversation: the first captured prompt and
the last captured completion of each trace)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from llamonitor.server._deps import state
from llamonitor.server._errors import ErrorBody, NotFound
from llamonitor.server._query import MAX_TEXT, SpanFilters, span_filters
from llamonitor.server._rows import Keyset, clean_row, limit_checked
from llamonitor.server._spans import Cursor, Limit, finite_sql
from llamonitor.storage._duckdb import Filters

router = APIRouter(tags=["sessions"])

NO_NUL = r"^[^\x00]*$"

CONTENT_CHARS = 2000
"""Characters of a trace's prompt and completion the session view keeps."""

_COST = finite_sql("cost_usd")
_END_US = 'epoch_us("timestamp") + coalesce(' + finite_sql("duration_ms") + ", 0) * 1000"

TOTALS_SQL = (
    "count(*) AS spans, count(DISTINCT trace_id) AS traces, "
    "TRY_CAST(sum(input_tokens) AS BIGINT) AS input_tokens, "
    "TRY_CAST(sum(output_tokens) AS BIGINT) AS output_tokens, "
    "TRY_CAST(sum(total_tokens) AS BIGINT) AS total_tokens, "
    f"sum({_COST}) AS cost_usd, count(*) FILTER (WHERE error) AS errors, "
    'min("timestamp") AS first_seen, max("timestamp") AS last_seen'
)
"""A session's figures over ``{rel}``'s rows of it (GROUP BY session_id)."""

SESSION_SORTS: dict[str, tuple[str, type]] = {
    "last_seen": ("last_seen", datetime),
    "first_seen": ("first_seen", datetime),
    "spans": ("spans", int),
    "traces": ("traces", int),
    "cost_usd": (finite_sql("cost_usd"), float),
    "errors": ("errors", int),
}

SessionSort = Literal[
    "last_seen", "-last_seen", "first_seen", "-first_seen", "spans", "-spans",
    "traces", "-traces", "cost_usd", "-cost_usd", "errors", "-errors",
]


class SessionTotals(BaseModel):
    session_id: str
    spans: int
    traces: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None = Field(description="Sum over the priced spans; null: none priced.")
    errors: int
    first_seen: datetime = Field(description="Start of the session's first span, UTC.")
    last_seen: datetime = Field(description="Start of the session's latest span, UTC.")


class SessionPage(BaseModel):
    sessions: list[SessionTotals]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last.")


class SessionTrace(BaseModel):
    trace_id: str
    root_operation: str = Field(description="The root span's operation (else the first span's).")
    start: datetime
    duration_ms: float = Field(description="From the first start to the last end of its spans.")
    spans: int
    errors: int
    cost_usd: float | None
    total_tokens: int | None
    prompt: str | None = Field(
        description=f"The first captured prompt of the trace (first {CONTENT_CHARS} characters)."
    )
    completion: str | None = Field(
        description=f"The last captured completion (first {CONTENT_CHARS} characters)."
    )


class SessionDetail(BaseModel):
    session: SessionTotals
    traces: list[SessionTrace]


@router.get("/api/sessions", response_model=SessionPage)
def list_sessions(
    request: Request,
    filters: Annotated[SpanFilters, Depends(span_filters)],
    sort: Annotated[SessionSort, Query(description="A column; a leading - for descending")]
    = "-last_seen",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SessionPage:
    """Sessions with a span passing the filters; their totals are over those spans."""
    s = state(request)
    limit = limit_checked(limit, s.config.max_page_size)
    keyset = Keyset(sort, SESSION_SORTS, "session_id")
    where, params = filters.where()
    after, after_params = keyset.after(cursor or None)
    sql = (
        f"SELECT * FROM (SELECT session_id, {TOTALS_SQL} FROM {{rel}} {where} "
        f"GROUP BY session_id) WHERE TRUE {after} {keyset.order_by()} LIMIT ?"
    )
    rows = s.store.rows(sql, [*params, *after_params, limit + 1], filters.pushdown())
    sessions = [SessionTotals.model_validate(clean_row(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = keyset.cursor_of(last[keyset.name], last["session_id"])
    return SessionPage(sessions=sessions, next_cursor=next_cursor)


def _capped(column: str) -> str:
    return f"left({column}, {CONTENT_CHARS})"


TRACES_SQL = (
    "SELECT trace_id, "
    'first(operation_name ORDER BY parent_span_id IS NOT NULL, "timestamp", event_id) '
    "AS root_operation, "
    'min("timestamp") AS start, '
    f'(max({_END_US}) - min(epoch_us("timestamp"))) / 1000.0 AS duration_ms, '
    "count(*) AS spans, count(*) FILTER (WHERE error) AS errors, "
    f"sum({_COST}) AS cost_usd, TRY_CAST(sum(total_tokens) AS BIGINT) AS total_tokens, "
    f'first({_capped("prompt_content")} ORDER BY "timestamp", event_id) '
    "FILTER (WHERE prompt_content IS NOT NULL) AS prompt, "
    f"first({_capped('completion_content')} ORDER BY {_END_US} DESC, event_id DESC) "
    "FILTER (WHERE completion_content IS NOT NULL) AS completion "
    "FROM {rel} WHERE session_id = ? GROUP BY trace_id ORDER BY start, trace_id"
)
"""A session's traces in order of start (its id the one parameter)."""


def _trace(row: dict[str, Any]) -> SessionTrace:
    row = clean_row(row)
    row["duration_ms"] = row["duration_ms"] or 0.0
    return SessionTrace.model_validate(row)


@router.get(
    "/api/sessions/{session_id:path}",  # a session id may hold a slash (sent as %2F)
    response_model=SessionDetail,
    responses={404: {"model": ErrorBody, "description": "No span of that session."}},
)
def get_session(
    request: Request,
    session_id: Annotated[
        str,
        Path(max_length=MAX_TEXT, pattern=NO_NUL, description="No NUL: no SQL store holds one."),
    ],
) -> SessionDetail:
    """A session's totals and its traces in order of start, as a conversation."""
    s = state(request)
    pushdown = Filters(session_id=session_id)
    totals = s.store.rows(
        f"SELECT session_id, {TOTALS_SQL} FROM {{rel}} WHERE session_id = ? GROUP BY session_id",
        [session_id],
        pushdown,
    )
    if not totals:
        raise NotFound(f"session_id: no session {session_id[:80]!r} in the store")
    traces = s.store.rows(TRACES_SQL, [session_id], pushdown)
    return SessionDetail(
        session=SessionTotals.model_validate(clean_row(totals[0])),
        traces=[_trace(r) for r in traces],
    )
