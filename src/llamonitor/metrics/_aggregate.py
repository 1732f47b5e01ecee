"""Aggregating points over time windows, vectorized (DuckDB over Arrow).

:func:`window_aggregates` is the one aggregation every consumer shares (the
rollups, the recording rules, the series query of the CLI and API): points
grouped by window and series, with the kind's aggregates:

============  ==========================================================
kind          per window and series
============  ==========================================================
counter       ``value`` the last cumulative total; ``sum`` the increase
              (the sum of the rises between consecutive points, a fall
              being a reset to zero: Prometheus's ``increase`` without
              extrapolation); ``count`` the points
gauge         ``value`` the last; ``count``, ``sum``, ``min``, ``max`` of
              the values (so avg = sum / count)
histogram,    ``count``, ``sum``, ``min``, ``max`` summed/min/max-ed;
summary       ``sketch`` the merged DDSketch
============  ==========================================================

Input may be raw points or rollups (their ``count``/``sum``/``min``/``max``
combine the same way; a counter rollup's ``sum`` is already an increase).

:class:`StreamAggregator` is seed 003's stream aggregator over raw values
(``add_metric(name, value, timestamp)``), vectorized: values arrive in
arrays, and windows are computed by Arrow's hash aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.metrics import _sketch
from llamonitor.metrics._schema import METRIC_SCHEMA, labels_text

_US = 1_000_000

_RAW = """
WITH pts AS (
    -- only a counter needs its previous point (the window is the costly part)
    SELECT "timestamp", name, kind, labels, source, value, "count", "sum", "min", "max", sketch,
        lag(value) OVER (PARTITION BY name, labels, source ORDER BY "timestamp") AS prev
    FROM pts_in WHERE kind = 'counter'
    UNION ALL
    SELECT "timestamp", name, kind, labels, source, value, "count", "sum", "min", "max", sketch,
        NULL AS prev
    FROM pts_in WHERE kind IS DISTINCT FROM 'counter'
)
SELECT
    make_timestamptz((epoch_us("timestamp") // $step) * $step) AS "timestamp",
    name, kind, labels, source,
    arg_max(value, "timestamp") AS value,
    CASE WHEN kind IN ('counter', 'gauge') THEN count(*) ELSE sum("count") END AS "count",
    CASE
        WHEN kind = 'counter' THEN
            sum(CASE WHEN prev IS NULL THEN 0.0
                     WHEN value >= prev THEN value - prev ELSE value END)
        WHEN kind = 'gauge' THEN sum(value)
        ELSE sum("sum") END AS "sum",
    CASE WHEN kind = 'gauge' THEN min(value) ELSE min("min") END AS "min",
    CASE WHEN kind = 'gauge' THEN max(value) ELSE max("max") END AS "max",
    list(sketch) FILTER (WHERE sketch IS NOT NULL) AS sketches
FROM pts
WHERE "timestamp" >= ?
GROUP BY 1, 2, 3, 4, 5
ORDER BY name, labels, source, "timestamp"
"""

_ROLLUP = """
SELECT
    make_timestamptz((epoch_us("timestamp") // $step) * $step) AS "timestamp",
    name, kind, labels, source,
    arg_max(value, "timestamp") AS value,
    sum("count") AS "count", sum("sum") AS "sum", min("min") AS "min", max("max") AS "max",
    list(sketch) FILTER (WHERE sketch IS NOT NULL) AS sketches
FROM pts_in
WHERE "timestamp" >= ?
GROUP BY 1, 2, 3, 4, 5
ORDER BY name, labels, source, "timestamp"
"""


def window_aggregates(
    points: pa.Table,
    step_seconds: int,
    start: Any = None,
    merge_sketches: bool = True,
    resolution: int | None = None,
) -> pa.Table:
    """``points`` aggregated per window of ``step_seconds`` and series.

    Args:
        points: points of one resolution (raw, or one rollup resolution:
            all raw or all rollups, not mixed);
            those before ``start`` only give counters their previous value.
        step_seconds: the window (windows start at multiples of it, UTC epoch).
        start: the first window's start (``None``: every point counts).
        merge_sketches: merge each window's sketches into ``sketch``.
        resolution: the ``resolution_seconds`` of the result (default the step).

    Returns:
        A table of :data:`METRIC_SCHEMA` (``resolution_seconds`` the step).
    """
    import duckdb

    if points.num_rows == 0:
        return METRIC_SCHEMA.empty_table()
    step = int(step_seconds) * _US
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("pts_in", points)
        lo = start if start is not None else pc.min(points.column("timestamp")).as_py()
        raw = pc.max(points.column("resolution_seconds")).as_py() == 0
        sql = (_RAW if raw else _ROLLUP).replace("$step", str(step))
        result = con.sql(sql, params=[lo])
        fetch = getattr(result, "to_arrow_table", None) or result.arrow
        out: pa.Table = fetch()
    finally:
        con.close()
    sketches = out.column("sketches").to_pylist()
    merged = [_sketch.merge(s) if merge_sketches and s else None for s in sketches]
    n = out.num_rows
    table = pa.table(
        {
            "timestamp": out.column("timestamp").cast(METRIC_SCHEMA.field("timestamp").type),
            "name": out.column("name"),
            "kind": out.column("kind"),
            "labels": out.column("labels"),
            "resolution_seconds": pa.array(
                np.full(n, step_seconds if resolution is None else resolution, np.int32)
            ),
            "value": out.column("value"),
            "count": out.column("count").cast(pa.int64()),
            "sum": out.column("sum").cast(pa.float64()),
            "min": out.column("min").cast(pa.float64()),
            "max": out.column("max").cast(pa.float64()),
            "sketch": pa.array(merged, pa.binary()),
            "source": out.column("source"),
        }
    )
    return table.cast(METRIC_SCHEMA)


def merge_series(windows: pa.Table, by: Sequence[str] | None) -> list[dict[str, Any]]:
    """Windows of several series (and sources) combined per window and the
    ``by`` labels (``None``: per series' full labels; ``[]``: all together).

    Returns one dict per (window, group): ``timestamp``, ``labels`` (dict),
    ``kind``, ``value`` (sum of the series' last values), ``count``,
    ``sum``, ``min``, ``max``, ``sketch`` (merged).
    """
    from llamonitor.metrics._schema import parse_labels

    groups: dict[tuple[Any, str], dict[str, Any]] = {}
    for row in windows.to_pylist():
        labels = parse_labels(row["labels"])
        if by is not None:
            labels = {k: labels[k] for k in by if k in labels}
        key = (row["timestamp"], labels_text(labels))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "timestamp": row["timestamp"],
                "labels": labels,
                "kind": row["kind"],
                "name": row["name"],
                "value": None,
                "count": None,
                "sum": None,
                "min": None,
                "max": None,
                "sketches": [],
            }
        for col, combine in (
            ("value", _add),
            ("count", _add),
            ("sum", _add),
            ("min", _min),
            ("max", _max),
        ):
            g[col] = combine(g[col], row[col])
        if row["sketch"]:
            g["sketches"].append(row["sketch"])
    out = []
    for g in groups.values():
        sketches = g.pop("sketches")
        g["sketch"] = _sketch.merge(sketches) if sketches else None
        out.append(g)
    out.sort(key=lambda g: (labels_text(g["labels"]), g["timestamp"]))
    return out


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def _min(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


class StreamAggregator:
    """Seed 003's stream aggregator: count, sum, min, max, avg and quantiles
    per metric name and window, over values as they arrive.

    Values go in by arrays (:meth:`add`, vectorized) or one at a time
    (:meth:`add_metric`, the seed's signature); :meth:`aggregates` computes
    every window at once (Arrow's hash aggregation, a DDSketch per group for
    quantiles) and :meth:`points` returns them as summary points.

    Args:
        window_size: seconds per window (seed 003: 60).
        quantiles: the quantiles :meth:`aggregates` reports.
    """

    def __init__(
        self, window_size: int = 60, quantiles: Sequence[float] = (0.5, 0.95, 0.99)
    ) -> None:
        if window_size <= 0:
            raise ValueError("window_size must be > 0 seconds")
        self.window_size = int(window_size)
        self.quantiles = tuple(quantiles)
        self._chunks: list[pa.Table] = []
        self._names: list[str] = []
        self._values: list[float] = []
        self._times: list[float] = []

    def add_metric(self, metric_name: str, value: float, timestamp: float) -> None:
        """Add one value (``timestamp`` in epoch seconds)."""
        self._names.append(metric_name)
        self._values.append(value)
        self._times.append(timestamp)

    def add(self, names: Any, values: Any, timestamps: Any) -> None:
        """Add arrays of names, values and epoch-second timestamps (same length)."""
        self._chunks.append(
            pa.table(
                {
                    "name": pa.array(names, pa.string())
                    if not isinstance(names, pa.Array)
                    else names,
                    "value": pa.array(np.asarray(values, np.float64)),
                    "t": pa.array(np.asarray(timestamps, np.float64)),
                }
            )
        )

    def _table(self) -> pa.Table:
        if self._names:
            self.add(self._names, self._values, self._times)
            self._names, self._values, self._times = [], [], []
        if not self._chunks:
            return pa.table(
                {
                    "name": pa.array([], pa.string()),
                    "value": pa.array([], pa.float64()),
                    "t": pa.array([], pa.float64()),
                }
            )
        if len(self._chunks) > 1:
            self._chunks = [pa.concat_tables(self._chunks)]
        return self._chunks[0]

    def aggregates(self) -> pa.Table:
        """One row per (name, window): ``window`` (epoch seconds of its start),
        ``count``, ``sum``, ``min``, ``max``, ``avg``, ``p50``... (NaN values skipped)."""
        table = self._table()
        values = table.column("value")
        keep = pc.invert(pc.is_nan(values))
        table = table.filter(keep)
        windows = pc.multiply(
            pc.floor(pc.divide(table.column("t"), float(self.window_size))),
            float(self.window_size),
        )
        table = table.append_column("window", windows)
        grouped = table.group_by(["name", "window"]).aggregate(
            [("value", "count"), ("value", "sum"), ("value", "min"), ("value", "max")]
        )
        grouped = grouped.sort_by([("name", "ascending"), ("window", "ascending")])
        counts = grouped.column("value_count").to_numpy()
        sums = grouped.column("value_sum").to_numpy()
        cols: dict[str, Any] = {
            "name": grouped.column("name"),
            "window": grouped.column("window"),
            "count": grouped.column("value_count"),
            "sum": grouped.column("value_sum"),
            "min": grouped.column("value_min"),
            "max": grouped.column("value_max"),
            "avg": pa.array(sums / np.maximum(counts, 1)),
        }
        if self.quantiles:
            qs = self._quantiles(table, grouped)
            for i, q in enumerate(self.quantiles):
                cols[f"p{q * 100:g}"] = pa.array(qs[:, i])
        return pa.table(cols)

    def _quantiles(self, table: pa.Table, grouped: pa.Table) -> np.ndarray[Any, Any]:
        # Every value's DDSketch bin value, sorted within its group: the
        # quantile q of a group is at rank floor(q * (n - 1)) (see _sketch.bin_values).
        names = pc.dictionary_encode(table.column("name")).combine_chunks()
        gnames = pc.index_in(grouped.column("name"), value_set=names.dictionary).to_numpy()
        codes = names.indices.to_numpy()
        windows = table.column("window").to_numpy()
        reps = _sketch.bin_values(table.column("value").to_numpy())
        order = np.lexsort((reps, windows, codes))
        codes, windows, reps = codes[order], windows[order], reps[order]
        gwin = grouped.column("window").to_numpy()
        # the groups in the same (name code, window) order as the sorted values
        gorder = np.lexsort((gwin, gnames))
        counts = grouped.column("value_count").to_numpy()[gorder]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out = np.full((grouped.num_rows, len(self.quantiles)), np.nan)
        for i, q in enumerate(self.quantiles):
            idx = starts + np.floor(q * (counts - 1)).astype(np.int64)
            col = np.full(grouped.num_rows, np.nan)
            col[gorder] = reps[idx]
            out[:, i] = col
        return out

    def points(self, source: str = "stream") -> pa.Table:
        """The windows as ``summary`` points (resolution: the window size)."""
        table = self._table()
        keep = pc.invert(pc.is_nan(table.column("value")))
        table = table.filter(keep)
        windows = pc.multiply(
            pc.floor(pc.divide(table.column("t"), float(self.window_size))), float(self.window_size)
        )
        table = table.append_column("window", windows)
        grouped = (
            table.group_by(["name", "window"])
            .aggregate([("value", "count"), ("value", "sum"), ("value", "min"), ("value", "max")])
            .sort_by([("name", "ascending"), ("window", "ascending")])
        )
        order = pc.sort_indices(table, sort_keys=[("name", "ascending"), ("window", "ascending")])
        values = table.take(order).column("value").to_numpy()
        counts = grouped.column("value_count").to_numpy()
        sketches: list[bytes] = []
        pos = 0
        for c in counts:
            s = _sketch.new_sketch()
            _sketch.add_values(s, values[pos : pos + c])
            pos += c
            sketches.append(_sketch.to_bytes(s))
        n = grouped.num_rows
        ts = pa.array((grouped.column("window").to_numpy() * _US).astype(np.int64))
        return pa.table(
            {
                "timestamp": ts.cast(METRIC_SCHEMA.field("timestamp").type),
                "name": grouped.column("name"),
                "kind": pa.array(["summary"] * n),
                "labels": pa.array(["{}"] * n),
                "resolution_seconds": pa.array(np.full(n, self.window_size, np.int32)),
                "value": pa.nulls(n, pa.float64()),
                "count": grouped.column("value_count"),
                "sum": grouped.column("value_sum"),
                "min": grouped.column("value_min"),
                "max": grouped.column("value_max"),
                "sketch": pa.array(sketches, pa.binary()),
                "source": pa.array([source] * n),
            },
            schema=METRIC_SCHEMA,
        )

    def clear(self) -> None:
        """Forget every value."""
        self._chunks = []
        self._names, self._values, self._times = [], [], []
