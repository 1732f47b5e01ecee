#!/usr/bin/env python
"""End-to-end throughput into each store: decorated calls -> durable rows.

One process calls a decorated sync function ``N`` times
(``@monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})``,
returning 1 KB of prose, so every row carries four text measurements and a
JSON attribute), with ``queue_full_policy="block"`` so nothing is dropped.
The clock runs from the first call to ``shutdown_monitoring()`` returning,
when every row is committed; then the rows are counted in the store itself
(rows, distinct event ids, the sum of ``text_char_count``). The Parquet
figure of the same run is the reference.

PostgreSQL's *floor* is measured in the same run, interleaved with each
trial: the same rows (the batches the sink receives, made once by the same
decorated calls into an in-memory store, untimed) written by bare asyncpg,
``copy_records_to_table`` on one connection, one transaction per batch of
``BATCH_SIZE``, into a fresh table of the same definition (created by the
backend: primary key and indexes), the records built before the clock
starts. It is what a hand-written COPY loader reaches on this machine; the
target is the whole decorated-calls-to-committed-rows path at >= 0.9 of it.
A second floor sends the same rows as one pre-encoded binary ``COPY`` stream
per batch (``copy_to_table``, nothing left for the client to encode): what
the server alone takes. And *postgres sink* is our write path alone: the same
batches handed to ``PostgresBackend.write_table`` one after the other (no
decorated calls, no worker), into a fresh table of the same definition.

Usage::

    python benchmarks/bench_storage.py                     # 200,000 events per store
    python benchmarks/bench_storage.py --events 50000 --json
    python benchmarks/bench_storage.py --stores postgres,parquet \\
        --postgres postgresql://postgres@127.0.0.1:5432/test

A store whose server does not answer is reported as skipped. Each store
gets a fresh table (dropped afterwards) or a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, monitor_llm

TARGET_EVENTS_PER_S = 50_000  # into PostgreSQL
FLOOR_TARGET = 0.9  # of the bare asyncpg COPY floor, into PostgreSQL
BATCH_SIZE = 10_000
MAX_QUEUE_SIZE = 100_000
WORDS = "the model reads the prompt and writes an answer about storage engines".split(" ")  # noqa: SIM905


def text_1k() -> str:
    """1,024 characters of prose with a newline every 12 words."""
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < 1024:
        out.append(WORDS[i % len(WORDS)] + ("\n" if i % 12 == 11 else ""))
        i += 1
    return " ".join(out)[:1024]


TEXT = text_1k()


# -- counting rows in each store, by its own means ----------------------------------

COUNT_SQL = 'SELECT count(*), count(DISTINCT event_id), sum(text_char_count) FROM "{t}"'


async def _pg(dsn: str, sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchrow(sql) if sql.startswith("SELECT") else await conn.execute(sql)
    finally:
        await conn.close()


def _mysql(dsn: str, sql: str) -> Any:
    import pymysql

    p = urlsplit(dsn)
    conn = pymysql.connect(
        host=p.hostname,
        port=p.port or 3306,
        user=p.username,
        password=p.password or "",
        database=p.path.lstrip("/"),
        autocommit=True,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql.replace('"', "`"))
            return cur.fetchone()
    finally:
        conn.close()


def sql_runner(kind: str, dsn: str) -> Callable[[str], Any]:
    if kind == "postgres":
        return lambda sql: asyncio.run(_pg(dsn, sql))
    if kind == "mysql":
        return lambda sql: _mysql(dsn, sql)

    def run_sqlite(sql: str) -> Any:
        conn = sqlite3.connect(dsn[len("sqlite:///") :])
        try:
            return conn.execute(sql).fetchone()
        finally:
            conn.close()

    return run_sqlite


@contextlib.contextmanager
def store(
    kind: str, dsn: str | None, tmp: Path
) -> Iterator[tuple[StorageConfig, Callable[[], Any]]]:
    """The store's config and a function counting its rows; cleaned up after."""
    if kind == "parquet":
        out = tmp / "parquet"
        config = StorageConfig(backend="parquet", output_dir=out, batch_size=BATCH_SIZE)

        def count_parquet() -> Any:
            glob = str(out / "**" / "*.parquet")
            sql = COUNT_SQL.replace('"{t}"', f"read_parquet('{glob}')")
            return duckdb.connect().execute(sql).fetchone()

        yield config, count_parquet
        return
    if kind == "sqlite":
        dsn = f"sqlite:///{tmp / 'bench.db'}"
    assert dsn is not None
    table = f"bench_{secrets.token_hex(4)}"
    run = sql_runner(kind, dsn)
    run("SELECT 1")  # reachable?
    config = StorageConfig(
        backend=kind,
        connection_string=dsn,
        table_name=table,
        batch_size=BATCH_SIZE,
        output_dir=tmp / "out",
    )
    try:
        yield config, lambda: run(COUNT_SQL.format(t=table))
    finally:
        with contextlib.suppress(Exception):
            run(f'DROP TABLE IF EXISTS "{table}"')
            run(f"DELETE FROM llamonitor_schema_version WHERE table_name = '{table}'")


