# ruff: noqa: E501
"""Sections of ``bench.py`` that follow spans until they are durable.

* **throughput** -- one thread calls a decorated sync function that returns a
  fresh 1 KB text, N times as fast as it can; the clock runs until the rows are
  durable (``shutdown_monitoring()`` returned; OTel: ``provider.shutdown()``
  returned). Variants, interleaved trial by trial in a rotating order: the bare
  function; llamonitor into Parquet with each ``queue_full_policy`` (everything
  else default); OpenTelemetry's ``BatchSpanProcessor`` (the same span work as
  in the overhead section, queue large enough to drop nothing) feeding an
  exporter that discards, which is OTel's best case: any real exporter only
  adds to it. Per variant: spans/s from the first call to durable, and CPU per
  span of the whole process, all threads (``time.process_time()``), minus the
  bare function's, split into the caller's thread (``time.thread_time()``) and
  the background threads. llamonitor's rows are counted back with DuckDB.

* **burst** -- a fresh process with the default configuration: 4 threads x
  20,000 sync calls and 20,000 async calls (``asyncio.gather`` by 1,000) at
  once, each returning a fresh 1 KB text; the process exits without calling
  shutdown. Rows counted back, peak RSS growth sampled every 5 ms.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, initialize_monitoring, monitor_llm

POLICIES = ("drop_newest", "drop_oldest", "block")
TEXT = ("the model returned a detailed answer about vector databases " * 20)[:1012]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _rows(out: Path) -> tuple[int, int]:
    import duckdb

    con = duckdb.connect()
    try:
        got = con.execute(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{out}/**/*.parquet')"
        ).fetchall()
    finally:
        con.close()
    return int(got[0][0]), int(got[0][1])


def _bare(i: int) -> str:
    return TEXT + f"{i:012d}"


def _timed(calls: Any, n: int, finish: Any) -> dict[str, float]:
    gc.collect()
    cpu0, own0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    for i in range(n):
        calls(i)
    own = time.thread_time() - own0
    finish()
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
        "caller_cpu": own,
    }


def _ours(policy: str, n: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"ours-{policy}-{time.monotonic_ns()}"
    writer = initialize_monitoring(
        MonitorConfig(
            storage=StorageConfig(backend="parquet", output_dir=out),
            queue_full_policy=policy,  # type: ignore[arg-type]
            block_timeout_seconds=600.0,
            shutdown_timeout_seconds=600.0,
        )
    )
    deco = monitor_llm(operation_name="generate", measure_text=True, custom_attributes={"model": "gpt-4"})
    r = _timed(deco(_bare), n, lambda: llamonitor.shutdown_monitoring(600.0))
    h = writer.health_check()
    rows, distinct = _rows(out)
    r.update(
        rows=rows,
        distinct=distinct,
        dropped=int(h["events_dropped"]),
        spilled=int(next(iter(h["sinks"].values())).get("spilled_total", 0)),
        files=len(list(out.rglob("*.parquet"))),
    )
    return r


def _otel(n: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        exported = 0

        def export(self, spans: Any) -> Any:
            Discard.exported += len(spans)
            return SpanExportResult.SUCCESS

    Discard.exported = 0
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=2_000_000))
    start = provider.get_tracer("llamonitor-bench").start_as_current_span
    attrs = {"llm.operation_name": "generate", "llm.operation_type": "llm_call", "llm.model": "gpt-4"}

    def call(i: int) -> str:
        with start("generate", attributes=attrs) as span:
            s = _bare(i)
            span.set_attributes(
                {
                    "llm.text.char_count": len(s),
                    "llm.text.word_count": len(s.split()),
                    "llm.text.byte_size": len(s.encode("utf-8")),
                    "llm.text.line_count": s.count("\n") + (not s.endswith("\n")),
                }
            )
            return s

    r: dict[str, Any] = _timed(call, n, provider.shutdown)
    r["rows"] = r["distinct"] = Discard.exported
    r["dropped"] = n - Discard.exported
    return r


def run_throughput(quick: bool, trials: int, tmp: Path) -> dict[str, Any]:
    n = 50_000 if quick else 200_000
    variants = ["bare", "otel", *POLICIES]
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for t in range(trials):
        k = t % len(variants)
        for v in variants[k:] + variants[:k]:
            if v == "bare":
                raw[v].append(_timed(_bare, n, lambda: None))
            elif v == "otel":
                raw[v].append(_otel(n))
            else:
                raw[v].append(_ours(v, n, tmp))
    bare_cpu = _median([r["cpu"] for r in raw["bare"]])
    bare_own = _median([r["caller_cpu"] for r in raw["bare"]])
    res: dict[str, Any] = {"n": n, "trials": trials, "variants": {}}
    for v in variants[1:]:
        rs = raw[v]
        res["variants"][v] = {
            # Spans durable (counted back) per second: a variant that drops does not
            # get credit for what it dropped.
            "spans_per_s": _median([r["rows"] / r["seconds"] for r in rs]),
            "cpu_us": _median([(r["cpu"] - bare_cpu) / n * 1e6 for r in rs]),
            "caller_us": _median([(r["caller_cpu"] - bare_own) / n * 1e6 for r in rs]),
            "background_us": _median([(r["cpu"] - r["caller_cpu"]) / n * 1e6 for r in rs]),
            "rows_ok": all(r["rows"] == r["distinct"] == n for r in rs),
            "dropped": max(r["dropped"] for r in rs),
            "spilled": max(r.get("spilled", 0) for r in rs),
            "files": _median([r.get("files", 0) for r in rs]),
            "trials": rs,
        }
    otel = res["variants"]["otel"]
    for v in POLICIES:
        r = res["variants"][v]
        r["rate_vs_otel"] = r["spans_per_s"] / otel["spans_per_s"]
        r["cpu_vs_otel"] = otel["cpu_us"] / r["cpu_us"] if r["cpu_us"] > 0 else float("inf")
    return res


BURST_CHILD = textwrap.dedent(
    """
    import asyncio, atexit, json, os, threading, time
    import llamonitor
    from llamonitor import MonitorConfig, initialize_monitoring, monitor_llm

    TEXT = {text!r}
    THREADS, PER_THREAD, ASYNC = 4, {per_thread}, {per_thread}

    @monitor_llm(operation_name="burst", measure_text=True)
    def call(i):
        return TEXT + f"{{i:012d}}"

    @monitor_llm(operation_name="burst_async", measure_text=True)
    async def acall(i):
        return TEXT + f"{{i:012d}}"

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def report():  # registered before llamonitor's: runs after its exit flush
        h = writer.health_check()
        sink = next(iter(h["sinks"].values()))
        print(json.dumps({{
            "peak_growth": peak[0] - base, "received": h["events_received"],
            "written": h["events_written"], "dropped": h["events_dropped"],
            "spooled": h["events_spooled"], "spilled": sink.get("spilled_total", 0),
            "burst_seconds": burst[0], "exit_flush_seconds": time.perf_counter() - ended[0],
        }}))

    atexit.register(report)
    writer = initialize_monitoring(MonitorConfig())  # defaults; cwd is a temp dir
    call(-1); asyncio.run(acall(-2)); llamonitor.flush(30)  # warm up
    base = rss(); peak = [base]; stop = threading.Event(); burst = [0.0]; ended = [0.0]

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss())

    threading.Thread(target=sample, daemon=True).start()

    def produce(k):
        for i in range(PER_THREAD):
            call(k * PER_THREAD + i)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()

    async def main():
        for start in range(0, ASYNC, 1000):
            await asyncio.gather(*(acall(THREADS * PER_THREAD + i) for i in range(start, start + 1000)))

    asyncio.run(main())
    for t in threads:
        t.join()
    burst[0] = time.perf_counter() - t0
    ended[0] = time.perf_counter()
    # No shutdown: the exit flush writes what is still queued. The sampler keeps
    # sampling through it.
    """
)


def run_burst(quick: bool, trials: int, tmp: Path) -> dict[str, Any]:
    per_thread = 5_000 if quick else 20_000
    total = 5 * per_thread
    runs = []
    for t in range(trials):
        cwd = tmp / f"burst-{t}"
        cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
        code = BURST_CHILD.format(text=TEXT, per_thread=per_thread)
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(f"burst child failed: {proc.stderr[-2000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        rows, distinct = _rows(cwd / "monitoring_data")
        got.update(rows=rows - 2, distinct=distinct - 2)  # minus the two warm-up spans
        runs.append(got)
    return {
        "spans": total,
        "trials": trials,
        "rows_min": min(r["rows"] for r in runs),
        "all_kept": all(r["rows"] == r["distinct"] == total and r["dropped"] == 0 for r in runs),
        "peak_growth_mb": _median([r["peak_growth"] / 2**20 for r in runs]),
        "peak_growth_max_mb": max(r["peak_growth"] / 2**20 for r in runs),
        "burst_seconds": _median([r["burst_seconds"] for r in runs]),
        "exit_flush_seconds": _median([r["exit_flush_seconds"] for r in runs]),
        "spilled_max": max(r["spilled"] for r in runs),
        "runs": runs,
    }
