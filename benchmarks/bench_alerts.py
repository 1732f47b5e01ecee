#!/usr/bin/env python
"""Alert rule evaluation benchmark.

Usage::

    python benchmarks/bench_alerts.py            # 1,000,000 and 100,000 spans
    python benchmarks/bench_alerts.py --quick    # 100,000 and 10,000

A Parquet store in the writer's layout (``YYYY-MM-DD/events_*.parquet``, 10,000
spans a file, over the last 7 days, made with pyarrow) and three rules: p95
latency of ``llm.answer`` by model over 5 min, spend over a day, error rate
over 10 min, p95 latency by model over 8 days (every span of the
store). Reported, best of N:

* **full** -- the first evaluation of the four rules (each reads its whole
  window: the spend rule reads the last day's spans);
* **incremental** -- 1,000 new spans written, then one evaluation (what the
  watcher does every interval), on the large store and on a store 10x smaller:
  the ratio shows the cost follows the new data, not the store.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import llamonitor
from llamonitor.quality import parse_rules
from llamonitor.quality._alert_watch import Watcher

FILE_ROWS = 10_000
RULES = parse_rules({"rules": [
    {"name": "slow", "metric": "latency_p95", "operation": "llm.answer", "threshold": "3s",
     "window": "5m", "group_by": ["model"]},
    {"name": "spend", "metric": "cost", "threshold": "$50", "window": "1d"},
    {"name": "errors", "metric": "error_rate", "threshold": "5%", "window": "10m"},
    {"name": "weekly p95", "metric": "latency_p95", "threshold": "5s", "window": "8d",
     "group_by": ["model"]},
], "notifiers": [{"name": "log", "type": "log"}]})


def _table(n: int, start: datetime, seconds: float, rng: np.random.Generator) -> pa.Table:
    offsets = np.sort(rng.uniform(0, seconds, n))
    ts = pa.array([start + timedelta(seconds=float(s)) for s in offsets],
                  pa.timestamp("us", tz="UTC"))
    cols: dict[str, pa.Array] = {
        "event_id": pa.array([secrets.token_hex(8) for _ in range(n)]),
        "session_id": pa.array(["s"] * n), "trace_id": pa.array(["t"] * n),
        "span_id": pa.array([secrets.token_hex(8) for _ in range(n)]),
        "operation_name": pa.array(rng.choice(["llm.answer", "tool.search"], n)),
        "operation_type": pa.array(["llm_call"] * n),
        "timestamp": ts,
        "duration_ms": pa.array(rng.lognormal(6, 1, n)),
        "error": pa.array([True if e else None for e in rng.random(n) < 0.02], pa.bool_()),
        "model": pa.array(rng.choice(["gpt-4o", "gpt-4o-mini", "claude"], n)),
        "cost_usd": pa.array(rng.uniform(0, 0.01, n)),
        "process_id": pa.array([1] * n),
    }
    schema = llamonitor.SCHEMA
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _write(store: Path, table: pa.Table) -> None:
    first = table.column("timestamp")[0].as_py()
    day = store / first.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, day / f"events_{first:%Y%m%dT%H%M%S%f}_{secrets.token_hex(4)}.parquet")


def build(store: Path, n: int, now: datetime, rng: np.random.Generator) -> None:
    start = now - timedelta(days=7)
    per = 7 * 86400 / (n / FILE_ROWS)
    for k in range(n // FILE_ROWS):
        _write(store, _table(FILE_ROWS, start + timedelta(seconds=k * per), per, rng))


def run(n: int, repeat: int, rng: np.random.Generator) -> tuple[float, float]:
    store = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    try:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        build(store, n, now, rng)
        full, inc = [], []
        for r in range(repeat):
            (store / ".alerts-state.json").unlink(missing_ok=True)
            w = Watcher(RULES, store)
            at = now + timedelta(seconds=60 * r)
            t0 = time.perf_counter()
            w.evaluate(at)
            full.append(time.perf_counter() - t0)
            _write(store, _table(1000, at, 14, rng))
            t0 = time.perf_counter()
            w.evaluate(at + timedelta(seconds=15))
            inc.append(time.perf_counter() - t0)
            w.close()
        return min(full), min(inc)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    big = 100_000 if a.quick else 1_000_000
    rng = np.random.default_rng(1)
    f_big, i_big = run(big, a.repeat, rng)
    f_small, i_small = run(big // 10, a.repeat, rng)
    print(f"full evaluation, 4 rules, {big:,} spans:     {f_big * 1000:8.1f} ms")
    print(f"full evaluation, 4 rules, {big // 10:,} spans:     {f_small * 1000:8.1f} ms")
    print(f"incremental (+1,000 spans) on {big:,}:     {i_big * 1000:8.1f} ms")
    print(f"incremental (+1,000 spans) on {big // 10:,}:     {i_small * 1000:8.1f} ms")
    print(f"incremental ratio large/small store: {i_big / i_small:.2f} (store 10x larger)")


if __name__ == "__main__":
    main()