# -- one measurement ------------------------------------------------------------


def measure(kind: str, dsn: str | None, n: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="llamonitor-bench-storage-") as d,
        store(kind, dsn, Path(d)) as (storage, count),
    ):
        config = MonitorConfig(
            storage=storage,
            queue_full_policy="block",
            block_timeout_seconds=600.0,
            shutdown_timeout_seconds=600.0,
            max_queue_size=MAX_QUEUE_SIZE,
            spool_dir=Path(d) / "spool",
        )
        gc.collect()
        writer = llamonitor.initialize_monitoring(config)  # tables created here, untimed

        @monitor_llm("generate", measure_text=True, custom_attributes={"model": "gpt-4"})
        def answer(prompt: str) -> str:
            return TEXT

        t0 = time.perf_counter()
        for _ in range(n):
            answer("What is the answer?")
        t_calls = time.perf_counter() - t0
        ok = bool(llamonitor.shutdown_monitoring(600.0))
        seconds = time.perf_counter() - t0
        health = dict(writer.health_check())
        rows, distinct, chars = count()
        return {
            "store": kind,
            "events": n,
            "seconds": seconds,
            "calls_seconds": t_calls,
            "events_per_s": n / seconds,
            "rows": int(rows),
            "distinct_event_ids": int(distinct),
            "sum_text_char_count": int(chars or 0),
            "written": health.get("events_written"),
            "dropped": health.get("events_dropped"),
            "ok": ok and int(rows) == n == int(distinct) and int(chars or 0) == n * len(TEXT),
        }


# -- PostgreSQL's floor: bare asyncpg COPY of the same rows --------------------------


def floor_batches(n: int) -> list[Any]:
    """The Arrow batches the sink receives for ``n`` calls (made once, untimed)."""
    from llamonitor.storage.memory import InMemoryBackend

    memory = InMemoryBackend()
    llamonitor.initialize_monitoring(
        MonitorConfig(
            storage=StorageConfig(backend=memory, batch_size=BATCH_SIZE),
            queue_full_policy="block",
            max_queue_size=MAX_QUEUE_SIZE,
        )
    )

    @monitor_llm("generate", measure_text=True, custom_attributes={"model": "gpt-4"})
    def answer(prompt: str) -> str:
        return TEXT

    for _ in range(n):
        answer("What is the answer?")
    llamonitor.shutdown_monitoring(600.0)
    table = memory.table()
    return [table.slice(i, BATCH_SIZE) for i in range(0, table.num_rows, BATCH_SIZE)]


_PG_EPOCH_US = 946_684_800_000_000


