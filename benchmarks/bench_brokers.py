#!/usr/bin/env python
"""Scale-out throughput: producers -> Redis Streams -> ``llamonitor ingest`` workers -> PostgreSQL.

* **end to end** -- for W in ``--workers`` (1, 2, 4): W ``llamonitor ingest``
  worker processes are started on a fresh stream and a fresh table (and wait,
  registered in the consumer group), then P producer processes each make
  ``--spans / P`` decorated calls (``@monitor_llm(measure_text=True)``
  returning 1 KB of text, ``queue_full_policy="block"``: nothing dropped)
  through the real sink (``backend="redis-streams"``, the normal pipeline) and
  shut down. The clock runs from the producers' start until the group has no
  lag and nothing pending (every span committed in PostgreSQL and acked);
  then the rows are counted (rows and distinct event ids must both be N).
  Also reported: when the producers were done (their publishing rate), and
  CPU seconds per span of each party over the run (producers, workers,
  redis-server, the rest of the machine: PostgreSQL), from /proc via psutil.
* **drain** -- the same stream, already full, read again by W fresh workers
  (a new consumer group, a new table): the ingest side alone, clocked from
  the first worker's registration until drained.
* **overhead** -- in this process, the cost per call on the caller's thread
  of the function bare (no decorator) and decorated with the embedded Parquet
  store, the Redis sink and the NATS sink (``--no-nats`` to leave it out),
  interleaved trial by trial (same run, same function): the hot path does not
  depend on the sink, so the ratios should be ~1.
* **model** -- throughput(W, C) = min(W * r1, C_free / s): ``r1`` is one
  worker's drain rate (a worker is sequential: fetch, decode, COPY, wait for
  the commit, ack), ``s`` the CPU seconds per span of every party on the path
  (producers, workers, redis-server, the PostgreSQL backends serving the
  workers, matched by client port), ``C_free`` the cores other load left
  during that run. Checked against every measured point; then projected to
  an idle machine of C cores, with ``C`` workers, each capped by its own CPU
  plus its backend's per span.

Usage::

    python benchmarks/bench_brokers.py                       # 300,000 spans, W = 1, 2, 4
    python benchmarks/bench_brokers.py --spans 100000 --workers 2 --json
    python benchmarks/bench_brokers.py --redis redis://127.0.0.1:6379/0 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test

Streams and tables are made fresh and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis

PRODUCER = textwrap.dedent(
    """
    import json, sys, time
    import llamonitor
    url, stream, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    TEXT = ("the model returned a detailed answer about vector databases " * 20)[:1012]
    llamonitor.initialize_monitoring(llamonitor.MonitorConfig(
        storage=llamonitor.StorageConfig(backend="redis-streams", connection_string=url,
                                         stream=stream),
        queue_full_policy="block"))

    @llamonitor.monitor_llm(operation_name="answer", measure_text=True,
                            custom_attributes={"model": "gpt-4"})
    def answer(i):
        return TEXT + str(i)

    answer(-1)
    print("ready", flush=True)
    sys.stdin.readline()
    p0 = time.process_time()
    for i in range(n):
        answer(i)
    assert llamonitor.shutdown_monitoring(120)
    print(json.dumps({"cpu": time.process_time() - p0}), flush=True)
    """
)


def _pg(dsn: str, sql: str) -> Any:
    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def _group(client: Any, stream: str, group: str) -> dict[str, int] | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for g in groups:
        if g["name"].decode() == group:
            return {"pending": int(g["pending"]), "lag": int(g["lag"] or 0),
                    "consumers": int(g["consumers"])}
    return None


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = redis.Redis.from_url(args.redis)
        self.redis_proc = psutil.Process(int(self.client.info("server")["process_id"]))
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-brokers-"))
        self.streams: list[str] = []
        self.tables: list[str] = []
        self.pg_port = urlsplit(args.postgres).port or 5432

    def pg_cpu(self, workers: list[psutil.Process]) -> float:
        """CPU seconds of the PostgreSQL backends serving ``workers`` (matched
        by the workers' client ports; the server must be on this machine)."""
        ports = set()
        for w in workers:
            try:
                ports.update(c.laddr.port for c in w.net_connections("tcp")
                             if c.raddr and c.raddr.port == self.pg_port)
            except psutil.Error:
                pass
        if not ports:
            return 0.0
        rows = _pg(self.args.postgres, "SELECT pid FROM pg_stat_activity "
                   f"WHERE client_port IN ({', '.join(map(str, ports))})")
        procs = []
        for r in rows:
            try:
                procs.append(psutil.Process(int(r[0])))
            except psutil.Error:
                pass
        return _cpu(procs)

    def workers(self, stream: str, table: str, group: str, n: int) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i in range(n):
            cmd = [
                sys.executable, "-m", "llamonitor.cli", "ingest",
                "--from", f"{self.args.redis}/{stream}", "--to", self.args.postgres,
                "--table", table, "--group", group, "--consumer", f"w{i}",
                "--batch", str(self.args.batch),
            ]  # fmt: skip
            log = (self.tmp / f"{table}-w{i}.log").open("wb")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        return procs

    def wait_drained(self, stream: str, group: str) -> None:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            g = _group(self.client, stream, group)
            if g is not None and g["lag"] == 0 and g["pending"] == 0:
                return
            time.sleep(0.02)
        raise RuntimeError(f"not drained within {self.args.timeout} s: {g}")

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)

    def count(self, table: str) -> tuple[int, int]:
        row = _pg(self.args.postgres,
                  f'SELECT count(*), count(DISTINCT event_id) FROM "{table}"')[0]
        return int(row[0]), int(row[1])

    def end_to_end(self, w: int) -> dict[str, Any]:
        stream = f"bench-{secrets.token_hex(4)}"
        table = f"bench_{secrets.token_hex(4)}"
        self.streams.append(stream)
        self.tables.append(table)
        group = "llamonitor-ingest"
        workers = self.workers(stream, table, group, w)
        deadline = time.monotonic() + 60
        while (_group(self.client, stream, group) or {}).get("consumers", 0) < w:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.02)
        n, p = self.args.spans, self.args.producers
        producers = [
            subprocess.Popen(
                [sys.executable, "-c", PRODUCER, self.args.redis, stream, str(n // p)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            for _ in range(p)
        ]
        for x in producers:  # started, connected, warmed up
            assert x.stdout is not None and x.stdout.readline().strip() == b"ready"
        wprocs = [psutil.Process(x.pid) for x in workers]
        cpu0 = {"workers": _cpu(wprocs), "redis": _cpu([self.redis_proc]),
                "pg": self.pg_cpu(wprocs)}
        machine0 = psutil.cpu_times()
        t0 = time.perf_counter()
        for x in producers:
            assert x.stdin is not None
            x.stdin.write(b"go\n")
            x.stdin.flush()
        reports = [json.loads(x.communicate(timeout=self.args.timeout)[0]) for x in producers]
        produced = time.perf_counter() - t0
        if any(x.returncode for x in producers):
            raise RuntimeError("a producer failed")
        self.wait_drained(stream, group)
        elapsed = time.perf_counter() - t0
        machine1 = psutil.cpu_times()
        cpu1 = {"workers": _cpu(wprocs), "redis": _cpu([self.redis_proc]),
                "pg": self.pg_cpu(wprocs)}
        self.stop(workers)
        rows, distinct = self.count(table)
        busy = _busy(machine1) - _busy(machine0)
        producers_cpu = sum(r["cpu"] for r in reports)
        workers_cpu = cpu1["workers"] - cpu0["workers"]
        redis_cpu = cpu1["redis"] - cpu0["redis"]
        pg_cpu = cpu1["pg"] - cpu0["pg"]
        ours = producers_cpu + workers_cpu + redis_cpu + pg_cpu
        return {
            "workers": w,
            "spans": n // p * p + p,  # and one warm-up call each
            "rows": rows,
            "distinct": distinct,
            "seconds": elapsed,
            "spans_per_s": rows / elapsed,
            "producers_done_s": produced,
            "publish_spans_per_s": n / produced,
            "cpu_us_per_span": {
                "producers": producers_cpu / n * 1e6,
                "workers": workers_cpu / n * 1e6,
                "redis": redis_cpu / n * 1e6,
                "postgres": pg_cpu / n * 1e6,
                "total": ours / n * 1e6,
            },
            "others_busy_cores": max(0.0, busy - ours) / elapsed,
            "stream": stream,
        }

    def drain(self, stream: str, w: int) -> dict[str, Any]:
        table = f"bench_{secrets.token_hex(4)}"
        self.tables.append(table)
        group = f"drain-{secrets.token_hex(3)}"
        self.client.xgroup_create(stream, group, id="0")
        workers = self.workers(stream, table, group, w)
        while not (_group(self.client, stream, group) or {}).get("consumers"):
            time.sleep(0.005)
        t0 = time.perf_counter()
        wprocs = [psutil.Process(p.pid) for p in workers]
        c0, pg0, r0 = _cpu(wprocs), self.pg_cpu(wprocs), _cpu([self.redis_proc])
        m0 = _busy(psutil.cpu_times())
        self.wait_drained(stream, group)
        elapsed = time.perf_counter() - t0
        c1, pg1, r1 = _cpu(wprocs), self.pg_cpu(wprocs), _cpu([self.redis_proc])
        m1 = _busy(psutil.cpu_times())
        self.stop(workers)
        rows, distinct = self.count(table)
        return {"workers": w, "rows": rows, "distinct": distinct, "seconds": elapsed,
                "spans_per_s": rows / elapsed, "worker_cpu_us_per_span": (c1 - c0) / rows * 1e6,
                "postgres_cpu_us_per_span": (pg1 - pg0) / rows * 1e6,
                "redis_cpu_us_per_span": (r1 - r0) / rows * 1e6,
                "others_busy_cores": max(0.0, (m1 - m0) - (c1 - c0) - (pg1 - pg0) - (r1 - r0))
                / elapsed}

    def cleanup(self) -> None:
        for s in self.streams:
            self.client.delete(s, s + ":dead")
        for t in self.tables:
            try:
                _pg(self.args.postgres, f'DROP TABLE IF EXISTS "{t}"')
            except Exception:
                pass


def model(out: dict[str, Any], cores: int) -> dict[str, Any]:
    """throughput(W, C) = min(W * r1, C_free / s): ``r1`` one worker's drain
    rate (a worker is sequential: fetch, decode, COPY and wait for the commit,
    ack), ``s`` the CPU seconds per span of every party on the path, ``C_free``
    the cores not taken by other load during the run. Checked against every
    measured point; then the same for an idle machine of C cores."""
    one = out["drain"][0]
    r1 = one["spans_per_s"]
    ingest = (one["worker_cpu_us_per_span"] + one["postgres_cpu_us_per_span"]
              + one["redis_cpu_us_per_span"]) / 1e6
    whole = statistics.median(r["cpu_us_per_span"]["total"] for r in out["end_to_end"]) / 1e6
    checked = []
    for what, rows, cost in (("drain", out["drain"], ingest),
                             ("end to end", out["end_to_end"], whole)):
        for r in rows:
            free = max(0.25, cores - r["others_busy_cores"])
            checked.append({"workers": r["workers"], "what": what, "measured": r["spans_per_s"],
                            "predicted": min(r["workers"] * r1, free / cost),
                            "free_cores": free})
    # Idle: one worker's cap is its own CPU plus its backend's (they take turns).
    per_worker = 1e6 / (one["worker_cpu_us_per_span"] + one["postgres_cpu_us_per_span"])
    idle = {c: min(c * per_worker, c / whole) for c in (2, 4, 8, 16)}
    return {"one_worker_spans_per_s": r1, "one_idle_worker_spans_per_s": per_worker,
            "ingest_cpu_us_per_span": ingest * 1e6,
            "all_cpu_us_per_span": whole * 1e6, "checked": checked,
            "idle_machine_end_to_end": idle}


def _busy(t: Any) -> float:
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def overhead(args: argparse.Namespace, trials: int = 5, calls: int = 20_000) -> dict[str, Any]:
    """ns per call on the caller's thread: the function bare (no decorator),
    and decorated with the embedded Parquet store, the Redis sink and the NATS
    sink configured, interleaved trial by trial (same run, same function).
    ``overhead_ns``: each sink's median minus the bare call's; ``ratio_*``
    against Parquet (the hot path does not depend on the sink: ~1)."""
    import llamonitor

    text = ("the model returned a detailed answer about vector databases " * 20)[:1012]
    kinds = ["bare", "parquet", "redis-streams"] + ([] if args.no_nats else ["nats"])
    results: dict[str, list[float]] = {k: [] for k in kinds}
    tag = secrets.token_hex(4)
    stream, nats_stream = f"bench-oh-{tag}", f"BENCH_OH_{tag.upper()}"

    def plain(i: int) -> str:
        return text

    with tempfile.TemporaryDirectory() as d:
        for trial in range(trials):
            order = kinds[trial % len(kinds):] + kinds[:trial % len(kinds)]
            for kind in order:
                fn: Any = plain
                if kind != "bare":
                    if kind == "parquet":
                        storage = llamonitor.StorageConfig(backend="parquet", output_dir=Path(d))
                    elif kind == "nats":
                        storage = llamonitor.StorageConfig(
                            backend="nats", connection_string=args.nats, stream=nats_stream,
                            subject=f"bench.{nats_stream}", options={"storage": "memory"})
                    else:
                        storage = llamonitor.StorageConfig(
                            backend="redis-streams", connection_string=args.redis, stream=stream)
                    llamonitor.initialize_monitoring(llamonitor.MonitorConfig(
                        storage=storage, queue_full_policy="block"))
                    fn = llamonitor.monitor_llm(operation_name="answer", measure_text=True,
                                                custom_attributes={"model": "gpt-4"})(plain)
                for i in range(500):
                    fn(i)
                t0 = time.thread_time_ns()
                for i in range(calls):
                    fn(i)
                per = (time.thread_time_ns() - t0) / calls
                if kind != "bare":
                    assert llamonitor.shutdown_monitoring(60)
                results[kind].append(per)
    redis.Redis.from_url(args.redis).delete(stream)
    if not args.no_nats:
        _drop_nats_stream(args.nats, nats_stream)
    med = {k: statistics.median(v) for k, v in results.items()}
    out: dict[str, Any] = {
        "ns_per_call": med,
        "overhead_ns": {k: v - med["bare"] for k, v in med.items() if k != "bare"},
        "ratio_redis_to_parquet": med["redis-streams"] / med["parquet"],
        "trials": results,
    }
    if "nats" in med:
        out["ratio_nats_to_parquet"] = med["nats"] / med["parquet"]
    return out


def _drop_nats_stream(url: str, name: str) -> None:
    async def go() -> None:
        import nats

        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
        try:
            await nc.jetstream().delete_stream(name)
        except Exception:
            pass
        finally:
            await nc.close()

    asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=64, help="--batch of the workers")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222",
                        help="NATS server for the overhead's NATS sink")
    parser.add_argument("--no-nats", action="store_true", help="overhead without the NATS sink")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    run = Run(args)
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "end_to_end": [], "drain": [],
    }
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            e2e = run.end_to_end(w)
            out["end_to_end"].append(e2e)
            out["drain"].append(run.drain(e2e["stream"], w))
            if not args.json:
                print(f"W={w}: end to end {e2e['spans_per_s']:,.0f} spans/s "
                      f"(publish {e2e['publish_spans_per_s']:,.0f}/s), drain "
                      f"{out['drain'][-1]['spans_per_s']:,.0f} spans/s; "
                      f"rows {e2e['rows']}/{e2e['distinct']} of {e2e['spans']}; cpu us/span "
                      + ", ".join(f"{k} {v:.1f}" for k, v in e2e["cpu_us_per_span"].items()),
                      flush=True)
    finally:
        run.cleanup()
    if out["drain"] and out["drain"][0]["workers"] == 1:
        out["model"] = model(out, os.cpu_count() or 1)
        if not args.json:
            m = out["model"]
            print(f"model: one worker {m['one_worker_spans_per_s']:,.0f} spans/s; CPU per span: "
                  f"ingest side {m['ingest_cpu_us_per_span']:.1f} us, whole path "
                  f"{m['all_cpu_us_per_span']:.1f} us")
            for row in m["checked"]:
                print(f"  W={row['workers']} {row['what']}: measured {row['measured']:,.0f}, "
                      f"predicted {row['predicted']:,.0f} ({row['free_cores']:.2f} cores free "
                      f"of others' load)")
            print("  on an idle machine: " + ", ".join(
                f"{c} cores -> {v:,.0f}/s" for c, v in m["idle_machine_end_to_end"].items()))
    if not args.no_overhead:
        out["overhead"] = overhead(args)
        if not args.json:
            o = out["overhead"]
            print("overhead, ns per call on the caller's thread: "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in o["ns_per_call"].items())
                  + "; decorator's overhead over the bare call: "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in o["overhead_ns"].items())
                  + f"; ratio redis/parquet {o['ratio_redis_to_parquet']:.2f}"
                  + (f", nats/parquet {o['ratio_nats_to_parquet']:.2f}"
                     if "ratio_nats_to_parquet" in o else ""))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
