"""Spans rolled up into per-minute and per-hour series (``source="spans"``).

Per window (:data:`SPAN_RESOLUTIONS`) and per ``model`` and ``operation``
(``operation_name``; ``model`` left out of the labels when the span has
none), from the store's spans (its query side, DuckDB):

=============================  =========  ===========================================
name                           kind       value / sum
=============================  =========  ===========================================
``llm_spans_total``            counter    spans started in the window
``llm_span_errors_total``      counter    of which failed
``llm_cost_usd_total``         counter    cost in USD (only spans with a cost)
``llm_input_tokens_total``     counter    input tokens
``llm_output_tokens_total``    counter    output tokens
``llm_tokens_total``           counter    total tokens
``llm_span_duration_ms``       histogram  count, sum, min, max and DDSketch of
                                          ``duration_ms`` (latency quantiles)
=============================  =========  ===========================================

A span counter point holds the window's amount in both ``value`` and
``sum`` (``sum`` is a counter rollup's increase everywhere; there is no
cumulative total for spans). Windows are built once (the newest span point of
a resolution is the watermark, as for the point rollups).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from llamonitor.metrics import _sketch
from llamonitor.metrics._schema import METRIC_SCHEMA, PointColumns, labels_text
from llamonitor.metrics._store import aware, store_kind, write_points
from llamonitor.schema.config import StorageConfig

SPAN_RESOLUTIONS = (60, 3600)
SOURCE = "spans"
MAX_WINDOWS_PER_CHUNK = 1440

_COUNTERS = (
    ("llm_spans_total", "n"),
    ("llm_span_errors_total", "errors"),
    ("llm_cost_usd_total", "cost"),
    ("llm_input_tokens_total", "input_tokens"),
    ("llm_output_tokens_total", "output_tokens"),
    ("llm_tokens_total", "total_tokens"),
)
DURATION_METRIC = "llm_span_duration_ms"

_SQL = """
SELECT
    make_timestamptz((epoch_us("timestamp") // $step) * $step) AS w,
    model, operation_name,
    count(*) AS n,
    count(*) FILTER (WHERE error) AS errors,
    sum(cost_usd) AS cost,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(total_tokens) AS total_tokens,
    list(duration_ms) FILTER (WHERE duration_ms IS NOT NULL AND NOT isnan(duration_ms)) AS d
FROM {rel}
WHERE "timestamp" >= ? AND "timestamp" < ?
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


def span_query(storage: StorageConfig) -> Any:
    """The query side of the store's spans (a ``DuckDBQuery``)."""
    kind = store_kind(storage)
    if kind == "parquet":
        if storage.backend == "jsonl":
            from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation

            path = _jsonl_path(storage)
            return DuckDBQuery(lambda _f: jsonl_relation(path) if path.exists() else None)
        from llamonitor.storage._parquet_read import query

        return query(storage.output_dir)
    from importlib import import_module

    module = import_module(f"llamonitor.storage.{kind}")
    return module.query(storage)


def _jsonl_path(storage: StorageConfig) -> Any:
    from pathlib import Path

    from llamonitor.storage import jsonl

    name = str(storage.options.get("file_name", jsonl.DEFAULT_FILE_NAME))
    return Path(storage.output_dir) / name


def rollup_spans(
    storage: StorageConfig, since: datetime | None, limit: datetime, *, dry_run: bool = False
) -> dict[int, int]:
    """Write the span series of every whole window up to ``limit`` not yet
    written (``dry_run``: count them, write nothing)."""
    from llamonitor.metrics._rollup import newest

    q = span_query(storage)
    written: dict[int, int] = {}
    try:
        for res in SPAN_RESOLUTIONS:
            done = newest(storage, res, source=SOURCE)
            first = done + timedelta(seconds=res) if done is not None else _first_span(q)
            if first is None:
                written[res] = 0
                continue
            start = first
            if since is not None:
                start = max(start, aware(since))
            start = _floor(start, res)
            end = _floor(limit, res)
            n = 0
            while start < end:
                stop = min(end, start + timedelta(seconds=res * MAX_WINDOWS_PER_CHUNK))
                table = span_points(q, res, start, stop)
                if table.num_rows:
                    n += table.num_rows if dry_run else write_points(storage, table)
                start = stop
            written[res] = n
    finally:
        q.close()
    return written


def _first_span(q: Any) -> datetime | None:
    t = q.run('SELECT min("timestamp") AS t FROM {rel}')
    if t is None or t.num_rows == 0:
        return None
    value = t.column("t")[0].as_py()
    return None if value is None else aware(value)


def _floor(value: datetime, seconds: int) -> datetime:
    us = int(aware(value).timestamp() * 1_000_000)
    step = seconds * 1_000_000
    return datetime.fromtimestamp((us // step) * step / 1_000_000, timezone.utc)


def span_points(q: Any, resolution: int, start: datetime, end: datetime) -> pa.Table:
    """The span series of the windows in ``[start, end)`` as points."""
    from llamonitor.storage._duckdb import Filters

    step = int(resolution) * 1_000_000  # an int of ours: inlined, as {rel}'s parameters go first
    sql = _SQL.replace("$step", str(step))
    t = q.run(sql, [start, end], Filters(since=start, until=end))
    points = PointColumns(resolution, SOURCE)
    if t is None:
        return METRIC_SCHEMA.empty_table()
    for row in t.to_pylist():
        labels: dict[str, str] = {"operation": row["operation_name"]}
        if row["model"]:
            labels["model"] = row["model"]
        lt = labels_text(labels)
        for name, key in _COUNTERS:
            v = row[key]
            if v is None:
                continue
            points.add(
                aware(row["w"]),
                name,
                "counter",
                lt,
                value=float(v),
                count=row["n"],
                total=float(v),
            )
        d = row["d"] or []
        if d:
            arr = np.asarray(d, np.float64)
            s = _sketch.new_sketch()
            _sketch.add_values(s, arr)
            points.add(
                aware(row["w"]),
                DURATION_METRIC,
                "histogram",
                lt,
                count=int(arr.size),
                total=float(arr.sum()),
                lo=float(arr.min()),
                hi=float(arr.max()),
                sketch=_sketch.to_bytes(s),
            )
    return points.table()
