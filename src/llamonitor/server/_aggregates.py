"""``GET /api/aggregates`` (the dashboard: totals, a time series per group, the
groups, the costliest and slowest operations) and ``GET /api/report`` (the
report of ``llamonitor report --json``).

The aggregates are two SQL passes over the store: one ``GROUPING SETS``
query (the totals with the data's first and last start, the groups, the
operations), then the series by bucket and group, the groups past the top
:data:`SERIES_GROUPS` folded into ``"other"``. Percentiles are exact
(``quantile_cont``: linear interpolation, as ``numpy.percentile``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from llamonitor.server._deps import state
from llamonitor.server._errors import BadParameter
from llamonitor.server._query import MAX_TEXT, SpanFilters, parse_when
from llamonitor.server._query import span_filters as span_filters_dep

router = APIRouter(tags=["aggregates"])

UTC = timezone.utc
GROUP_BY: dict[str, str] = {
    "model": "model",
    "provider": "provider",
    "agent": "agent_name",
    "operation": "operation_name",
    "project": "project_name",
    "operation_type": "operation_type",
}
"""``group_by`` -> the column (the only identifiers that reach the SQL)."""

BUCKETS: dict[str, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_INTERVALS = {"minute": "1 minute", "hour": "1 hour", "day": "1 day", "week": "7 days"}
MAX_BUCKETS = 500
SERIES_GROUPS = 10
"""Groups drawn apart in the series (by cost, then spans); the rest are ``"other"``."""
MAX_GROUPS = 1000
TOP_OPERATIONS = 10
OTHER = "other"


class Figures(BaseModel):
    spans: int
    errors: int
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class Totals(Figures):
    error_rate: float


class Group(Totals):
    key: str | None


class Point(Figures):
    t: datetime
    group: str | None


class CostlyOperation(BaseModel):
    operation_name: str
    spans: int
    cost_usd: float | None


class SlowOperation(BaseModel):
    operation_name: str
    spans: int
    p95_ms: float | None
    max_ms: float | None


class Aggregates(BaseModel):
    bucket: str
    since: datetime | None
    until: datetime | None
    totals: Totals
    series: list[Point]
    groups: list[Group]
    top_cost: list[CostlyOperation]
    top_slow: list[SlowOperation]


_FIGURES = """count(*) AS spans, count(*) FILTER (WHERE error) AS errors,
  sum(cost_usd) AS cost_usd, sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens,
  quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q"""

_PASS_ONE = """SELECT GROUPING(g) AS by_g, GROUPING(operation_name) AS by_op, g, operation_name,
  {figures}, max(duration_ms) AS max_ms,
  min("timestamp") AS first, max("timestamp") AS last
FROM (SELECT {column} AS g, * FROM {{rel}} {where})
GROUP BY GROUPING SETS ((), (g), (operation_name))"""

_PASS_TWO = """WITH r AS (SELECT {column} AS g, "timestamp", error, cost_usd, input_tokens,
  output_tokens, duration_ms FROM {{rel}} {where})
SELECT time_bucket(INTERVAL '{interval}', "timestamp") AS t,
  coalesce(list_position(?, coalesce(g, ?)), 0) AS gi, {figures}
