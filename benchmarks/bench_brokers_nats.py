#!/usr/bin/env python
"""End to end through NATS JetStream: producer -> stream -> ingest workers -> PostgreSQL.

The rows are the batches the sink receives for ``N`` decorated calls (made
once, untimed, by :func:`bench_storage.floor_batches`). For 1 and 2 workers
(``python -m llamonitor.cli ingest`` processes on one durable consumer,
started first and waiting on it), one producer publishes every batch
through the ``nats`` sink backend (``NatsBackend.write_table``: Arrow IPC
messages of 5,000 rows, each confirmed by its PubAck) into a fresh stream
(file storage); the clock runs from the first publish until the last row is
committed in PostgreSQL (polled by ``count(*)``). ``publish`` is the
producer's own rate in the same run, ``e2e`` the whole path.

The floor of the same run: the same batches written straight to PostgreSQL
by ``PostgresBackend.write_table`` (the sink's own write path, no broker).
The ratio ``e2e / floor`` is what the broker and the workers cost.

Usage::

    python benchmarks/bench_brokers_nats.py                 # 200,000 spans, 1 and 2 workers
    python benchmarks/bench_brokers_nats.py --spans 50000 --workers 1,2,4 --json

:func:`measure_nats` is importable (``benchmarks/bench_brokers.py`` may call it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_storage import _pg, floor_batches, machine, measure_sink

from llamonitor import StorageConfig

NATS_URL = "nats://127.0.0.1:4222"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONSUMER = "llamonitor-ingest"
TIMEOUT_SECONDS = 600.0


async def _js(url: str) -> Any:
    import nats

    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
    return nc, nc.jetstream()


async def _wait_ready(url: str, stream: str, workers: int, procs: list[Any]) -> None:
    """Until every worker has a pull request waiting on the consumer."""
    import nats.js.errors

    nc, js = await _js(url)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a worker exited early ({p.returncode})")
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await js.consumer_info(stream, CONSUMER)
                if (info.num_waiting or 0) >= workers:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("the workers did not start pulling in time")
    finally:
        await nc.close()


async def _count(dsn: str, table: str) -> int:
    with contextlib.suppress(Exception):
        rows = await _pg(dsn, f'SELECT count(*), count(DISTINCT event_id) FROM "{table}"')
        return int(rows[1])
    return 0


async def _run(
    url: str, dsn: str, batches: list[Any], workers: int, batch_messages: int
) -> dict[str, Any]:
    from llamonitor.export._nats import NatsBackend

    stream = f"BENCH_{secrets.token_hex(4).upper()}"
    subject = f"bench.{stream}"
    table = f"bench_nats_{secrets.token_hex(4)}"
    n = sum(b.num_rows for b in batches)
    backend = NatsBackend(StorageConfig(
        backend="nats", connection_string=url, stream=stream, subject=subject))
    await backend.initialize()  # creates the stream (file storage)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llamonitor.cli", "ingest",
             "--from", f"{url}/{stream}?subject={subject}", "--to", dsn, "--table", table,
             "--consumer", f"bench-{i}", "--batch", str(batch_messages)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    try:
        await _wait_ready(url, stream, workers, procs)
        t0 = time.perf_counter()
        for b in batches:
            await backend.write_table(b)
        published = time.perf_counter() - t0
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while (got := await _count(dsn, table)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {got} of {n} rows arrived")
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - t0
        rows = await _pg(dsn, f'SELECT count(*), count(DISTINCT event_id) FROM "{table}"')
    finally:
        await backend.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        nc, js = await _js(url)
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
            await js.delete_stream(f"{stream}_DEAD")
        await nc.close()
        with contextlib.suppress(Exception):
            await _pg(dsn, f'DROP TABLE IF EXISTS "{table}"')
            await _pg(dsn, f"DELETE FROM llamonitor_schema_version WHERE table_name = '{table}'")
    return {
        "workers": workers,
        "spans": n,
        "rows": int(rows[0]),
        "distinct": int(rows[1]),
        "publish_spans_per_s": n / published,
        "seconds": seconds,
        "e2e_spans_per_s": n / seconds,
        "ok": int(rows[0]) == n == int(rows[1]),
    }


def measure_nats(
    batches: list[Any],
    workers: int,
    url: str = NATS_URL,
    dsn: str = PG_DSN,
    batch_messages: int = 4,
) -> dict[str, Any]:
    """One end-to-end run (see the module's docstring)."""
    return asyncio.run(_run(url, dsn, batches, workers, batch_messages))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--trials", type=int, default=3, help="interleaved runs; medians shown")
    parser.add_argument("--batch", type=int, default=4, help="messages per worker write")
    parser.add_argument("--nats", default=NATS_URL)
    parser.add_argument("--postgres", default=PG_DSN)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w]
    batches = floor_batches(args.spans)
    trials: dict[str, list[dict[str, Any]]] = {"floor": []}
    for _ in range(args.trials):
        trials["floor"].append(measure_sink(args.postgres, batches))
        for w in counts:
            trials.setdefault(f"{w}", []).append(
                measure_nats(batches, w, args.nats, args.postgres, args.batch))

    def median(key: str, runs: list[dict[str, Any]]) -> float:
        values = sorted(r[key] for r in runs)
        return values[len(values) // 2]

    floor = median("events_per_s", trials["floor"])
    result: dict[str, Any] = {"machine": machine(), "spans": args.spans, "floor": floor,
                              "workers": {}, "trials": trials}
    for w in counts:
        runs = trials[f"{w}"]
        e2e = median("e2e_spans_per_s", runs)
        result["workers"][w] = {
            "e2e_spans_per_s": e2e,
            "publish_spans_per_s": median("publish_spans_per_s", runs),
            "ratio_to_floor": e2e / floor,
            "exactly_once": all(r["ok"] for r in runs),
        }
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    m = result["machine"]
    print(f"{m['cpu']} ({m['cpus']} CPUs), Python {m['python']}; {args.spans:,} spans, "
          f"median of {args.trials}")
    print(f"{'path':<34}{'spans/s':>12}{'publish/s':>12}{'/ floor':>9}  exactly once")
    print(f"{'PostgresBackend direct (floor)':<34}{floor:>12,.0f}")
    for w, r in result["workers"].items():
        print(f"{f'NATS -> {w} worker(s) -> PostgreSQL':<34}{r['e2e_spans_per_s']:>12,.0f}"
              f"{r['publish_spans_per_s']:>12,.0f}{r['ratio_to_floor']:>9.2f}  "
              f"{'yes' if r['exactly_once'] else 'NO'}")
    return 0 if all(r["exactly_once"] for r in result["workers"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
