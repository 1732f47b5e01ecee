"""Overhead of the built-in collectors at their default intervals.

For each collector: CPU time of one collection (thread CPU time, median of N,
the point table included), times its rate at the default interval, as a share
of one core. Seed 003's target: all together under 1% of a core.

    python benchmarks/bench_collectors.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

from llamonitor.metrics import (
    ApplicationCollector,
    ContainerCollector,
    SystemCollector,
    points_table,
)


def cpu_per_collection(collector: object, n: int) -> tuple[float, int]:
    samples = []
    points = 0
    for _ in range(n):
        t0 = time.thread_time()
        metrics = collector.collect()  # type: ignore[attr-defined]
        points_table(metrics, source=collector.name)  # type: ignore[attr-defined]
        samples.append(time.thread_time() - t0)
        points = len(metrics)
    return statistics.median(samples), points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n = 20 if args.quick else 200
    total = 0.0
    head = ("collector", "points", "cpu/collection", "interval", "% of a core")
    print(f"{head[0]:<12} {head[1]:>6} {head[2]:>15} {head[3]:>9} {head[4]:>12}")
    for c in (SystemCollector(), ContainerCollector(), ApplicationCollector()):
        c.collect()  # warm: imports, first readings
        cpu, points = cpu_per_collection(c, n)
        share = cpu / c.default_interval_seconds * 100
        total += share
        print(f"{c.name:<12} {points:>6} {cpu * 1e3:>12.3f} ms {c.default_interval_seconds:>7.0f} s"
              f" {share:>11.4f}%")
        c.close()
    print(f"{'all':<12} {'':>6} {'':>15} {'':>9} {total:>11.4f}%  (target < 1%)")
    # The span-rate tap runs on the primary sink's thread once per written table.
    import pyarrow as pa

    from llamonitor.metrics import SpanRates
    from llamonitor.schema import SCHEMA

    rows = 1000
    cols = {"error": pa.array([i % 10 == 0 for i in range(rows)]),
            "input_tokens": pa.array(range(rows), pa.int64()),
            "output_tokens": pa.array(range(rows), pa.int64()),
            "cost_usd": pa.array([0.001] * rows)}
    table = pa.Table.from_arrays(
        [cols.get(f.name, pa.nulls(rows, f.type)) for f in SCHEMA], schema=SCHEMA)
    tap = SpanRates()
    t0 = time.perf_counter()
    for _ in range(n):
        tap(table)
    per = (time.perf_counter() - t0) / n
    print(f"span-rate tap: {per * 1e6:.1f} us per {rows}-span table "
          f"({per / rows * 1e9:.0f} ns per span)")


if __name__ == "__main__":
    main()
