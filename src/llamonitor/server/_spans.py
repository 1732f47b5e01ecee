"""``GET /api/spans``: the spans passing the filters, one page at a time, in a
chosen order (keyset pagination: a page never skips or repeats a row, whatever
is written meanwhile after the cursor's position).

Only the :class:`SpanSummary` columns are read (never the captured content), so
a page of a large store costs a top-N over those columns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from llamonitor.server._deps import state
from llamonitor.server._query import SpanFilters, span_filters
from llamonitor.server._rows import Keyset, clean_row, limit_checked

router = APIRouter(tags=["spans"])

ERROR_MESSAGE_CHARS = 300
"""Characters of ``error_message`` a summary keeps."""

CURSOR_CHARS = 1024


def finite_sql(column: str) -> str:
    """``column`` (a DOUBLE), NULL where it is NaN or infinite."""
    return f"CASE WHEN isfinite({column}) THEN {column} END"


SUMMARY_SQL = (
    "event_id, session_id, trace_id, span_id, parent_span_id, operation_name, operation_type, "
    '"timestamp", ' + finite_sql("duration_ms") + " AS duration_ms, "
    "coalesce(error, false) AS error, error_type, "
    f"left(error_message, {ERROR_MESSAGE_CHARS}) AS error_message, provider, model, agent_name, "
    "project_name, input_tokens, output_tokens, total_tokens, "
    + finite_sql("cost_usd") + " AS cost_usd"
)
"""The select list of a :class:`SpanSummary` over ``{rel}``."""

SPAN_SORTS: dict[str, tuple[str, type]] = {
    "timestamp": ('"timestamp"', datetime),
    "duration_ms": (finite_sql("duration_ms"), float),
    "cost_usd": (finite_sql("cost_usd"), float),
    "total_tokens": ("total_tokens", int),
}

SpanSort = Literal[
    "timestamp", "-timestamp", "duration_ms", "-duration_ms",
    "cost_usd", "-cost_usd", "total_tokens", "-total_tokens",
]


class SpanSummary(BaseModel):
    """One span without its captured content (the live tail sends these too)."""

    event_id: str
    session_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    operation_name: str
    operation_type: str
    timestamp: datetime = Field(description="Start of the span, UTC.")
    duration_ms: float | None
    error: bool
    error_type: str | None
    error_message: str | None = Field(
        description=f"The first {ERROR_MESSAGE_CHARS} characters of the message."
    )
    provider: str | None
    model: str | None
    agent_name: str | None
    project_name: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None


class SpanPage(BaseModel):
    spans: list[SpanSummary]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last.")


def summary(row: dict[str, Any]) -> SpanSummary:
    """A :class:`SpanSummary` from a row of :data:`SUMMARY_SQL` (or a whole span row)."""
    row = clean_row(row)
    message = row.get("error_message")
    if isinstance(message, str):
        row["error_message"] = message[:ERROR_MESSAGE_CHARS]
    row["error"] = bool(row.get("error"))
    return SpanSummary.model_validate(row)


Limit = Annotated[int, Query(ge=1, description="Rows per page, at most server.max_page_size.")]
Cursor = Annotated[
    str | None, Query(max_length=CURSOR_CHARS, description="next_cursor of the previous page")
]


@router.get("/api/spans", response_model=SpanPage)
def list_spans(
    request: Request,
    filters: Annotated[SpanFilters, Depends(span_filters)],
    sort: Annotated[SpanSort, Query(description="A column; a leading - for descending")]
    = "-timestamp",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SpanPage:
    """The spans passing the filters, sorted (NULL values last), a page at a time."""
    s = state(request)
    limit = limit_checked(limit, s.config.max_page_size)
    keyset = Keyset(sort, SPAN_SORTS, "event_id")
    where, params = filters.where("AND")
    after, after_params = keyset.after(cursor or None)
    sql = (
        f"SELECT {SUMMARY_SQL} FROM {{rel}} WHERE TRUE {where} {after} "
        f"{keyset.order_by()} LIMIT ?"
    )
    rows = s.store.rows(sql, [*params, *after_params, limit + 1], filters.pushdown())
    spans = [summary(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = keyset.cursor_of(last[keyset.name], last["event_id"])
    return SpanPage(spans=spans, next_cursor=next_cursor)