def _plain_records(batch: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Columns (those not null in the whole batch) and row tuples, the
    timestamp as PostgreSQL's own integer (microseconds since 2000)."""
    import pyarrow as pa

    names, columns = [], []
    for f in batch.schema:
        col = batch.column(f.name)
        if col.null_count == batch.num_rows:
            continue
        if pa.types.is_timestamp(f.type):
            col = col.cast(pa.int64())
            values = [None if v is None else v - _PG_EPOCH_US for v in col.to_pylist()]
        else:
            values = col.to_pylist()
        names.append(f.name)
        columns.append(values)
    return names, list(zip(*columns, strict=True))


async def _pg_floor(dsn: str, batches: list[Any], binary: bool) -> dict[str, Any]:
    import asyncpg

    from llamonitor.storage.postgres import PostgresBackend

    table = f"bench_floor_{secrets.token_hex(4)}"
    backend = PostgresBackend(
        StorageConfig(backend="postgres", connection_string=dsn, table_name=table)
    )
    await backend.initialize()  # the same table definition: primary key, indexes
    await backend.close()
    prepared = [_plain_records(b) for b in batches]  # before the clock
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(
            "timestamptz", schema="pg_catalog", encoder=lambda us: (us,),
            decoder=lambda v: v[0], format="tuple",
        )
        payloads: list[Any] = []
        if binary:  # the same rows as binary COPY streams, encoded by asyncpg, untimed
            payloads = [await _binary_payload(conn, table, cols, rows) for cols, rows in prepared]
        n = sum(len(rows) for _, rows in prepared)
        t0 = time.perf_counter()
        for i, (cols, rows) in enumerate(prepared):
            async with conn.transaction():
                if binary:
                    await conn.copy_to_table(
                        table, source=payloads[i], columns=cols, format="binary"
                    )
                else:
                    await conn.copy_records_to_table(table, records=rows, columns=cols)
        seconds = time.perf_counter() - t0
        count = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            await conn.execute(
                f"DELETE FROM llamonitor_schema_version WHERE table_name = '{table}'"
            )
        await conn.close()
    return {"seconds": seconds, "events_per_s": n / seconds, "rows": int(count), "ok": count == n}


async def _binary_payload(conn: Any, table: str, cols: list[str], rows: list[Any]) -> Any:
    """The binary COPY stream asyncpg would send for ``rows`` (captured by a
    COPY into a temporary copy of the table that is then read back out)."""
    import io

    scratch = f"{table}_scratch"
    await conn.execute(f'CREATE TEMPORARY TABLE "{scratch}" (LIKE "{table}")')
    await conn.copy_records_to_table(scratch, records=rows, columns=cols)
    out = io.BytesIO()
    await conn.copy_from_table(scratch, columns=cols, output=out, format="binary")
    await conn.execute(f'DROP TABLE "{scratch}"')
    out.seek(0)
    return out


async def _pg_sink(dsn: str, batches: list[Any]) -> dict[str, Any]:
    from llamonitor.storage.postgres import PostgresBackend

    table = f"bench_sink_{secrets.token_hex(4)}"
    backend = PostgresBackend(
        StorageConfig(backend="postgres", connection_string=dsn, table_name=table)
    )
    await backend.initialize()
    n = sum(b.num_rows for b in batches)
    try:
        t0 = time.perf_counter()
        for b in batches:
            await backend.write_table(b)
        seconds = time.perf_counter() - t0
    finally:
        await backend.close()
        with contextlib.suppress(Exception):
            await _pg(dsn, f'DROP TABLE IF EXISTS "{table}"')
            await _pg(dsn, f"DELETE FROM llamonitor_schema_version WHERE table_name = '{table}'")
    return {"seconds": seconds, "events_per_s": n / seconds, "rows": n, "ok": True}


def measure_sink(dsn: str, batches: list[Any]) -> dict[str, Any]:
    return {"store": "postgres sink", **asyncio.run(_pg_sink(dsn, batches))}


def measure_floor(dsn: str, batches: list[Any], binary: bool) -> dict[str, Any]:
    kind = "postgres floor (binary)" if binary else "postgres floor"
    return {"store": kind, **asyncio.run(_pg_floor(dsn, batches, binary))}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"python": platform.python_version(), "cpu": cpu, "cpus": os.cpu_count()}


