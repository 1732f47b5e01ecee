"""``GET /api/metrics`` (the store's metrics) and ``GET /api/metrics/{name}/series``
(one metric as series on a step): the metric points of ``llamonitor.metrics``,
beside the spans (``output_dir/metrics/`` or the database's ``metric_points``).

Every parameter is checked and a bad one answered 400 naming it; the metric
name and label names must be metric/label names, values reach DuckDB as
parameters only.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from llamonitor.server._deps import state
from llamonitor.server._errors import ERROR_RESPONSES, BadParameter
from llamonitor.server._query import MAX_TEXT, parse_when

router = APIRouter(tags=["metrics"])

DEFAULT_RANGE = timedelta(hours=1)
MAX_LABEL_FILTERS = 20
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metrics_storage(request: Request) -> Any:
    """The ``StorageConfig`` of the server's store, for its metric points."""
    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig

    info = state(request).store.info
    if info.dsn:
        return StorageConfig(backend=info.kind, connection_string=SecretStr(info.dsn))
    if info.directory is not None and info.directory.is_dir():
        return StorageConfig(backend="parquet", output_dir=info.directory)
    return None


@router.get("/api/metrics", responses=ERROR_RESPONSES)
def list_metrics(
    request: Request,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO time or 15m/2h/1d ago")
    ] = None,
) -> dict[str, Any]:
    """The metrics of the store: name, kind, series, points, first, last, resolutions, sources."""
    from llamonitor.metrics._series import list_metrics as listing

    start = parse_when("since", since)
    storage = metrics_storage(request)
    rows = [] if storage is None else listing(storage, start=start)
    for r in rows:
        for k in ("first", "last"):
            if isinstance(r.get(k), datetime):
                r[k] = r[k].isoformat()
    return {"metrics": rows}


NICE_STEPS = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def auto_step(range_seconds: float, points: int = 120) -> int:
    """The smallest of :data:`NICE_STEPS` giving at most ``points`` windows."""
    for step in NICE_STEPS:
        if range_seconds / step <= points:
            return step
    return int(range_seconds // points) + 1


def _step(value: str | None) -> int:
    from llamonitor.schema._metrics_config import parse_duration

    if value is None or value == "":
        return 0
    try:
        seconds = parse_duration(value, "step")
    except ValueError:
        raise BadParameter(
            "step", f"{value[:40]!r} is not a duration: use 10s, 1m, 5m, 1h or seconds"
        ) from None
    if seconds < 1:
        raise BadParameter("step", "must be at least 1 second")
    return round(seconds)


def _labels(values: list[str]) -> dict[str, str]:
    if len(values) > MAX_LABEL_FILTERS:
        raise BadParameter("label", f"at most {MAX_LABEL_FILTERS} label filters")
    out: dict[str, str] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not _LABEL.match(key):
            raise BadParameter("label", f"{item[:60]!r}: use name=value (a label name)")
        out[key] = val
    return out


@router.get("/api/metrics/{name}/series", responses=ERROR_RESPONSES)
def metric_series(
    request: Request,
    name: str,
    start: Annotated[str | None, Query(max_length=64, description="ISO time or 1h ago")] = None,
    end: Annotated[str | None, Query(max_length=64, description="ISO time (default now)")] = None,
    step: Annotated[str | None, Query(max_length=16, description="window: 10s, 1m, 1h")] = None,
    label: Annotated[list[str] | None, Query(max_length=MAX_TEXT)] = None,
    by: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="labels, comma-separated")
    ] = None,
    field: Annotated[str | None, Query(max_length=16)] = None,
    resolution: Annotated[int | None, Query()] = None,
) -> dict[str, Any]:
    """One metric on windows of ``step`` from ``start`` (default: its first
    point) to ``end`` (default: now): for each
    series (or ``by`` group) its points ``[time, value]``; ``field`` is what
    a value is (counters ``increase``/``rate``, gauges ``avg``/``min``/
    ``max``/``last``, histograms ``p50``...``p99``/``avg``/``count``...)."""
    from llamonitor.metrics._schema import RESOLUTIONS
    from llamonitor.metrics._series import FIELDS, series

    if not _NAME.match(name) or len(name) > MAX_TEXT:
        raise BadParameter("name", f"{name[:60]!r} is not a metric name")
    from llamonitor.metrics._series import first_point

    now = datetime.now(timezone.utc)
    t1 = parse_when("end", end) or now
    t0 = parse_when("start", start)
    storage = metrics_storage(request)
    if t0 is None:  # from the metric's first point ("all"), else the last hour
        first = first_point(storage, name) if storage is not None else None
        t0 = first if first is not None and first < t1 else t1 - DEFAULT_RANGE
    if t1 <= t0:
        raise BadParameter("end", "must be after start")
    seconds = _step(step) or auto_step((t1 - t0).total_seconds())
    groups = None
    if by is not None:
        groups = [b.strip() for b in by.split(",") if b.strip()]
        for g in groups:
            if not _LABEL.match(g):
                raise BadParameter("by", f"{g[:60]!r} is not a label name")
    if field is not None and not any(field in f for f in FIELDS.values()):
        raise BadParameter(
            "field", f"{field!r} is not one of {sorted({x for f in FIELDS.values() for x in f})}"
        )
    if resolution is not None and resolution not in RESOLUTIONS:
        raise BadParameter("resolution", f"one of {list(RESOLUTIONS)}")
    labels = _labels(label or []) or None
    if storage is None:
        return {"name": name, "kind": None, "series": [], "step": seconds}
    try:
        return series(storage, name, t0, t1, seconds, labels, groups, field, resolution)
    except ValueError as exc:  # series() names the parameter first: "step: ..."
        parameter, _, message = str(exc).partition(":")
        known = {"step": "step", "end": "end", "field": "field", "labels": "label"}
        raise BadParameter(known.get(parameter, "step"), message.strip() or str(exc)) from None
