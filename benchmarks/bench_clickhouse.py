#!/usr/bin/env python
"""llamonitor benchmark: the ClickHouse store next to PostgreSQL on the same spans.

Usage::

    python benchmarks/bench_clickhouse.py                    # 1M spans (--repeat 1: ~6 min here)
    python benchmarks/bench_clickhouse.py --spans 250000     # quicker
    python benchmarks/bench_clickhouse.py --optimize         # also the report after OPTIMIZE FINAL
    python benchmarks/bench_clickhouse.py --spans 10000000 --skip-postgres --data /tmp/spans10m
    python benchmarks/bench_clickhouse.py --spans 10000000 --skip-clickhouse --data /tmp/spans10m
    python benchmarks/bench_clickhouse.py --spans 10000000 --data /tmp/spans10m --generate-only
    python benchmarks/bench_clickhouse.py --clickhouse-dsn clickhouse://host:9000/db

The spans are ``bench_report.py``'s workload (sessions of agent traces over a
week: LLM calls of three providers, tools, retries, errors, prompt hashes),
generated once, ``--chunk`` spans at a time (1M by default): chunk ``k`` is
the workload's week ``k`` (seed ``k + 1``, starting a week after chunk
``k - 1``), written to Parquet files, so 10M spans are ten weeks (three month
partitions) and never all in memory; 1M spans are the one week the earlier
runs had. ``--data DIR`` keeps the files there and reuses them when they are
of the same ``--spans``/``--chunk`` (the same rows for another run). Then, for
each store in turn, on the same rows:

* **insert**: the store's backend writes the spans in batches of ``--batch``
  rows (``write_table``, what the transport's sink calls), one backend, one
  connection; spans per second of the time spent in ``write_table`` (reading
  the generated Parquet files between batches is not counted);
* **report**: ``llamonitor.analysis.analyze`` over the whole store (every
  section: cost, latency with the critical path, tokens, quality, trends,
  suggestions), the median of ``--repeat`` runs after ``--warmup`` untimed
  ones; and ``stats()`` (per operation) likewise.

Over ClickHouse the report is timed on the table **as inserted** (its parts
as the background merges left them: read ``FINAL`` while a partition has more
than one part, which the output says, with the parts before and after); with
``--optimize`` then ``OPTIMIZE TABLE ... FINAL`` (timed apart), and the report
and ``stats()`` again over the merged table (one part per partition: no
``FINAL``).

ClickHouse is a private server of the machine's ``clickhouse-server`` (Debian
bookworm: 18.16), started in a temporary directory (see
``tests/_clickhouse.py``), unless ``--clickhouse-dsn`` is given. PostgreSQL is
the machine's server (``--postgres-dsn``), in a fresh table. The report's
aggregates run in ClickHouse; over PostgreSQL, and for the structure pass and
the agent graph over both, the rows the report reads are streamed into DuckDB.
The peak RSS of this process (the client side) and of the private server are
printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import bench_report

from llamonitor.analysis import analyze
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend

PG_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")
LONG_TIMEOUT_S = 7200  # OPTIMIZE of a big table answers only when the merge is done


def spans(n: int, chunk: int, work: Path) -> list[Path]:
    """The Parquet files of ``n`` spans of the report benchmark's workload,
    ``chunk`` spans (a week) at a time; reused when ``work`` has them."""
    manifest = work / "spans.json"
    wanted = {"spans": n, "chunk": chunk}
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        return sorted(work.rglob("*.parquet"))
    for old in work.rglob("*.parquet"):
        old.unlink()
    for k, first in enumerate(range(0, n, chunk)):
        count = min(chunk, n - first)
        t0_us = bench_report.T0_US + k * bench_report.WEEK_US
        bench_report.generate(count, work / f"chunk_{k:03d}", seed=1 + k, t0_us=t0_us)
    manifest.write_text(json.dumps(wanted))
    return sorted(work.rglob("*.parquet"))


def rows_in(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def insert(config: StorageConfig, files: list[Path], batch: int) -> float:
    """Spans per second written by one backend in batches of ``batch`` rows
    (the time in ``write_table`` only)."""

    async def go() -> float:
        backend = create_backend(config)
        await backend.initialize()
        written, spent = 0, 0.0
        try:
            for f in files:
                table = pq.read_table(f)
                started = time.perf_counter()
                for i in range(0, table.num_rows, batch):
                    await backend.write_table(table.slice(i, batch))
                spent += time.perf_counter() - started
                written += table.num_rows
            return written / spent
        finally:
            await backend.close()

    return asyncio.run(go())


def timed(fn: Callable[[], Any], repeat: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):  # imports, the price data, the server's caches
        fn()
    runs = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - started)
    return {"median_s": statistics.median(runs), "best_s": min(runs), "last": result}


def phases(report: Any) -> str:
    """The report's slowest phases (its own timings), largest first."""
    timings = dict(getattr(report, "timings_ms", None) or {})
    timings.pop("total", None)
    top = sorted(timings.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {ms / 1000:.1f} s" for name, ms in top)


def ch_client(dsn: str) -> Any:
    from clickhouse_driver import Client

    sep = "&" if "?" in dsn else "?"
    return Client.from_url(f"{dsn}{sep}send_receive_timeout={LONG_TIMEOUT_S}")


def ch_parts(dsn: str, table: str) -> dict[str, Any]:
    """The table's active parts: how many, in how many partitions, and
    whether the query side reads it ``FINAL`` (a partition of more than one
    part, or of one unmerged part: ``_clickhouse_query.final``'s rule)."""
    client = ch_client(dsn)
    try:
        rows = client.execute(
            "SELECT partition_id, count(), min(level), sum(rows) FROM system.parts "
            "WHERE active AND database = currentDatabase() AND table = %(t)s "
            "GROUP BY partition_id ORDER BY partition_id",
            {"t": table},
        )
    finally:
        client.disconnect()
    return {
        "parts": sum(int(r[1]) for r in rows),
        "partitions": len(rows),
        "final": any(int(r[1]) > 1 or int(r[2]) == 0 for r in rows),
    }


def describe_parts(p: dict[str, Any]) -> str:
    how = "read FINAL" if p["final"] else "read without FINAL"
    return f"{p['parts']} parts in {p['partitions']} partitions, {how}"


def ch_optimize(dsn: str, table: str) -> float:
    """``OPTIMIZE TABLE ... FINAL`` (every partition), seconds."""
    client = ch_client(dsn)
    try:
        started = time.perf_counter()
        client.execute(f"OPTIMIZE TABLE `{table}` FINAL", settings={"optimize_throw_if_noop": 1})
        return time.perf_counter() - started
    finally:
        client.disconnect()


def reports(kind: str, q: Any, args: Any, label: str) -> dict[str, Any]:
    report = timed(lambda: analyze(q), args.repeat, args.warmup)
    kind = f"{kind} ({label})" if label else kind
    print(
        f"  {kind}: report median {report['median_s']:.2f} s [{phases(report.pop('last'))}]",
        flush=True,
    )
    stats = timed(q.stats, args.repeat, args.warmup)
    stats.pop("last")
    print(f"  {kind}: stats median {stats['median_s']:.2f} s", flush=True)
    return {"report": report, "stats": stats}


def measure(
    kind: str, config: StorageConfig, files: list[Path], n: int, args: Any
) -> dict[str, Any]:
    module = __import__(f"llamonitor.storage.{kind}", fromlist=["query"])
    print(f"  {kind}: inserting {n:,} spans ({time.strftime('%H:%M:%S')})", flush=True)
    rate = insert(config, files, args.batch)
    print(f"  {kind}: inserted {n:,} spans at {rate:,.0f}/s", flush=True)
    result: dict[str, Any] = {"insert_per_s": rate}
    dsn = config.connection_string.get_secret_value() if config.connection_string else ""
    table = config.table_name
    with module.query(config) as q:
        assert q.count() == n, (kind, q.count())
        if kind != "clickhouse":
            result["runs"] = {"": reports(kind, q, args, "")}
            return result
        before = ch_parts(dsn, table)
        print(f"  clickhouse: as inserted: {describe_parts(before)}", flush=True)
        runs = {"as inserted": reports(kind, q, args, "as inserted")}
        after = ch_parts(dsn, table)
        print(f"  clickhouse: after those reports: {describe_parts(after)}", flush=True)
        runs["as inserted"]["parts"] = (before, after)
        if args.optimize:
            seconds = ch_optimize(dsn, table)
            merged = ch_parts(dsn, table)
            print(
                f"  clickhouse: OPTIMIZE TABLE FINAL {seconds:.1f} s: {describe_parts(merged)}",
                flush=True,
            )
            result["optimize_s"] = seconds
            assert q.count() == n, (kind, q.count())
            runs["merged"] = reports(kind, q, args, "merged")
            runs["merged"]["parts"] = (merged, ch_parts(dsn, table))
        result["runs"] = runs
    return result


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


def peak_mb(pid: int | None = None) -> float:
    """The peak RSS (VmHWM) of ``pid``, of this process if None, in MB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_stores(files: list[Path], n: int, args: Any) -> dict[str, dict[str, Any]]:
    name = f"bench_{secrets.token_hex(4)}"
    results: dict[str, dict[str, Any]] = {}
    if not args.skip_clickhouse:
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
            results["clickhouse"] = measure("clickhouse", config, files, n, args)
            if server is not None and server.proc is not None:
                results["clickhouse"]["server_peak_mb"] = peak_mb(server.proc.pid)
        finally:
            if server is not None:
                server.stop()
            else:
                client = ch_client(ch_dsn)
                client.execute(f"DROP TABLE IF EXISTS `{name}`")
                client.disconnect()

    if not args.skip_postgres:
        pg = postgres_dsn(args.postgres_dsn)
        config = StorageConfig(backend="postgres", connection_string=SecretStr(pg), table_name=name)
        try:
            results["postgres"] = measure("postgres", config, files, n, args)
        finally:
            drop_postgres(pg, name)
    return results


def print_results(results: dict[str, dict[str, Any]], n: int, args: Any) -> None:
    print()
    print(f"--repeat {args.repeat} --warmup {args.warmup} --batch {args.batch}")
    print("| store | spans | insert, spans/s | report, median | stats, median |")
    print("|---|---:|---:|---:|---:|")
    for kind, r in results.items():
        for label, run in r["runs"].items():
            name = kind
            if label:
                before, after = run["parts"]
                parts = describe_parts(before)
                if after != before:
                    parts += f"; then {describe_parts(after)}"
                name = f"{kind}, {label} ({parts})"
            insert = f"{r['insert_per_s']:,.0f}" if label in ("", "as inserted") else ""
            print(
                f"| {name} | {n:,} | {insert} | "
                f"{run['report']['median_s']:.2f} s | {run['stats']['median_s']:.2f} s |"
            )
    if "optimize_s" in results.get("clickhouse", {}):
        print(f"\nOPTIMIZE TABLE ... FINAL: {results['clickhouse']['optimize_s']:.1f} s")
    if len(results) == 2:
        ch, pg_r = results["clickhouse"], results["postgres"]
        pg_run = pg_r["runs"][""]
        for label, run in ch["runs"].items():
            print(
                f"ClickHouse ({label}) / PostgreSQL: "
                f"insert x{ch['insert_per_s'] / pg_r['insert_per_s']:.2f}, "
                f"report time x{run['report']['median_s'] / pg_run['report']['median_s']:.2f}, "
                f"stats time x{run['stats']['median_s'] / pg_run['stats']['median_s']:.2f}"
            )
    server = results.get("clickhouse", {}).get("server_peak_mb")
    line = f"\npeak RSS: this process {peak_mb():,.0f} MB"
    if server is not None:
        line += f", the ClickHouse server {server:,.0f} MB"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000, help="spans generated at a time")
    parser.add_argument("--data", type=Path, help="keep (or reuse) the generated spans here")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per write_table")
    parser.add_argument("--repeat", type=int, default=3, help="timed report runs per store")
    parser.add_argument("--warmup", type=int, default=1, help="untimed report runs before")
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="ClickHouse: then OPTIMIZE TABLE FINAL (timed) and the report again, merged",
    )
    parser.add_argument("--clickhouse-dsn")
    parser.add_argument("--postgres-dsn")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-clickhouse", action="store_true")
    parser.add_argument(
        "--generate-only", action="store_true", help="only write the spans to --data (no store)"
    )
    args = parser.parse_args()
    if args.generate_only and args.data is None:
        parser.error("--generate-only needs --data")

    with tempfile.TemporaryDirectory(prefix="llamonitor-bench-ch-") as tmp:
        work = args.data or Path(tmp) / "spans"
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        files = spans(args.spans, args.chunk, work)
        n = rows_in(files)
        print(f"{n:,} spans ready in {time.perf_counter() - started:.1f} s ({work})", flush=True)
        if args.generate_only:
            return 0
        results = run_stores(files, n, args)
    print_results(results, n, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
