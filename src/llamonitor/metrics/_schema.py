"""The metric point model: one Arrow schema every metric store derives from.

A *point* is one series (``name`` + ``labels``) at one time: a counter's
cumulative total or a gauge's value in ``value``; a histogram's or summary's
interval aggregates in ``count``/``sum``/``min``/``max`` and its mergeable
quantile sketch in ``sketch``. ``resolution_seconds`` is 0 for raw points and
60, 300 or 3600 for rollups (see :mod:`._rollup`). The Parquet store and the
SQL stores' ``metric_points`` table are both derived from :data:`METRIC_SCHEMA`.

Raw histogram/summary points hold what was observed *during* the interval
that ends at ``timestamp`` (a delta), so that windows merge by summing and
sketch merging; counters hold the cumulative total (as Prometheus does), so a
lost point loses no increase.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa

from llamonitor.schema._side_tables import check_values, conform_columns, described_schema

METRIC_SCHEMA_VERSION = 1
"""Bumped whenever a column is added, removed or changes type or meaning."""

SCHEMA_VERSION_KEY = b"metrics.schema_version"

KINDS = ("counter", "gauge", "histogram", "summary")
Kind = Literal["counter", "gauge", "histogram", "summary"]

RESOLUTIONS = (0, 60, 300, 3600)
"""Raw, then the rollups' resolutions in seconds."""

_TS = pa.timestamp("us", tz="UTC")

_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("timestamp", _TS, False, "When the point was taken (a rollup: its window's start), UTC."),
    ("name", pa.string(), False, "Metric name, e.g. evaluations_total."),
    ("kind", pa.string(), False, "counter, gauge, histogram or summary."),
    ("labels", pa.string(), False, 'JSON object, sorted keys, "{}" when none.'),
    ("resolution_seconds", pa.int32(), False, "0 = raw; 60, 300, 3600 = rollups."),
    ("value", pa.float64(), True, "Gauge value, counter cumulative total; a rollup: the last."),
    ("count", pa.int64(), True, "Histogram/summary/rollup: observations (or raw points)."),
    ("sum", pa.float64(), True, "Histogram/summary: sum; counter rollup: increase; gauge: sum."),
    ("min", pa.float64(), True, "Histogram/summary/rollup: smallest."),
    ("max", pa.float64(), True, "Histogram/summary/rollup: largest."),
    ("sketch", pa.binary(), True, "Serialized DDSketch (protobuf) of the observations."),
    ("source", pa.string(), True, "Origin: an instrument, a collector, spans, a rule."),
)

METRIC_SCHEMA = described_schema(
    _COLUMNS, {SCHEMA_VERSION_KEY: str(METRIC_SCHEMA_VERSION).encode()}
)
"""The Arrow schema of a table of metric points."""

METRIC_COLUMNS = tuple(METRIC_SCHEMA.names)

FLOAT_COLUMNS = tuple(f.name for f in METRIC_SCHEMA if pa.types.is_float64(f.type))


class PointColumns:
    """Points added one at a time (a list per :data:`METRIC_SCHEMA` column),
    then a table: the one row builder of the registry's flushes and the span
    rollups. Timestamps: all ints (microseconds since the epoch) or all
    aware datetimes."""

    def __init__(self, resolution: int, source: str) -> None:
        self.resolution = resolution
        self.source = source
        self.cols: dict[str, list[Any]] = {n: [] for n in METRIC_COLUMNS}

    def add(
        self,
        timestamp: Any,
        name: str,
        kind: str,
        labels: str,
        value: float | None = None,
        count: int | None = None,
        total: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        sketch: bytes | None = None,
    ) -> None:
        row = (timestamp, name, kind, labels, self.resolution, value, count, total, lo, hi,
               sketch, self.source)  # fmt: skip
        for column, v in zip(METRIC_COLUMNS, row, strict=True):  # the schema's order
            self.cols[column].append(v)

    def table(self) -> pa.Table:
        ts = self.cols["timestamp"]
        arrays = [
            pa.array(ts, pa.int64()).cast(f.type)
            if f.name == "timestamp" and ts and isinstance(ts[0], int)
            else pa.array(self.cols[f.name], type=f.type)
            for f in METRIC_SCHEMA
        ]
        return pa.Table.from_arrays(arrays, schema=METRIC_SCHEMA)


def labels_text(labels: Mapping[str, object] | None) -> str:
    """The ``labels`` column's text for a mapping: JSON, sorted keys, values as
    strings (``"{}"`` for none)."""
    if not labels:
        return "{}"
    return json.dumps(
        {str(k): str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":")
    )


def parse_labels(text: str | None) -> dict[str, str]:
    """The mapping of a ``labels`` column's text (``{}`` for empty or bad text)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def conform_points(table: pa.Table) -> pa.Table:
    """``table`` with exactly :data:`METRIC_SCHEMA`'s columns, in order and type.

    Missing nullable columns become nulls; extra columns are dropped.

    Raises:
        ValueError: a required column is missing or holds nulls, a ``kind``
            is not one of :data:`KINDS`, or a value cannot be cast.
    """
    out = conform_columns(table, METRIC_SCHEMA, "metric points")
    check_values(out, "kind", KINDS, "metric points")
    return out


def empty_points() -> pa.Table:
    """A table of no points."""
    return METRIC_SCHEMA.empty_table()
