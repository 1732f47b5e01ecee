"""Reading metrics back: the metrics of a store, and one metric as series on a step.

What the CLI (``llamonitor metrics list|query``), the API
(``/api/metrics``, ``/api/metrics/{name}/series``) and the UI show.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from llamonitor.metrics import _sketch
from llamonitor.metrics._aggregate import merge_series, window_aggregates
from llamonitor.metrics._schema import RESOLUTIONS
from llamonitor.metrics._store import aware, point_filters, query_points, read_points
from llamonitor.schema.config import StorageConfig

MAX_POINTS_PER_SERIES = 10_000
"""A query's ``(end - start) / step`` is at most this."""

FIELDS = {
    "counter": ("increase", "rate", "last"),
    "gauge": ("avg", "min", "max", "last"),
    "histogram": ("p50", "p90", "p95", "p99", "avg", "count", "sum", "min", "max", "rate"),
    "summary": ("p50", "p90", "p95", "p99", "avg", "count", "sum", "min", "max", "rate"),
}
"""The fields each kind's series has; the first is the default."""

_Q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def list_metrics(
    storage: StorageConfig, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """Every metric of the store: ``name``, ``kind``, ``series`` (distinct
    labels), ``points``, ``first``, ``last``, ``resolutions``, ``sources``."""
    where, params = point_filters(start=start, end=end)
    t = query_points(
        storage,
        "SELECT name, any_value(kind) AS kind, count(DISTINCT labels) AS series, "
        'count(*) AS points, min("timestamp") AS first, max("timestamp") AS last, '
        "list(DISTINCT resolution_seconds ORDER BY resolution_seconds) AS resolutions, "
        "list(DISTINCT split_part(source, ':', 1) ORDER BY split_part(source, ':', 1)) "
        f"AS sources FROM {{rel}} {where} GROUP BY name ORDER BY name",
        params,
        start=start,
        end=end,
    )
    if t.num_rows == 0 or "name" not in t.column_names:
        return []
    rows: list[dict[str, Any]] = t.to_pylist()
    for r in rows:
        for k in ("first", "last"):
            if r[k] is not None:
                r[k] = aware(r[k])
    return rows


def first_point(storage: StorageConfig, name: str) -> datetime | None:
    """The time of the metric's oldest point (any resolution), or ``None``."""
    t = query_points(
        storage,
        'SELECT min("timestamp") AS first FROM {rel} WHERE name = ?',
        [name],
        sql_filters=(name, None, None, None),
    )
    if t.num_rows == 0 or "first" not in t.column_names:
        return None
    value = t.column("first")[0].as_py()
    return None if value is None else aware(value)


def _pick_resolution(storage: StorageConfig, name: str, start: datetime, step: int) -> int:
    """Raw points if they reach back to ``start``; else the coarsest rollup that
    fits the step and has points (retention drops raw points first)."""
    t = query_points(
        storage,
        'SELECT resolution_seconds AS r, min("timestamp") AS first FROM {rel} '
        "WHERE name = ? GROUP BY 1 ORDER BY 1",
        [name],
        sql_filters=(name, None, None, None),
    )
    if t.num_rows == 0 or "r" not in t.column_names:
        return 0
    firsts = {int(r["r"]): aware(r["first"]) for r in t.to_pylist()}
    if 0 in firsts and firsts[0] <= start + timedelta(seconds=step):
        return 0
    fitting = [r for r in RESOLUTIONS[1:] if r in firsts and r <= step and step % r == 0]
    if fitting:
        return max(fitting)
    return 0 if 0 in firsts else min(firsts)


def field_value(kind: str, field: str, g: dict[str, Any], step: int) -> float | None:
    """One field of one window of a combined series (see :data:`FIELDS`)."""
    count, total = g.get("count"), g.get("sum")
    if kind == "counter":
        if field == "increase":
            return total
        if field == "rate":
            return None if total is None else total / step
        return g.get("value")
    if kind == "gauge":
        if field == "avg":
            return None if not count or total is None else total / count
        if field == "last":
            return g.get("value")
        return g.get(field)
    if field in _Q:
        return _sketch.quantiles(g.get("sketch"), [_Q[field]])[0]
    if field == "avg":
        return None if not count or total is None else total / count
    if field == "rate":
        return None if count is None else count / step
    value = g.get(field)
    return None if value is None else float(value)


def series(
    storage: StorageConfig,
    name: str,
    start: datetime,
    end: datetime,
    step: int,
    labels: dict[str, str] | None = None,
    by: list[str] | None = None,
    field: str | None = None,
    resolution: int | None = None,
) -> dict[str, Any]:
    """The metric ``name`` on windows of ``step`` seconds in ``[start, end)``.

    Args:
        labels: only series with these label values.
        by: combine series by these labels (``None``: each series apart;
            ``[]``: all into one).
        field: what each point is (:data:`FIELDS`; default the kind's first).
        resolution: read these points (0 raw, or a rollup; default: see
            :func:`_pick_resolution`).

    Returns:
        ``{"name", "kind", "field", "fields", "step", "resolution", "start",
        "end", "series": [{"labels": {...}, "points": [[iso time, value], ...]}]}``
        (``kind`` ``None`` and no series when the metric has no points there).

    Raises:
        ValueError: ``step`` < 1, ``end`` not after ``start``, too many
            windows, an unknown field, or a bad label name.
    """
    start, end = aware(start), aware(end)
    if step < 1:
        raise ValueError("step: must be at least 1 second")
    if end <= start:
        raise ValueError("end: must be after start")
    if (end - start).total_seconds() / step > MAX_POINTS_PER_SERIES:
        raise ValueError(
            f"step: {(end - start).total_seconds() / step:.0f} windows; at most "
            f"{MAX_POINTS_PER_SERIES} (use a larger step)"
        )
    step_us = step * 1_000_000  # windows start at multiples of the step
    start = datetime.fromtimestamp(
        (int(start.timestamp() * 1_000_000) // step_us) * step_us / 1_000_000, start.tzinfo
    )
    res = _pick_resolution(storage, name, start, step) if resolution is None else resolution
    lookback = timedelta(hours=1) if res == 0 else timedelta(0)
    points = read_points(
        storage, name=name, labels=labels, start=start - lookback, end=end, resolution=res
    )
    out: dict[str, Any] = {
        "name": name,
        "kind": None,
        "field": field,
        "fields": [],
        "step": step,
        "resolution": res,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "series": [],
    }
    if points.num_rows == 0:
        return out
    windows = window_aggregates(points, step, start=start)
    if windows.num_rows == 0:
        return out
    kind = str(windows.column("kind")[0].as_py())
    fields = FIELDS[kind]
    chosen = field or fields[0]
    if chosen not in fields:
        raise ValueError(f"field: {chosen!r} is not one of {list(fields)} for a {kind}")
    out.update(kind=kind, field=chosen, fields=list(fields))
    grouped: dict[str, dict[str, Any]] = {}
    from llamonitor.metrics._schema import labels_text

    for g in merge_series(windows, by if by is not None else None):
        key = labels_text(g["labels"])
        s = grouped.setdefault(key, {"labels": g["labels"], "points": []})
        s["points"].append([aware(g["timestamp"]).isoformat(), field_value(kind, chosen, g, step)])
    out["series"] = list(grouped.values())
    return out