def summarize(kind: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The median trial of a store (by events/s), with every trial's figure."""
    done = [t for t in trials if "skipped" not in t]
    if not done:
        return trials[-1]
    rates = sorted(t["events_per_s"] for t in done)
    median = statistics.median(rates)
    best = min(done, key=lambda t: abs(t["events_per_s"] - median))
    return {
        **best,
        "events_per_s": median,
        "trials_events_per_s": [t["events_per_s"] for t in done],
        "ok": all(t["ok"] for t in done),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="calls per store and trial")
    parser.add_argument("--trials", type=int, default=3, help="interleaved runs; medians shown")
    parser.add_argument("--stores", default="parquet,postgres,mysql,sqlite")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "LLMOPS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--mysql",
        default=os.environ.get("LLMOPS_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    dsns = {"postgres": args.postgres, "mysql": args.mysql}
    kinds = args.stores.split(",")
    floors = (
        ["postgres sink", "postgres floor", "postgres floor (binary)"]
        if "postgres" in kinds
        else []
    )
    trials: dict[str, list[dict[str, Any]]] = {k: [] for k in [*kinds, *floors]}
    batches = floor_batches(args.events) if floors else []
    for _ in range(args.trials):
        for kind in kinds:  # interleaved: a slow minute of the machine hits every store
            if trials[kind] and "skipped" in trials[kind][-1]:
                continue
            try:
                trials[kind].append(measure(kind, dsns.get(kind), args.events))
                if kind == "postgres":  # its floors right after it, in the same minute
                    for floor in floors:
                        trials[floor].append(
                            measure_sink(args.postgres, batches)
                            if floor == "postgres sink"
                            else measure_floor(args.postgres, batches, binary="binary" in floor)
                        )
            except Exception as exc:
                with contextlib.suppress(Exception):
                    llamonitor.shutdown_monitoring(10)
                trials[kind].append({"store": kind, "skipped": f"{type(exc).__name__}: {exc}"})
    results = [summarize(k, trials[k]) for k in [*kinds, *floors] if trials[k]]
    report = {"machine": machine(), "text_chars": len(TEXT), "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(
        f"{args.events:,} events per store and trial, median of {args.trials}, 1 KB text "
        f"measured; {m['cpus']} x {m['cpu']}, Python {m['python']}"
    )
    print(f"{'store':<24} {'events/s':>10} {'range':>17} {'rows':>9}  check")
    parquet = next((r for r in results if r["store"] == "parquet" and "skipped" not in r), None)
    floor = next((r for r in results if r["store"] == "postgres floor"), None)
    for r in results:
        if "skipped" in r:
            print(f"{r['store']:<24} {'skipped':>10}  {r['skipped'][:90]}")
            continue
        low, high = min(r["trials_events_per_s"]), max(r["trials_events_per_s"])
        notes = []
        if parquet and r is not parquet and r["store"] == "postgres":
            notes.append(f"{r['events_per_s'] / parquet['events_per_s']:.0%} of Parquet")
        if r["store"] == "postgres sink" and floor is not None:
            notes.append(f"{r['events_per_s'] / floor['events_per_s']:.2f} of the floor")
        if r["store"] == "postgres":
            met = r["events_per_s"] >= TARGET_EVENTS_PER_S
            notes.append(f"target {TARGET_EVENTS_PER_S:,}/s {'met' if met else 'MISSED'}")
            if floor is not None:
                ratio = r["events_per_s"] / floor["events_per_s"]
                ok = "met" if ratio >= FLOOR_TARGET else "MISSED"
                notes.append(f"{ratio:.2f} of the asyncpg COPY floor (target {FLOOR_TARGET}: {ok})")
        print(
            f"{r['store']:<24} {r['events_per_s']:>10,.0f} {low:>8,.0f}-{high:<8,.0f} "
            f"{r['rows']:>9,}  {'ok' if r['ok'] else 'MISMATCH'}"
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
