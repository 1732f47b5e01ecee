#!/usr/bin/env python
"""Time-ordered ids against random ids: what a SQL server pays per span.

The span table has a primary key on ``event_id`` and the seed's indexes on
``(session_id, timestamp)``, ``(trace_id, timestamp)``, ``(parent_span_id)``
and ``(operation_name, timestamp)``. With random ids every new row lands on a
random page of three of those B-trees; llamonitor's ids begin with the time
(event ids are UUIDv7s, session and trace ids carry the same 48-bit
millisecond prefix), so new rows land near one edge.

The rows are the batches the sink receives for ``--spans`` decorated calls
(``bench_storage.floor_batches``: one process, every call a root span with a
session and trace of its own, made once, untimed). Each trial writes them
twice into a fresh table through the store's own backend (``write_table``,
``--batch`` rows at a time, one connection), once as made (**time-ordered**)
and once with ``event_id``, ``session_id`` and ``trace_id`` replaced by
random 32-hex-character ids (**random**, what llamonitor made before),
alternating which goes first. Reported: the server's CPU time per span (every
process of the server, user + system, from /proc via psutil: less sensitive
to other load on the machine than wall time) and spans per second.

Usage::

    python benchmarks/bench_ids.py                          # 300,000 spans, PostgreSQL
    python benchmarks/bench_ids.py --stores postgres,mysql --spans 200000 --trials 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))

import bench_storage

from llamonitor import StorageConfig
from llamonitor.storage import create_backend
from llamonitor.transport._vectors import fixed_hex

DSNS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
SERVERS = {"postgres": ("postgres",), "mysql": ("mariadbd", "mysqld")}
RANDOMIZED = ("event_id", "session_id", "trace_id")


def randomized(table: pa.Table) -> pa.Table:
    """``table`` with random ids where llamonitor's are time-ordered."""
    n = table.num_rows
    for name in RANDOMIZED:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, fixed_hex(os.urandom(16 * n), n))
    return table


def server_cpu(names: tuple[str, ...]) -> float:
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "").startswith(names):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


async def _write(
    kind: str, dsn: str, name: str, table: pa.Table, batch: int
) -> tuple[float, float]:
    backend = create_backend(StorageConfig(backend=kind, connection_string=dsn, table_name=name))
    await backend.initialize()
    try:
        c0, t0 = server_cpu(SERVERS[kind]), time.perf_counter()
        for i in range(0, table.num_rows, batch):
            await backend.write_table(table.slice(i, batch))
        return time.perf_counter() - t0, server_cpu(SERVERS[kind]) - c0
    finally:
        await backend.close()


def write(kind: str, dsn: str, table: pa.Table, batch: int) -> dict[str, float]:
    """Write ``table`` into a fresh table (dropped afterwards)."""
    name = f"bench_ids_{secrets.token_hex(4)}"
    try:
        seconds, cpu = asyncio.run(_write(kind, dsn, name, table, batch))
    finally:
        run = bench_storage.sql_runner(kind, dsn)
        run(f'DROP TABLE IF EXISTS "{name}"')
        run(f"DELETE FROM llamonitor_schema_version WHERE table_name = '{name}'")
    n = table.num_rows
    return {"spans_per_s": n / seconds, "server_us_per_span": cpu / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--stores", default="postgres")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per write_table")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    ordered = pa.concat_tables(bench_storage.floor_batches(args.spans))
    variants = {"time-ordered": ordered, "random": randomized(ordered)}
    results: dict[str, Any] = {"spans": ordered.num_rows, "load": os.getloadavg()[0]}
    for kind in args.stores.split(","):
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for trial in range(args.trials):
            order = list(variants) if trial % 2 else list(reversed(variants))
            for v in order:
                runs[v].append(write(kind, DSNS[kind], variants[v], args.batch))
        summary = {
            v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()
        }
        cut = 1 - (
            summary["time-ordered"]["server_us_per_span"] / summary["random"]["server_us_per_span"]
        )
        results[kind] = {"median": summary, "runs": runs, "server_cpu_saved": cut}
        if not args.json:
            for v, s in summary.items():
                print(
                    f"{kind:8s} {v:13s} {s['spans_per_s']:8,.0f} spans/s   "
                    f"server {s['server_us_per_span']:5.1f} us/span"
                )
            print(f"{kind:8s} time-ordered ids: server CPU per span -{cut:.0%}")
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"load average {results['load']:.1f} -> {results['load_after']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
