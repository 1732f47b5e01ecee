#!/usr/bin/env python
"""llamonitor.metrics benchmark: instrument cost beside prometheus_client,
aggregation throughput, and bytes per point on disk beside Gorilla's 1.37.

Usage::

    python benchmarks/bench_metrics.py            # full run, about a minute
    python benchmarks/bench_metrics.py --quick    # smoke run, a few seconds
    python benchmarks/bench_metrics.py --json out.json

Sections (``--only instruments,aggregation,compression``):

* **instruments** -- ns per call of ``Counter.inc()`` (unlabelled, and a child
  held by the caller), ``labels(...).inc()`` (the lookup each call),
  ``Gauge.set()``, ``Histogram.observe()`` and ``Summary.observe()``: llamonitor's and
  ``prometheus_client``'s (a private ``CollectorRegistry``) in the same run,
  interleaved trials, the median of per-trial times; the ratio is ours / theirs.
* **aggregation** -- points/s of the worker's window aggregation
  (``window_aggregates``: 1M raw points of 1,000 counter and gauge series into
  60 s windows, DuckDB over Arrow) and of ``StreamAggregator`` (1M values of
  100 names into windows, count/sum/min/max/avg and p50/p95/p99 from DDSketch).
* **compression** -- a regular 10 s series of 1M points written as the store
  writes it (a ``points_*.parquet`` file of the full METRIC_SCHEMA:
  DELTA_BINARY_PACKED timestamps, BYTE_STREAM_SPLIT or PLAIN floats (chosen per
  file), dictionary-encoded strings, zstd level 9), bytes per point of the whole
  file, for several value
  shapes: the Gorilla paper's (Pelkonen et al., VLDB 2015: 51% of values equal
  to the previous one, the rest small changes; 1.37 bytes/point with
  delta-of-delta timestamps and XOR floats), a slow random walk, an integer
  counter, noisy full-precision floats. The same file with the value column
  always BYTE_STREAM_SPLIT and always PLAIN is shown beside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

GORILLA_BYTES_PER_POINT = 1.37


def _timed(fn: Callable[[], None], n: int) -> float:
    """ns per call of a loop of n calls of fn (the loop's own cost included, as for both)."""
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def _loop_floor(n: int) -> float:
    def nothing() -> None:
        pass

    return _timed(nothing, n)


def bench_instruments(quick: bool) -> dict[str, Any]:
    import prometheus_client as prom

    from llamonitor import metrics
    from llamonitor.metrics._registry import Registry

    reg = Registry()
    preg = prom.CollectorRegistry()
    ours = {
        "counter": metrics.counter("b_total", registry=reg),
        "labelled": metrics.counter("bl_total", labels=["model"], registry=reg),
        "gauge": metrics.gauge("bg", registry=reg),
        "histogram": metrics.histogram("bh_seconds", registry=reg),
        "summary": metrics.summary("bs_seconds", registry=reg),
    }
    theirs = {
        "counter": prom.Counter("b", "b", registry=preg),
        "labelled": prom.Counter("bl", "bl", ["model"], registry=preg),
        "gauge": prom.Gauge("bg", "bg", registry=preg),
        "histogram": prom.Histogram("bh_seconds", "bh", registry=preg),
        "summary": prom.Summary("bs_seconds", "bs", registry=preg),
    }
    our_child = ours["labelled"].labels(model="gpt-4o")
    their_child = theirs["labelled"].labels(model="gpt-4o")
    cases: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "Counter.inc()": (ours["counter"].inc, theirs["counter"].inc),
        "child.inc() (labelled, child held)": (our_child.inc, their_child.inc),
        "labels(model=...).inc()": (
            lambda: ours["labelled"].labels(model="gpt-4o").inc(),
            lambda: theirs["labelled"].labels(model="gpt-4o").inc(),
        ),
        "Gauge.set(v)": (lambda: ours["gauge"].set(3.0), lambda: theirs["gauge"].set(3.0)),
        "Histogram.observe(v)": (
            lambda: ours["histogram"].observe(0.2),
            lambda: theirs["histogram"].observe(0.2),
        ),
        "Summary.observe(v)": (
            lambda: ours["summary"].observe(0.2),
            lambda: theirs["summary"].observe(0.2),
        ),
    }
    n = 20_000 if quick else 200_000
    trials = 3 if quick else 9
    out: dict[str, Any] = {}
    floor = statistics.median(_loop_floor(n) for _ in range(3))
    for label, (mine, peer) in cases.items():
        a: list[float] = []
        b: list[float] = []
        for t in range(trials):
            order = [(mine, a), (peer, b)] if t % 2 == 0 else [(peer, b), (mine, a)]
            for fn, acc in order:
                acc.append(_timed(fn, n))
            reg.collect()  # fold our buffers, as the worker would between intervals
        ours_ns, theirs_ns = statistics.median(a), statistics.median(b)
        out[label] = {
            "llamonitor_ns": round(ours_ns, 1),
            "prometheus_client_ns": round(theirs_ns, 1),
            "ratio": round(ours_ns / theirs_ns, 3),
            "ratio_above_loop": round((ours_ns - floor) / max(theirs_ns - floor, 1e-9), 3),
        }
    out["loop_floor_ns"] = round(floor, 1)
    # the worker's side of observe(): folding the buffered values
    h = ours["histogram"]
    for _ in range(100_000):
        h.observe(0.3)
    t0 = time.perf_counter()
    reg.collect()
    out["fold_100k_observations_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return out


def _raw_points(n_series: int, per_series: int) -> pa.Table:
    from llamonitor.metrics import METRIC_SCHEMA

    n = n_series * per_series
    base = 1_780_000_000_000_000
    ts = np.tile(np.arange(per_series, dtype=np.int64) * 10_000_000 + base, n_series)
    series = np.repeat(np.arange(n_series), per_series)
    kind = np.where(series % 2 == 0, "counter", "gauge")
    rng = np.random.default_rng(3)
    value = np.where(
        kind == "counter",
        np.tile(np.cumsum(np.ones(per_series)), n_series),
        rng.normal(10, 1, n),
    )
    return pa.table(
        {
            "timestamp": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
            "name": pa.array(np.where(kind == "counter", "req_total", "queue_depth")),
            "kind": pa.array(kind),
            "labels": pa.array([f'{{"i":"{i}"}}' for i in series]),
            "resolution_seconds": pa.array(np.zeros(n, np.int32)),
            "value": pa.array(value),
            "count": pa.nulls(n, pa.int64()),
            "sum": pa.nulls(n, pa.float64()),
            "min": pa.nulls(n, pa.float64()),
            "max": pa.nulls(n, pa.float64()),
            "sketch": pa.nulls(n, pa.binary()),
            "source": pa.array(["bench"] * n),
        },
        schema=METRIC_SCHEMA,
    )


def bench_aggregation(quick: bool) -> dict[str, Any]:
    from llamonitor.metrics import StreamAggregator, window_aggregates

    n_series, per = (100, 1000) if quick else (1000, 1000)
    points = _raw_points(n_series, per)
    window_aggregates(points.slice(0, 10_000), 60)  # warm up DuckDB
    runs = []
    for _ in range(1 if quick else 3):
        t0 = time.perf_counter()
        out = window_aggregates(points, 60)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    result: dict[str, Any] = {
        "window_aggregates": {
            "points": points.num_rows,
            "windows": out.num_rows,
            "seconds": round(best, 3),
            "points_per_second": round(points.num_rows / best),
        }
    }
    n = 100_000 if quick else 1_000_000
    rng = np.random.default_rng(5)
    names = pa.array([f"m{i % 100}" for i in range(n)])
    values = rng.lognormal(0, 1, n)
    stamps = 1_780_000_000 + np.arange(n) * 0.01
    runs = []
    for _ in range(1 if quick else 3):
        agg = StreamAggregator(window_size=60)
        t0 = time.perf_counter()
        agg.add(names, values, stamps)
        table = agg.aggregates()
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    result["stream_aggregator"] = {
        "values": n,
        "groups": table.num_rows,
        "seconds": round(best, 3),
        "values_per_second": round(n / best),
    }
    return result


def _series_values(shape: str, n: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(11)
    if shape == "gorilla":
        change = rng.random(n) >= 0.51  # 51% of values repeat the previous one
        steps = np.where(change, np.round(rng.normal(0, 1, n), 1) * 0.1, 0.0)
        return np.round(50 + np.cumsum(steps), 1)
    if shape == "walk":
        return np.round(50 + np.cumsum(rng.normal(0, 0.01, n)), 2)
    if shape == "counter":
        return np.cumsum(rng.integers(0, 5, n)).astype(np.float64)
    return rng.normal(100, 15, n)  # noisy


SHAPES = {
    "gorilla": "Gorilla's shape: 51% repeats, else steps of ~0.1",
    "walk": "slow random walk, 2 decimals, changes every point",
    "counter": "integer counter, +0..4 per point",
    "noisy": "noisy full-precision floats (not slow: BYTE_STREAM_SPLIT's case)",
}


def bench_compression(quick: bool) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from llamonitor.metrics import METRIC_SCHEMA
    from llamonitor.metrics._store import parquet_options, write_points_file

    n = 100_000 if quick else 1_000_000
    base = 1_780_000_000_000_000
    ts = pa.array(np.arange(n, dtype=np.int64) * 10_000_000 + base).cast(
        pa.timestamp("us", tz="UTC")
    )
    out: dict[str, Any] = {"points": n, "gorilla_bytes_per_point": GORILLA_BYTES_PER_POINT}
    with tempfile.TemporaryDirectory() as d:
        for shape, text in SHAPES.items():
            table = pa.table(
                {
                    "timestamp": ts,
                    "name": pa.array(["cpu_usage"] * n),
                    "kind": pa.array(["gauge"] * n),
                    "labels": pa.array(['{"host":"a"}'] * n),
                    "resolution_seconds": pa.array(np.zeros(n, np.int32)),
                    "value": pa.array(_series_values(shape, n)),
                    "count": pa.nulls(n, pa.int64()),
                    "sum": pa.nulls(n, pa.float64()),
                    "min": pa.nulls(n, pa.float64()),
                    "max": pa.nulls(n, pa.float64()),
                    "sketch": pa.nulls(n, pa.binary()),
                    "source": pa.array(["bench"] * n),
                },
                schema=METRIC_SCHEMA,
            )
            path = Path(d) / f"points_{shape}.parquet"
            write_points_file(table, path)
            size = path.stat().st_size
            meta = pq.ParquetFile(path).metadata
            col_bytes: dict[str, int] = {}
            for rg in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    chunk = meta.row_group(rg).column(c)
                    key = chunk.path_in_schema
                    col_bytes[key] = col_bytes.get(key, 0) + chunk.total_compressed_size
            alt = {}
            for enc in ("PLAIN", "BYTE_STREAM_SPLIT"):
                other = Path(d) / f"{enc}_{shape}.parquet"
                opts = parquet_options(table)
                opts["column_encoding"] = {**opts["column_encoding"], "value": enc}
                pq.write_table(table, other, **opts)
                alt[enc] = round(other.stat().st_size / n, 3)
            chosen = meta.row_group(0).column(METRIC_SCHEMA.get_field_index("value")).encodings
            back = pq.read_table(path)
            assert back.column("value").equals(table.column("value"))  # lossless
            out[shape] = {
                "shape": text,
                "bytes_per_point": round(size / n, 3),
                "timestamp_bytes_per_point": round(col_bytes["timestamp"] / n, 3),
                "value_bytes_per_point": round(col_bytes["value"] / n, 3),
                "value_encoding": [e for e in chosen if e in ("PLAIN", "BYTE_STREAM_SPLIT")],
                "always_byte_stream_split_bytes_per_point": alt["BYTE_STREAM_SPLIT"],
                "always_plain_bytes_per_point": alt["PLAIN"],
            }
    out["codec"] = (
        "Parquet: timestamps DELTA_BINARY_PACKED, floats BYTE_STREAM_SPLIT or PLAIN "
        "(whichever zstd compresses smaller on a sample), strings dictionary (RLE), "
        "zstd level 9; whole file incl. footer"
    )
    return out


SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "instruments": bench_instruments,
    "aggregation": bench_aggregation,
    "compression": bench_compression,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    results: dict[str, Any] = {}
    for name in chosen:
        try:
            results[name] = SECTIONS[name](args.quick)
        except Exception as exc:  # one failing section does not hide the others
            results[name] = {"error": repr(exc)}
        print(f"== {name}")
        print(json.dumps(results[name], indent=2))
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
