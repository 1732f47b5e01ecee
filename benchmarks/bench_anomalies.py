#!/usr/bin/env python
"""llamonitor benchmark: anomaly detection, how well and how fast.

Usage::

    python benchmarks/bench_anomalies.py                 # both parts
    python benchmarks/bench_anomalies.py --only quality  # the labelled benchmark
    python benchmarks/bench_anomalies.py --only speed --spans 1000000
    python benchmarks/bench_anomalies.py --json out.json

**Quality.** A labelled synthetic set, seeded: hourly series of four weeks
(the first week is history only, nothing is injected there and nothing is
judged), of two families -- *stationary* (a level of 20..2000 with Gaussian
noise of 3..10% of it) and *daily-seasonal* (the same plus an hour-of-day
profile: a day peak and a night trough of 20..60% of the level) -- either
clean, or with one injected event:

* a *spike* (or a dip): 1..2 buckets, 6..12 noise sigmas out;
* a *level shift*: from a bucket on, 4..8 sigmas up or down, to the end;
* a *slow drift*: a linear ramp over 24..72 buckets to 6..10 sigmas, then
  that level to the end.

An event is found (recall) when an anomaly is reported between its first
bucket and its end (a spike: its last bucket + 1; a shift or a drift: its
first bucket + 24, or the end of the ramp + 24). A reported anomaly is true
(precision) when it lies in an event's window (a shift or a drift: from its
first bucket to the end of the series, since the series stays changed). False
alarms are counted per 10,000 judged buckets of the clean series. The same
figures are given for a plain fixed-threshold rule on the same data: a
bucket outside mean +/- 3 standard deviations of the series' first week.

**Speed.** A Parquet store of ``--spans`` spans over 14 days (five models,
written with pyarrow directly in the store's layout: ``YYYY-MM-DD/events_*.parquet``),
then ``detect_anomalies`` over the last 7 days (with the week before as its
history: every signal of every model), best of ``--repeat``; the SQL alone
(the one ``GROUP BY`` statement) as its floor; and an incremental poll of
the :class:`AnomalyWatcher` after one more hour of spans, next to its first
(warm-up) poll.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from llamonitor.analysis._anomaly_detect import SeriesDetector

HOURS = 24 * 28
HISTORY = 24 * 7
SEED = 20261202
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


# -- quality -------------------------------------------------------------------------


@dataclass
class Series:
    family: str
    kind: str  # clean | spike | dip | level_shift | drift
    values: np.ndarray
    start: int = -1  # the first bucket of the event
    end: int = -1  # the last bucket of the event (a ramp's end)
    recall_until: int = -1  # found when reported in [start, recall_until]
    true_until: int = -1  # a report in [start, true_until] is true


def _series(rng: np.random.Generator, family: str, kind: str) -> Series:
    level = float(np.exp(rng.uniform(math.log(20), math.log(2000))))
    sigma = level * rng.uniform(0.03, 0.10)
    t = np.arange(HOURS)
    x = np.full(HOURS, level)
    if family == "seasonal":
        amp = level * rng.uniform(0.2, 0.6)
        hour = (t % 24).astype(float)
        # a working-day shape: high 9..18, low at night (smooth)
        x = x + amp * np.sin((hour - 8) / 24 * 2 * np.pi) + 0.3 * amp * np.sin(
            (hour - 8) / 12 * 2 * np.pi
        )
    x = x + rng.normal(0, sigma, HOURS)
    s = Series(family, kind, x)
    if kind == "clean":
        return s
    start = int(rng.integers(HISTORY + 24, HOURS - 96))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind in ("spike", "dip"):
        width = int(rng.integers(1, 3))
        sign = 1.0 if kind == "spike" else -1.0
        x[start : start + width] += sign * rng.uniform(6, 12) * sigma
        s.start, s.end = start, start + width - 1
        s.recall_until = s.true_until = s.end + 1
    elif kind == "level_shift":
        x[start:] += sign * rng.uniform(4, 8) * sigma
        s.start = s.end = start
        s.recall_until, s.true_until = start + 24, HOURS
    else:  # drift
        ramp = int(rng.integers(24, 73))
        total = sign * rng.uniform(6, 10) * sigma
        x[start:] += total * np.minimum(np.arange(HOURS - start) + 1, ramp) / ramp
        s.start, s.end = start, start + ramp - 1
        s.recall_until, s.true_until = s.end + 24, HOURS
    # (not clipped at zero: a clipped dip would be smaller than its label says)
    return s


def dataset(per_kind: int, clean: int, seed: int = SEED) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    for family in ("stationary", "seasonal"):
        for _ in range(clean):
            out.append(_series(rng, family, "clean"))
        for kind in ("spike", "dip", "level_shift", "drift"):
            for _ in range(per_kind):
                out.append(_series(rng, family, kind))
    return out


def llamonitor_rule(values: np.ndarray) -> list[tuple[int, str]]:
    d = SeriesDetector(3600)
    out = []
    for i, v in enumerate(values):
        for f in d.update(v, T0 + timedelta(hours=i)):
            out.append((i, f.kind))
    return [(i, k) for i, k in out if i >= HISTORY]


def fixed_rule(values: np.ndarray) -> list[tuple[int, str]]:
    first = values[:HISTORY]
    mu, sd = float(first.mean()), float(first.std())
    out = np.nonzero(np.abs(values - mu) > 3 * sd)[0]
    return [(int(i), "threshold") for i in out if i >= HISTORY]


@dataclass
class Score:
    events: int = 0
    found: int = 0
    right_kind: int = 0
    reports: int = 0
    true_reports: int = 0
    clean_buckets: int = 0
    clean_alarms: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [events, found]

    def figures(self) -> dict[str, Any]:
        return {
            "precision": self.true_reports / self.reports if self.reports else 1.0,
            "recall": self.found / self.events if self.events else 1.0,
            "false_alarms_per_10k_clean": 1e4 * self.clean_alarms / max(1, self.clean_buckets),
            "kind_accuracy": self.right_kind / self.found if self.found else 0.0,
            "events": self.events,
            "reports": self.reports,
            "recall_by_kind": {k: f / e for k, (e, f) in sorted(self.by_kind.items())},
        }


_SAME = {"spike": {"spike"}, "dip": {"dip"}, "level_shift": {"level_shift"}, "drift": {"drift"}}


def score(data: list[Series], rule: Any) -> Score:
    sc = Score()
    for s in data:
        reports = rule(s.values)
        sc.reports += len(reports)
        if s.kind == "clean":
            sc.clean_buckets += HOURS - HISTORY
            sc.clean_alarms += len(reports)
            continue
        sc.events += 1
        found = [k for i, k in reports if s.start <= i <= s.recall_until]
        tally = sc.by_kind.setdefault(f"{s.family}/{s.kind}", [0, 0])
        tally[0] += 1
        if found:
            sc.found += 1
            tally[1] += 1
            sc.right_kind += any(k in _SAME[s.kind] for k in found)
        sc.true_reports += sum(1 for i, _ in reports if s.start <= i <= s.true_until)
    return sc


def quality(per_kind: int, clean: int) -> dict[str, Any]:
    data = dataset(per_kind, clean)
    started = time.perf_counter()
    ours = score(data, llamonitor_rule).figures()
    seconds = time.perf_counter() - started
    fixed = score(data, fixed_rule).figures()
    ours["seconds"] = seconds
    ours["buckets"] = len(data) * HOURS
    return {"llamonitor": ours, "fixed_threshold": fixed}


def _print_quality(q: dict[str, Any]) -> None:
    ours, fixed = q["llamonitor"], q["fixed_threshold"]
    print(f"\nquality: {ours['events']} injected events, {ours['buckets']:,} buckets "
          f"({ours['seconds']:.1f} s, {1e6 * ours['seconds'] / ours['buckets']:.0f} us/bucket)")
    print(f"{'':32} {'llamonitor':>12} {'fixed 3-sd':>12}  target")
    rows = (("precision", "precision", ">= 0.9"), ("recall", "recall", ">= 0.9"),
            ("false alarms / 10k clean", "false_alarms_per_10k_clean", "<= 1"),
            ("right kind (of found)", "kind_accuracy", ""))
    for label, key, target in rows:
        print(f"{label:32} {ours[key]:12.3f} {fixed[key]:12.3f}  {target}")
    for k, v in ours["recall_by_kind"].items():
        print(f"  recall {k:24} {v:12.3f} {fixed['recall_by_kind'][k]:12.3f}")


# -- speed ----------------------------------------------------------------------------

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "local")


def write_store(root: Path, spans: int, days: int = 14, seed: int = SEED) -> datetime:
    """``spans`` spans over ``days`` days, one file per day; the end time."""
    import pyarrow as pa

    from llamonitor.schema._columns import SCHEMA
    from llamonitor.storage._layout import write_table_atomic

    rng = np.random.default_rng(seed)
    per_day = spans // days
    t0_us = int(T0.timestamp() * 1_000_000)
    for day in range(days):
        n = per_day if day < days - 1 else spans - per_day * (days - 1)
        ts = t0_us + day * 86_400_000_000 + np.sort(rng.integers(0, 86_400_000_000, n))
        model = rng.integers(0, len(MODELS), n)
        cost = rng.gamma(2.0, 0.002, n)
        tokens = rng.integers(50, 4000, n)
        cols: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
        ids = pa.array([f"{day:02d}{i:09d}" for i in range(n)])
        cols.update(
            event_id=ids, session_id=ids, trace_id=ids, span_id=ids,
            operation_name=pa.array(np.array(["llm.answer", "llm.route"])[model % 2]),
            operation_type=pa.array(["llm_call"] * n),
            timestamp=pa.array(ts, pa.timestamp("us", tz="UTC")),
            duration_ms=pa.array(rng.lognormal(6.5, 0.4, n)),
            error=pa.array(np.where(rng.random(n) < 0.02, True, None), pa.bool_()),
            process_id=pa.array(np.ones(n, dtype=np.int64)),
            model=pa.array(np.array(MODELS)[model]),
            total_tokens=pa.array(tokens),
        )
        # the local model has no price: its cost is unknown (null)
        cols["cost_usd"] = pa.array(cost, mask=model == 4)
        table = pa.table(cols, schema=SCHEMA)
        stamp = (T0 + timedelta(days=day)).strftime("%Y%m%dT%H%M%S")
        directory = root / (T0 + timedelta(days=day)).strftime("%Y-%m-%d")
        directory.mkdir(parents=True, exist_ok=True)
        write_table_atomic(table, directory / f"events_{stamp}000000_1_bench.parquet")
    return T0 + timedelta(days=days)


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def speed(spans: int, repeat: int) -> dict[str, Any]:
    from llamonitor.analysis import _anomaly_signals as signals
    from llamonitor.analysis.anomalies import AnomalyWatcher, detect_anomalies
    from llamonitor.storage import _parquet_read

    with tempfile.TemporaryDirectory(prefix="llamonitor-anomalies-") as tmp:
        root = Path(tmp)
        end = write_store(root, spans)
        since = end - timedelta(days=7)
        with _parquet_read.query(root) as q:
            detect_anomalies(q, since=since, now=end)  # warm: imports, the file list
            full, found = _best(lambda: detect_anomalies(q, since=since, now=end), repeat)
            first = signals.bucket_of(since - timedelta(days=7), 3600)
            last = signals.bucket_of(end, 3600)
            sql, rows = _best(
                lambda: signals.bucket_rows(q, first_bucket=first, end_bucket=last,
                                            bucket_seconds=3600, group_by=("model",)),
                repeat,
            )
            polls = []
            for _ in range(repeat):
                w = AnomalyWatcher(q)
                started = time.perf_counter()
                w.poll(end - timedelta(hours=1))
                warm = time.perf_counter() - started
                started = time.perf_counter()
                w.poll(end)
                polls.append((time.perf_counter() - started, warm))
            poll, warm = min(polls)
    return {
        "spans": spans, "detect_s": full, "sql_s": sql, "anomalies": len(found),
        "rows": len(rows), "poll_s": poll, "first_poll_s": warm,
    }


def _print_speed(s: dict[str, Any]) -> None:
    print(f"\nspeed: {s['spans']:,} spans, 14 days, 5 models, hourly, every signal "
          f"({s['rows']:,} bucket x model rows)")
    print(f"  detect_anomalies over 7 days (+7 of history): {s['detect_s'] * 1000:8.1f} ms "
          f"(target < 1000 ms); its SQL alone {s['sql_s'] * 1000:.1f} ms "
          f"({s['detect_s'] / s['sql_s']:.2f}x)")
    print(f"  watcher: first poll (warm-up) {s['first_poll_s'] * 1000:.1f} ms, next poll "
          f"(1 new hour) {s['poll_s'] * 1000:.1f} ms ({s['first_poll_s'] / s['poll_s']:.1f}x less)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("quality", "speed"))
    p.add_argument("--per-kind", type=int, default=60, help="series per event kind and family")
    p.add_argument("--clean", type=int, default=150, help="clean series per family")
    p.add_argument("--spans", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    if args.only in (None, "quality"):
        out["quality"] = quality(args.per_kind, args.clean)
        _print_quality(out["quality"])
    if args.only in (None, "speed"):
        out["speed"] = speed(args.spans, args.repeat)
        _print_speed(out["speed"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

