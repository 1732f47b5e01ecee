#!/usr/bin/env python
"""llamonitor benchmark: what the scores section adds to ``analyze()``.

Usage::

    python benchmarks/bench_report_scores.py                     # 200k and 1M spans
    python benchmarks/bench_report_scores.py --sizes 200000 --repeat 5

For each size: a Parquet store of spans (traces of 10 spans, sessions of 10
traces, two models, seven operations), with a span score on one span in ten
and a labelled trace score on every trace (``n / 10`` + ``n / 10`` scores).
It times the report without the score store (``scores=`` a store holding
none) and with it, ``--repeat`` times each, interleaved, and prints the
medians and their ratio: the cost of the section relative to the rest of the
report, on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def make_store(directory: Path, n: int) -> int:
    import llamonitor
    from llamonitor.schema._scores import SCORE_SCHEMA
    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage._scores import write_scores

    i = np.arange(n)
    span_ids = np.char.mod("%016x", i)
    trace = np.char.mod("t%d", i // 10)
    parent = np.where(i % 10 == 0, None, np.char.mod("%016x", i - i % 10))
    cols: dict[str, object] = {name: pa.nulls(n, f.type) for name, f in
                               zip(llamonitor.SCHEMA.names, llamonitor.SCHEMA, strict=True)}
    cols.update(
        event_id=pa.array(np.char.mod("e%d", i)), session_id=pa.array(np.char.mod("s%d", i // 100)),
        trace_id=pa.array(trace), span_id=pa.array(span_ids),
        parent_span_id=pa.array(parent.tolist(), pa.string()),
        operation_name=pa.array(np.char.mod("op%d", i % 7)),
        operation_type=pa.array(np.full(n, "llm_call")),
        timestamp=pa.array((T0.timestamp() * 1e6 + i * 1e6).astype("int64")).cast(
            pa.timestamp("us", tz="UTC")),
        duration_ms=pa.array(np.full(n, 10.0)), process_id=pa.array(np.ones(n, "int64")),
        model=pa.array(np.where(i % 2 == 0, "gpt-4o", "gpt-4o-mini")),
    )
    (directory / "2026-01-05").mkdir(parents=True)
    pq.write_table(pa.table(cols, schema=llamonitor.SCHEMA),
                   directory / "2026-01-05" / "events_1.parquet")
    k = n // 10
    j = np.arange(k)
    when = pa.array(np.full(k, int((T0 + timedelta(days=8)).timestamp() * 1e6))).cast(
        pa.timestamp("us", tz="UTC"))

    def scores(name: str, target: str, ids: np.ndarray, value: object, label: object) -> pa.Table:
        return pa.table({
            "score_id": pa.array(np.char.mod(f"{name}-%d", j)), "timestamp": when,
            "name": pa.array(np.full(k, name)), "value": value, "label": label,
            "comment": pa.nulls(k, pa.string()), "source": pa.array(np.full(k, "code")),
            "target": pa.array(np.full(k, target)),
            "trace_id": pa.array(np.char.mod("t%d", j)),
            "span_id": pa.array(ids) if target == "span" else pa.nulls(k, pa.string()),
            "session_id": pa.nulls(k, pa.string()), "evaluator": pa.nulls(k, pa.string()),
            "metadata": pa.nulls(k, pa.string()),
            "schema_version": pa.array(np.ones(k, "int32")),
        }, schema=SCORE_SCHEMA)

    storage = StorageConfig(output_dir=directory)
    write_scores(storage, scores("helpful", "span", np.char.mod("%016x", j * 10 + 3),
                                 pa.array((j % 10) / 10.0), pa.nulls(k, pa.string())))
    write_scores(storage, scores("feedback", "trace", j, pa.array((j % 2).astype(float)),
                                 pa.array(np.where(j % 2 == 0, "bad", "good"))))
    return 2 * k


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from llamonitor.analysis import analyze
    from llamonitor.schema.config import StorageConfig

    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store, none = Path(tmp) / "store", Path(tmp) / "no-scores"
            none.mkdir()
            k = make_store(store, n)
            plain: list[float] = []
            scored: list[float] = []
            analyze(store, suggestions=False)  # warm: imports, first read of the files
            for _ in range(args.repeat):
                for out, where in ((plain, none), (scored, store)):
                    began = time.perf_counter()
                    report = analyze(store, scores=StorageConfig(output_dir=where),
                                     suggestions=False)
                    out.append(time.perf_counter() - began)
                    assert bool(report.scores) == (where == store)
            a, b = statistics.median(plain), statistics.median(scored)
            print(f"{n:>9,} spans, {k:>7,} scores: report {a:.2f} s, with scores {b:.2f} s "
                  f"(x{b / a:.2f}; the section {b - a:.2f} s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
