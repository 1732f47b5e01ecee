"""Retention over N spans on the Parquet store: time and peak memory of the
apply, rows before and after against the expected count.

The spans are generated with pyarrow straight into the store's on-disk
layout (``output_dir/YYYY-MM-DD/events_<UTC time>_<pid>_<seq>_<rand>.parquet``,
the writer's schema and codecs via ``conform`` and ``write_table_atomic``),
``FILES_PER_DAY`` files a day over ``DAYS`` days. The policy keeps
``KEEP_DAYS`` days counted from mid-day, so whole days' files are removed and
the files of the cutoff's day are rewritten. The apply runs in a subprocess
(``ru_maxrss`` of that process is its peak memory); best of ``--repeat``
fresh copies is reported.

``--postgres N`` / ``--mysql N``: the same N spans loaded through the
store's own writer into a table of a private schema (PostgreSQL) or database
(MySQL/MariaDB) of the local server, then one apply in a subprocess (batched
deletes: the table is not partitioned): time, peak memory, rows deleted, and
the rows counted before and after against the expected count. The schema is
dropped afterwards. ``--sql-only`` skips the Parquet run.

    python benchmarks/bench_retention.py --spans 10000000
    python benchmarks/bench_retention.py --sql-only --postgres 1000000 --mysql 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAYS = 30
FILES_PER_DAY = 2
KEEP_DAYS = 19.25
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

CHILD = """
import json, resource, sys, time
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.schema.config import StorageConfig
root, keep, now = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t = time.perf_counter()
r = apply_retention(StorageConfig(output_dir=root), RetentionConfig(
    spans_days=keep, keep_span_rollups=False, points=[]), now=now)
s = time.perf_counter() - t
tally = r.tallies["spans"]
print(json.dumps({"seconds": s, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rows_removed": tally.rows, "files_removed": tally.files_removed,
                  "files_rewritten": tally.files_rewritten}))
"""


def generate(root: Path, spans: int) -> list[int]:
    """Write ``spans`` spans; returns their start times (epoch µs), for the expected count."""
    from llamonitor.schema._extensions import conform
    from llamonitor.storage._layout import write_table_atomic

    per_file = spans // (DAYS * FILES_PER_DAY)
    rng = np.random.default_rng(7)
    starts: list[int] = []
    seq = 0
    day_us = 86_400_000_000
    for day in range(DAYS):
        base = int(T0.timestamp() * 1_000_000) + day * day_us
        offsets = np.sort(rng.integers(0, day_us, size=per_file * FILES_PER_DAY))
        directory = root / (T0 + timedelta(days=day)).strftime("%Y-%m-%d")
        directory.mkdir(parents=True, exist_ok=True)
        for f in range(FILES_PER_DAY):
            ts = base + offsets[f * per_file : (f + 1) * per_file]
            n = len(ts)
            ids = np.arange(seq, seq + n)
            seq += n
            hexes = pa.array(np.char.mod("%016x", ids))
            table = pa.table(
                {
                    "event_id": hexes,
                    "session_id": pa.array(np.char.mod("s%05d", ids % 5000)),
                    "trace_id": hexes,
                    "span_id": hexes,
                    "operation_name": pa.array(np.where(ids % 3 == 0, "llm.chat", "tool.search")),
                    "operation_type": pa.array(np.full(n, "llm_call")),
                    "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
                    "duration_ms": pa.array(rng.gamma(2.0, 200.0, size=n)),
                    "model": pa.array(np.where(ids % 2 == 0, "gpt-4o", "claude-3-5")),
                    "input_tokens": pa.array(ids % 900 + 10),
                    "output_tokens": pa.array(ids % 300 + 5),
                    "cost_usd": pa.array((ids % 900) * 2.5e-6),
                    "process_id": pa.array(np.full(n, 4242)),
                }
            )
            stamp = (T0 + timedelta(days=day, seconds=f)).strftime("%Y%m%dT%H%M%S%f")
            name = f"events_{stamp}_{os.getpid()}_{seq:06d}_bench0.parquet"
            write_table_atomic(conform(table), directory / name)
            starts.append(ts)  # type: ignore[arg-type]
    return starts  # type: ignore[return-value]


SQLITE_CHILD = """
import json, resource, sys, time
from pydantic import SecretStr
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.schema.config import StorageConfig
dsn, keep, now = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t = time.perf_counter()
r = apply_retention(StorageConfig(backend="sqlite", connection_string=SecretStr(dsn)),
    RetentionConfig(spans_days=keep, keep_span_rollups=False, points=[]), now=now)
print(json.dumps({"seconds": time.perf_counter() - t, "rows_removed": r.tallies["spans"].rows,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_sqlite(work: Path, spans: int) -> dict[str, object]:
    """The same spans (``spans`` of them) in SQLite, through the store's writer."""
    import asyncio
    import sqlite3

    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage import create_backend

    source = work / "pq"
    starts = generate(source, spans)
    dsn = f"sqlite:///{work}/spans.db"
    storage = StorageConfig(backend="sqlite", connection_string=SecretStr(dsn))

    async def load() -> None:
        from llamonitor.storage.parquet import data_files

        backend = create_backend(storage)
        await backend.initialize()
        for f in data_files(source):
            await backend.write_table(pq.read_table(f))
        await backend.close()

    asyncio.run(load())
    now = T0 + timedelta(days=DAYS, hours=-12)
    cutoff_us = int((now - timedelta(days=KEEP_DAYS)).timestamp() * 1_000_000)
    expected = int(sum(int((np.asarray(s) >= cutoff_us).sum()) for s in starts))
    out = subprocess.run(
        [sys.executable, "-c", SQLITE_CHILD, dsn, str(KEEP_DAYS), str(now.timestamp())],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with sqlite3.connect(f"{work}/spans.db") as conn:
        after = conn.execute("SELECT count(*) FROM metric_events").fetchone()[0]
    return {
        "sqlite_spans_after": after,
        "sqlite_spans_expected_after": expected,
        "sqlite_apply_seconds": round(result["seconds"], 2),
        "sqlite_rows_removed": result["rows_removed"],
        "sqlite_peak_rss_mib": round(result["maxrss_kib"] / 1024, 1),
    }


SQL_CHILD = """
import json, resource, sys, time
from pydantic import SecretStr
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.schema.config import StorageConfig
kind, dsn, schema, keep, now = sys.argv[1:6]
storage = StorageConfig(backend=kind, connection_string=SecretStr(dsn), schema_name=schema)
t = time.perf_counter()
r = apply_retention(storage, RetentionConfig(spans_days=float(keep), keep_span_rollups=False,
    points=[]), now=float(now))
print(json.dumps({"seconds": time.perf_counter() - t, "rows_removed": r.tallies["spans"].rows,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

SQL_DSNS = {
    "postgres": os.environ.get("BENCH_POSTGRES_DSN", "postgresql://root@127.0.0.1:5432/test"),
    "mysql": os.environ.get("BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
}


def _sql(kind: str, dsn: str, statement: str) -> list[tuple[object, ...]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _servers import _execute  # the tests' one-statement helper

    return _execute(kind, dsn, statement)


def bench_sql(kind: str, work: Path, spans: int) -> dict[str, object]:
    """``spans`` spans in a private schema of the ``kind`` server, then one apply."""
    import asyncio
    import secrets

    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage import create_backend
    from llamonitor.storage.parquet import data_files

    dsn = SQL_DSNS[kind]
    schema = "bench_rt_" + secrets.token_hex(4)
    table = f"{schema}.metric_events" if kind == "postgres" else f"`{schema}`.`metric_events`"
    source = work / f"{kind}-source"
    starts = generate(source, spans)
    if kind == "mysql":
        _sql(kind, dsn, f"CREATE DATABASE {schema}")
    storage = StorageConfig(backend=kind, connection_string=SecretStr(dsn), schema_name=schema)
    try:

        async def load() -> None:
            backend = create_backend(storage)
            await backend.initialize()
            try:
                for f in data_files(source):
                    await backend.write_table(pq.read_table(f))
            finally:
                await backend.close()

        t = time.perf_counter()
        asyncio.run(load())
        load_s = time.perf_counter() - t
        before = int(_sql(kind, dsn, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]
        now = T0 + timedelta(days=DAYS, hours=-12)
        cutoff_us = int((now - timedelta(days=KEEP_DAYS)).timestamp() * 1_000_000)
        expected = int(sum(int((np.asarray(s) >= cutoff_us).sum()) for s in starts))
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                SQL_CHILD,
                kind,
                dsn,
                schema,
                str(KEEP_DAYS),
                str(now.timestamp()),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        after = int(_sql(kind, dsn, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]
    finally:
        drop = (
            f"DROP SCHEMA IF EXISTS {schema} CASCADE"
            if kind == "postgres"
            else f"DROP DATABASE IF EXISTS {schema}"
        )
        _sql(kind, dsn, drop)
        shutil.rmtree(source, ignore_errors=True)
    return {
        f"{kind}_spans_before": before,
        f"{kind}_spans_after": after,
        f"{kind}_spans_expected_after": expected,
        f"{kind}_exact": after == expected and before == len(np.concatenate(starts)),
        f"{kind}_load_seconds": round(load_s, 1),
        f"{kind}_apply_seconds": round(result["seconds"], 2),
        f"{kind}_rows_removed": result["rows_removed"],
        f"{kind}_rows_removed_per_second": round(result["rows_removed"] / result["seconds"]),
        f"{kind}_peak_rss_mib": round(result["maxrss_kib"] / 1024, 1),
    }


def count_rows(root: Path) -> int:
    from llamonitor.storage.parquet import data_files

    total = 0
    for f in data_files(root):
        with pq.ParquetFile(f) as pf:
            total += pf.metadata.num_rows
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--sqlite", type=int, default=0, help="Also SQLite with this many spans.")
    ap.add_argument("--postgres", type=int, default=0, help="Also PostgreSQL, this many spans.")
    ap.add_argument("--mysql", type=int, default=0, help="Also MySQL/MariaDB, this many spans.")
    ap.add_argument("--sql-only", action="store_true", help="Skip the Parquet run.")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-retention-"))
    if args.sqlite:
        (work / "sqlite").mkdir(parents=True, exist_ok=True)
        print(json.dumps(bench_sqlite(work / "sqlite", args.sqlite), indent=2))
    for kind in ("postgres", "mysql"):
        n = getattr(args, kind)
        if n:
            print(json.dumps(bench_sql(kind, work, n), indent=2), flush=True)
    if args.sql_only:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
        return
    source = work / "source"
    t = time.perf_counter()
    starts = generate(source, args.spans)
    gen_s = time.perf_counter() - t
    now = T0 + timedelta(days=DAYS, hours=-12)
    cutoff_us = int((now - timedelta(days=KEEP_DAYS)).timestamp() * 1_000_000)
    expected = int(sum(int((np.asarray(s) >= cutoff_us).sum()) for s in starts))
    before = count_rows(source)
    size = sum(p.stat().st_size for p in source.rglob("*.parquet"))
    best: dict[str, float] | None = None
    after = -1
    for i in range(args.repeat):
        run = work / f"run{i}"
        shutil.copytree(source, run)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(run), str(KEEP_DAYS), str(now.timestamp())],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        after = count_rows(run)
        if best is None or result["seconds"] < best["seconds"]:
            best = result
        shutil.rmtree(run)
    assert best is not None
    print(
        json.dumps(
            {
                "spans_before": before,
                "spans_after": after,
                "spans_expected_after": expected,
                "exact": after == expected
                and before == args.spans // (DAYS * FILES_PER_DAY) * DAYS * FILES_PER_DAY,
                "store_mb": round(size / 1e6, 1),
                "generate_seconds": round(gen_s, 1),
                "apply_seconds_best": round(best["seconds"], 2),
                "apply_peak_rss_mib": round(best["maxrss_kib"] / 1024, 1),
                "rows_removed": best["rows_removed"],
                "files_removed": best["files_removed"],
                "files_rewritten": best["files_rewritten"],
                "repeat": args.repeat,
            },
            indent=2,
        )
    )
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