FROM r GROUP BY ALL ORDER BY t, gi"""
"""(``{rel}`` comes first: the store's own parameters are bound before the query's.)"""

NULL_KEY = "\x00null"
"""The null group's key in the series' list of top groups (no group is named so)."""


def _f(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    q = row["q"] or [None, None, None]
    return {
        "spans": row["spans"],
        "errors": row["errors"],
        "cost_usd": _f(row["cost_usd"]),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "p50_ms": _f(q[0]),
        "p95_ms": _f(q[1]),
        "p99_ms": _f(q[2]),
    }


def _with_rate(row: dict[str, Any]) -> dict[str, Any]:
    out = _figures(row)
    out["error_rate"] = out["errors"] / out["spans"] if out["spans"] else 0.0
    return out


def choose_bucket(
    bucket: str, first: datetime | None, last: datetime | None, exclusive: bool = False
) -> str:
    """``bucket``, checked against :data:`MAX_BUCKETS` over ``first``..``last``; for
    ``auto``, the report's choice (:func:`~llamonitor.analysis.auto_bucket`), or
    a week past 500 days. ``exclusive``: ``last`` is an ``until`` (not a span's start).

    Raises:
        BadParameter: a bucket that would make more than MAX_BUCKETS (names ``bucket``).
    """
    from llamonitor.analysis import auto_bucket

    span = (last - first) if first is not None and last is not None else timedelta(0)
    if bucket == "auto":
        chosen: str = auto_bucket(first, last)
        while span / BUCKETS[chosen] >= MAX_BUCKETS and chosen != "week":
            chosen = {"minute": "hour", "hour": "day", "day": "week"}[chosen]
        return chosen
    width = BUCKETS[bucket]
    count = -(-span // width) if exclusive else span // width + 1
    if count > MAX_BUCKETS:
        raise BadParameter(
            "bucket",
            f"{bucket} buckets over this range would be {count:,} (at most {MAX_BUCKETS}): "
            "use a coarser bucket, auto, or a shorter range (since/until)",
        )
    return bucket


@router.get("/api/aggregates", response_model=Aggregates)
def aggregates(
    request: Request,
    filters: Annotated[SpanFilters, Depends(span_filters_dep)],
    group_by: Annotated[Literal["model", "provider", "agent", "operation", "project",
                                "operation_type"], Query()] = "model",
    bucket: Annotated[Literal["auto", "minute", "hour", "day"], Query(
        description="auto fits the range (minute, hour, day or week)")] = "auto",
) -> Aggregates:
    """Totals, a series per time bucket and group, the groups, the top operations."""
    store = state(request).store
    column = GROUP_BY[group_by]
    where, params = filters.where()
    rows = store.rows(
        _PASS_ONE.format(figures=_FIGURES, column=column, where=where), params,
        filters.pushdown(),
    )
    total = next((r for r in rows if r["by_g"] and r["by_op"]), None)
    first = filters.since or (total["first"] if total and total["spans"] else None)
    last = filters.until or (total["last"] if total and total["spans"] else None)
    if filters.since is not None and filters.until is None and last is not None:
        last = max(last, filters.since)
    chosen = choose_bucket(bucket, first, last, exclusive=filters.until is not None)
    groups = sorted(
        (r for r in rows if not r["by_g"]),
        key=lambda r: (-(r["cost_usd"] or 0.0), -r["spans"], r["g"] is None, r["g"] or ""),
    )
    ops = [r for r in rows if not r["by_op"] and r["by_g"]]
    top_cost = sorted((r for r in ops if r["cost_usd"]),
                      key=lambda r: (-r["cost_usd"], -r["spans"], r["operation_name"]))
    top_slow = sorted((r for r in ops if r["q"] and _f(r["q"][1]) is not None),
                      key=lambda r: (-r["q"][1], -r["spans"], r["operation_name"]))
    series: list[Point] = []
    if groups:
        top = [g["g"] for g in groups[:SERIES_GROUPS]]
        keys = [NULL_KEY if k is None else k for k in top]
        for r in store.rows(
            _PASS_TWO.format(interval=_INTERVALS[chosen], figures=_FIGURES, column=column,
                             where=where),
            [*params, keys, NULL_KEY], filters.pushdown(),
        ):
            gi = r["gi"]
            series.append(Point(t=r["t"].astimezone(UTC), group=top[gi - 1] if gi else OTHER,
                                **_figures(r)))
    empty = {"spans": 0, "errors": 0, "q": None, "cost_usd": None, "input_tokens": None,
             "output_tokens": None}
    return Aggregates(
        bucket=chosen,
        since=first.astimezone(UTC) if first else None,
        until=last.astimezone(UTC) if last else None,
        totals=Totals(**_with_rate(total or empty)),
        series=series,
        groups=[Group(key=g["g"], **_with_rate(g)) for g in groups[:MAX_GROUPS]],
        top_cost=[CostlyOperation(operation_name=r["operation_name"], spans=r["spans"],
                                  cost_usd=_f(r["cost_usd"])) for r in top_cost[:TOP_OPERATIONS]],
        top_slow=[SlowOperation(operation_name=r["operation_name"], spans=r["spans"],
                                p95_ms=_f(r["q"][1]), max_ms=_f(r["max_ms"]))
                  for r in top_slow[:TOP_OPERATIONS]],
    )


# -- the report ------------------------------------------------------------------


def _report_parameter(message: str) -> str:
    for name in ("top", "bucket", "since", "until", "session", "project"):
        if name in message:
            return name
    return "since"


@router.get("/api/report", response_model=dict[str, Any], tags=["report"])
def report(
    request: Request,
    since: Annotated[str | None, Query(max_length=64, description="ISO time or a duration ago")]
    = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    session: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
    project: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
    top: Annotated[int, Query(ge=1, le=1000, description="Rows of each top list")] = 10,
) -> JSONResponse:
    """The report of ``llamonitor report --json`` for the scope."""
    from llamonitor.analysis import analyze, session_report

    start, end = parse_when("since", since), parse_when("until", until)
    if start is not None and end is not None and end < start:
        raise BadParameter("until", "is before since")
    scope: dict[str, Any] = {"since": start, "until": end, "project": project or None,
                             "top": top, "scores": _score_storage(request)}
    with state(request).store.query() as q:
        try:
            result = session_report(q, session, **scope) if session else analyze(q, **scope)
        except ValueError as exc:
            raise BadParameter(_report_parameter(str(exc)), str(exc)) from None
    from llamonitor.cli._render import dumps

    # Exactly the command's JSON (its encoder), NaN and the infinities as null.
    return JSONResponse(_no_nan(json.loads(dumps(result.to_dict()))))


def _score_storage(request: Request) -> Any:
    """The store's scores (``None``: a store without them, such as a JSONL file)."""
    from llamonitor.server._scores import score_storage
    from llamonitor.storage._scores import store_kind

    try:
        storage = score_storage(request)
        store_kind(storage)
    except Exception:
        return None
    return storage


def _no_nan(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj
