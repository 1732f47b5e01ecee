#!/usr/bin/env python
"""llamonitor benchmark: the ClickHouse store next to PostgreSQL on the same spans.

Usage::

    python benchmarks/bench_clickhouse.py                    # 1M spans (about 10 min here)
    python benchmarks/bench_clickhouse.py --spans 250000     # quicker
    python benchmarks/bench_clickhouse.py --clickhouse-dsn clickhouse://host:9000/db

The spans are ``bench_report.py``'s workload (sessions of agent traces over a
week: LLM calls of three providers, tools, retries, errors, prompt hashes),
generated once. Then, for each store in turn, on the same rows:

* **insert**: the store's backend writes the spans in batches of ``--batch``
  rows (``write_table``, what the transport's sink calls), one backend, one
  connection; spans per second of wall time;
* **report**: ``llamonitor.analysis.analyze`` over the whole store (every
  section: cost, latency with the critical path, tokens, quality, trends,
  suggestions), the median of ``--repeat`` runs after one warm-up; and
  ``stats()`` (per operation) likewise.

ClickHouse is a private server of the machine's ``clickhouse-server`` (Debian
bookworm: 18.16), started in a temporary directory (see
``tests/_clickhouse.py``), unless ``--clickhouse-dsn`` is given. PostgreSQL is
the machine's server (``--postgres-dsn``), in a fresh table. Both query sides
stream the rows the report reads into DuckDB, so the report's time is mostly
the reading: the figures compare the two stores' read and write paths, not
their SQL engines.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import bench_report

from llamonitor.analysis import analyze
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend

PG_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")


def spans(n: int, work: Path) -> pa.Table:
    """``n`` spans of the report benchmark's workload, in time order."""
    bench_report.generate(n, work)
    files = sorted(work.rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).combine_chunks()


def insert(config: StorageConfig, table: pa.Table, batch: int) -> float:
    """Spans per second written by one backend in batches of ``batch`` rows."""

    async def go() -> float:
        backend = create_backend(config)
        await backend.initialize()
        try:
            started = time.perf_counter()
            for i in range(0, table.num_rows, batch):
                await backend.write_table(table.slice(i, batch))
            return table.num_rows / (time.perf_counter() - started)
        finally:
            await backend.close()

    return asyncio.run(go())


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up: imports, the price data, the server's caches
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return {"median_s": statistics.median(runs), "best_s": min(runs)}


def measure(kind: str, config: StorageConfig, table: pa.Table, args: Any) -> dict[str, Any]:
    module = __import__(f"llamonitor.storage.{kind}", fromlist=["query"])
    rate = insert(config, table, args.batch)
    print(f"  {kind}: inserted {table.num_rows:,} spans at {rate:,.0f}/s", flush=True)
    with module.query(config) as q:
        assert q.count() == table.num_rows, (kind, q.count())
        report = timed(lambda: analyze(q), args.repeat)
        print(f"  {kind}: report median {report['median_s']:.2f} s", flush=True)
        stats = timed(q.stats, args.repeat)
        print(f"  {kind}: stats median {stats['median_s']:.2f} s", flush=True)
    return {"insert_per_s": rate, "report": report, "stats": stats}


def postgres_dsn(given: str | None) -> str:
    import asyncpg

    async def ok(dsn: str) -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except Exception:
            return False
        await conn.close()
        return True

    for dsn in [given] if given else PG_DSNS:
        if asyncio.run(ok(dsn)):
            return dsn
    raise SystemExit("no PostgreSQL server answers; pass --postgres-dsn")


def drop_postgres(dsn: str, table: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per write_table")
    parser.add_argument("--repeat", type=int, default=3, help="timed report runs per store")
    parser.add_argument("--clickhouse-dsn")
    parser.add_argument("--postgres-dsn")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llamonitor-bench-ch-") as tmp:
        started = time.perf_counter()
        table = spans(args.spans, Path(tmp) / "spans")
        print(f"generated {table.num_rows:,} spans in {time.perf_counter() - started:.1f} s")
        name = f"bench_{secrets.token_hex(4)}"
        results: dict[str, dict[str, Any]] = {}

        server = None
        ch_dsn = args.clickhouse_dsn
        if ch_dsn is None:
            from _clickhouse import ClickHouseServer, start_server  # tests/_clickhouse.py

            server: ClickHouseServer | None = start_server()  # type: ignore[no-redef]
            ch_dsn = server.dsn
        try:
            config = StorageConfig(
                backend="clickhouse", connection_string=SecretStr(ch_dsn), table_name=name
            )
            results["clickhouse"] = measure("clickhouse", config, table, args)
        finally:
            if server is not None:
                server.stop()

        if not args.skip_postgres:
            pg = postgres_dsn(args.postgres_dsn)
            config = StorageConfig(
                backend="postgres", connection_string=SecretStr(pg), table_name=name
            )
            try:
                results["postgres"] = measure("postgres", config, table, args)
            finally:
                drop_postgres(pg, name)

    print()
    print("| store | spans | insert, spans/s | report, median | stats, median |")
    print("|---|---:|---:|---:|---:|")
    for kind, r in results.items():
        print(
            f"| {kind} | {table.num_rows:,} | {r['insert_per_s']:,.0f} | "
            f"{r['report']['median_s']:.2f} s | {r['stats']['median_s']:.2f} s |"
        )
    if len(results) == 2:
        ch, pg_r = results["clickhouse"], results["postgres"]
        print()
        print(
            f"ClickHouse / PostgreSQL: insert x{ch['insert_per_s'] / pg_r['insert_per_s']:.2f}, "
            f"report time x{ch['report']['median_s'] / pg_r['report']['median_s']:.2f}, "
            f"stats time x{ch['stats']['median_s'] / pg_r['stats']['median_s']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
