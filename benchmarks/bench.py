#!/usr/bin/env python
# ruff: noqa: E501, RUF001
"""llamonitor benchmark: hot-path overhead vs OpenTelemetry, end-to-end
throughput to Parquet, and memory under overload.

Usage::

    python benchmarks/bench.py            # full run, about 2 minutes
    python benchmarks/bench.py --quick    # smoke run, about 20 seconds
    python benchmarks/bench.py --json out.json

Sections (select with ``--only overhead,throughput,burst,memory,integrations``):

* **overhead** -- time per call of the same function bare, decorated with
  ``@monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})``
  (Parquet backend in a temp dir) and wrapped in an OpenTelemetry SDK span
  doing the same work (``start_as_current_span``, the same attributes, the
  four text metrics computed in the span, ``BatchSpanProcessor`` feeding an
  exporter that discards). Variants of one shape are interleaved within each
  trial, in a rotating order; figures are medians over trials of
  per-trial paired differences (monitored - bare). Two modes:

  - ``hot path``: the background threads are parked during the timed loop
    (batch thresholds and flush intervals set huge) and the queues are drained
    (``llamonitor.flush()`` / ``provider.force_flush()``) *outside* the timed
    region before every trial: the cost the caller's thread pays, alone.
  - ``concurrent``: default batching (llamonitor ``batch_size=100``, 5 s
    interval; OTel 512 / 5 s), no flush between trials: the worker converts
    and writes while the caller runs, as in production. On a 2-core machine
    with the GIL this includes the worker's contention with the caller.

* **throughput** -- durable end to end, beside OpenTelemetry's
  ``BatchSpanProcessor`` in the same run: spans/s from the first call until
  durable, and CPU per span of the whole process (all threads), for each
  ``queue_full_policy`` (see ``_durable.py``).

* **burst** -- the default configuration absorbing 100,000 spans of 1 KB
  from 4 threads and asyncio at once, in a process that exits without
  shutdown: spans kept, peak RSS growth (see ``_durable.py``).

* **memory** -- a sink far slower than the producers, ``max_queue_size=10_000``,
  ``drop_newest``: peak RSS growth sampled every 0.25 s, drops counted, and
  the accounting identity ``received == written + failed + dropped + pending``.
  A second variant returns a fresh 50 MB string per call.

* **integrations** -- ``client.chat.completions.create`` of an OpenAI client,
  bare and with ``instrument_openai(client)``, interleaved trials (hot-path
  mode: the queue drained between trials, outside the timing). *prebuilt*:
  ``create`` returns prebuilt SDK objects (a ``ChatCompletion``; an
  ``openai.Stream`` over prebuilt chunks), so only the wrapper's cost
  remains; streams of 3 and 103 chunks give the cost per chunk. *MockTransport*:
  the SDK's whole path over an ``httpx2.MockTransport``, for scale.

Only the public API and ``health_check()`` counters are used, so the script
survives refactors of the internals; a section that fails reports its error
and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _durable

import llamonitor
from llamonitor import (
    MonitorConfig,
    StorageBackend,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
    shutdown_monitoring,
)

try:
    from rich.console import Console
    from rich.table import Table

    _console: Any = Console(width=None if sys.stdout.isatty() else 180)
except Exception:  # pragma: no cover - rich is a dependency, but be robust
    _console = None
    Table = None  # type: ignore[assignment,misc]


def say(msg: str = "") -> None:
    if _console is not None:
        _console.print(msg, highlight=False)
    else:
        print(msg)


def show(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    if _console is not None and Table is not None:
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        _console.print(t)
    else:
        print(title)
        print(" | ".join(columns))
        for r in rows:
            print(" | ".join(str(x) for x in r))


# --------------------------------------------------------------------------------------
# Workload: realistic text
# --------------------------------------------------------------------------------------

_WORDS = [
    "the",
    "model",
    "returned",
    "a",
    "detailed",
    "answer",
    "about",
    "vector",
    "databases",
    "latency",
    "tokens",
    "streaming",
    "context",
    "window",
    "retrieval",
    "embeddings",
    "prompt",
    "evaluation",
    "agent",
    "tool",
    "call",
    "reasoning",
    "summary",
    "response",
    "quality",
    "cost",
    "budget",
    "cache",
    "hit",
    "ratio",
]


def make_text(n_chars: int, line_every: int = 12) -> str:
    """ASCII prose-like text of exactly ``n_chars`` characters, with newlines."""
    out: list[str] = []
    size = 0
    i = 0
    while size < n_chars:
        w = _WORDS[(i * 7 + i // 3) % len(_WORDS)]
        sep = "\n" if i % line_every == line_every - 1 else " "
        out.append(w + sep)
        size += len(w) + 1
        i += 1
    return "".join(out)[:n_chars]


TEXT_1K = make_text(1024)
TEXT_4K = make_text(4096)
TEXT_SHORT = "Sure, here is the answer: 42."
CHUNKS_20 = [TEXT_1K[i * 52 : (i + 1) * 52] if i < 19 else TEXT_1K[19 * 52 :] for i in range(20)]
assert "".join(CHUNKS_20) == TEXT_1K

MODEL_ATTRS = {"model": "gpt-4"}


def otel_text_metrics(s: str) -> dict[str, int]:
    """The same four metrics llamonitor stores (word count = ``len(s.split())``)."""
    return {
        "llm.text.char_count": len(s),
        "llm.text.word_count": len(s.split()),
        "llm.text.byte_size": len(s.encode("utf-8")),
        "llm.text.line_count": 0 if not s else s.count("\n") + (0 if s.endswith("\n") else 1),
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_us(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


# --------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "llamonitor": getattr(llamonitor, "__version__", "?"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "pyarrow": _version("pyarrow"),
        "duckdb": _version("duckdb"),
    }


# --------------------------------------------------------------------------------------
# Helpers around llamonitor's lifecycle
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"llamonitor-bench-{prefix}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def health(writer: Any) -> dict[str, Any]:
    try:
        return dict(writer.health_check())
    except Exception as exc:  # a refactor in flight must not kill the benchmark
        return {"error": repr(exc)}


def accounting(h: dict[str, Any]) -> dict[str, Any]:
    """received == written + failed + dropped + pending (queue + buffers)."""
    received = int(h.get("events_received", 0))
    written = int(h.get("events_written", 0))
    failed = int(h.get("events_failed", 0))
    dropped = int(h.get("events_dropped", 0))
    pending = int(h.get("queue_size", 0)) + int(h.get("buffer_size", 0))
    return {
        "received": received,
        "written": written,
        "failed": failed,
        "dropped": dropped,
        "dropped_by_reason": h.get("dropped"),
        "pending": pending,
        "balanced": received == written + failed + dropped + pending,
    }


def stop_monitoring(timeout: float = 60.0) -> None:
    with contextlib.suppress(Exception):
        shutdown_monitoring(timeout)


# --------------------------------------------------------------------------------------
# Section 1: overhead per call
# --------------------------------------------------------------------------------------


def make_otel(mode: str) -> tuple[Any, Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class _Discard(SpanExporter):
        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: Any) -> Any:
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    exporter = _Discard()
    if mode == "hot path":
        bsp = BatchSpanProcessor(
            exporter,
            max_queue_size=2_000_000,
            max_export_batch_size=2_000_000,
            schedule_delay_millis=3_600_000,
        )
    else:  # SDK defaults (512 per batch, 5 s), queue large enough not to drop
        bsp = BatchSpanProcessor(exporter, max_queue_size=2_000_000)
    provider = TracerProvider()
    provider.add_span_processor(bsp)
    return provider, provider.get_tracer("llamonitor-bench"), exporter


def llamonitor_config(mode: str, out: Path) -> MonitorConfig:
    if mode == "hot path":
        storage = StorageConfig(
            backend="parquet", output_dir=out, batch_size=10_000_000, flush_interval_seconds=3600.0
        )
    else:  # library defaults for batching
        storage = StorageConfig(backend="parquet", output_dir=out)
    return MonitorConfig(
        storage=storage,
        max_queue_size=1_000_000,
        max_queue_bytes=4 * 1024**3,
        queue_full_policy="drop_newest",
        shutdown_timeout_seconds=120.0,
    )


def build_shapes(tracer: Any) -> dict[str, dict[str, Any]]:
    """For each shape: the bare, llamonitor and OTel callables and how to drive them."""
    session_id = "3f2a9c1e5b7d4f608a1b2c3d4e5f6a7b"
    span_attrs = {
        "llm.operation_name": "generate",
        "llm.operation_type": "llm_call",
        "session.id": session_id,
        "llm.model": "gpt-4",
    }
    deco = monitor_llm(
        operation_name="generate", measure_text=True, custom_attributes=dict(MODEL_ATTRS)
    )
    clock = time.perf_counter_ns
    start_span = tracer.start_as_current_span

    # -- async function returning a str
    async def a_str() -> str:
        return TEXT_1K

    async def a_str_otel() -> str:
        with start_span("generate", attributes=span_attrs) as span:
            r = await a_str()
            span.set_attributes(otel_text_metrics(r))
            return r

    # -- async function returning a dict
    async def a_dict() -> dict[str, str]:
        return {"text": TEXT_1K}

    async def a_dict_otel() -> dict[str, str]:
        with start_span("generate", attributes=span_attrs) as span:
            r = await a_dict()
            span.set_attributes(otel_text_metrics(r["text"]))
            return r

    # -- sync function
    def s_str() -> str:
        return TEXT_1K

    def s_str_otel() -> str:
        with start_span("generate", attributes=span_attrs) as span:
            r = s_str()
            span.set_attributes(otel_text_metrics(r))
            return r

    # -- sync generator, 20 chunks
    def gen() -> Iterator[str]:
        yield from CHUNKS_20

    def gen_otel() -> Iterator[str]:
        with start_span("generate", attributes=span_attrs) as span:
            t0 = clock()
            first = 0
            items = 0
            chunks: list[str] = []
            for item in gen():
                if items == 0:
                    first = clock()
                items += 1
                chunks.append(item)
                yield item
            attrs: dict[str, Any] = otel_text_metrics("".join(chunks))
            attrs["llm.stream.item_count"] = items
            attrs["llm.stream.time_to_first_token_ms"] = (first - t0) / 1e6
            span.set_attributes(attrs)

    # -- async generator, 20 chunks
    async def agen() -> Any:
        for c in CHUNKS_20:
            yield c

    async def agen_otel() -> Any:
        with start_span("generate", attributes=span_attrs) as span:
            t0 = clock()
            first = 0
            items = 0
            chunks: list[str] = []
            async for item in agen():
                if items == 0:
                    first = clock()
                items += 1
                chunks.append(item)
                yield item
            attrs: dict[str, Any] = otel_text_metrics("".join(chunks))
            attrs["llm.stream.item_count"] = items
            attrs["llm.stream.time_to_first_token_ms"] = (first - t0) / 1e6
            span.set_attributes(attrs)

    return {
        "async fn -> 1 KB str": {
            "kind": "async",
            "bare": a_str,
            "ours": deco(a_str),
            "otel": a_str_otel,
            "weight": 1,
        },
        "async fn -> {'text': 1 KB}": {
            "kind": "async",
            "bare": a_dict,
            "ours": deco(a_dict),
            "otel": a_dict_otel,
            "weight": 1,
        },
        "sync fn -> 1 KB str": {
            "kind": "sync",
            "bare": s_str,
            "ours": deco(s_str),
            "otel": s_str_otel,
            "weight": 1,
        },
        "sync gen, 20 chunks (1 KB)": {
            "kind": "gen",
            "bare": gen,
            "ours": deco(gen),
            "otel": gen_otel,
            "weight": 4,
        },
        "async gen, 20 chunks (1 KB)": {
            "kind": "agen",
            "bare": agen,
            "ours": deco(agen),
            "otel": agen_otel,
            "weight": 4,
        },
    }


async def _time_async(f: Callable[[], Any], n: int) -> int:
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        await f()
    return clock() - t


async def _time_agen(f: Callable[[], Any], n: int) -> int:
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        async for _x in f():
            pass
    return clock() - t


def _time_sync(f: Callable[[], Any], n: int) -> int:
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        f()
    return clock() - t


def _time_gen(f: Callable[[], Any], n: int) -> int:
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        for _x in f():
            pass
    return clock() - t


def run_overhead(quick: bool, trials: int) -> dict[str, Any]:
    n_base = 5_000 if quick else 20_000
    modes = ["hot path", "concurrent"]
    result: dict[str, Any] = {"n_calls_per_trial": n_base, "trials": trials, "modes": {}}
    loop = asyncio.new_event_loop()
    try:
        for mode in modes:
            with temp_dir("overhead") as out:
                provider, tracer, exporter = make_otel(mode)
                writer = initialize_monitoring(llamonitor_config(mode, out))
                shapes = build_shapes(tracer)
                mres: dict[str, Any] = {}
                started = 0  # OTel spans started
                try:
                    for name, sh in shapes.items():
                        n = max(500, n_base // sh["weight"])
                        per: dict[str, list[float]] = {"bare": [], "ours": [], "otel": []}
                        drain: dict[str, list[float]] = {"ours": [], "otel": []}
                        drain_cpu: dict[str, list[float]] = {"ours": [], "otel": []}
                        backlog: list[int] = []
                        kind = sh["kind"]
                        # warm up every variant once (imports, caches, first-file creation)
                        for v in ("bare", "ours", "otel"):
                            _drive(loop, kind, sh[v], 200)
                            if v == "otel":
                                started += 200
                        llamonitor.flush()
                        provider.force_flush()
                        variants = ["bare", "ours", "otel"]
                        for t in range(trials):
                            order = variants[t % 3 :] + variants[: t % 3]
                            for v in order:
                                gc.collect()
                                ns = _drive(loop, kind, sh[v], n)
                                per[v].append(ns / n / 1000.0)
                                if v == "otel":
                                    started += n
                                if mode == "hot path":
                                    # Drain outside the timed loop, so the next trial starts
                                    # clean; timed on its own: the background cost per event
                                    # (convert + write Parquet / hand spans to the exporter).
                                    # Also its CPU, all threads (the caller only waits meanwhile).
                                    t = time.perf_counter_ns()
                                    c = time.process_time()
                                    if v == "ours":
                                        llamonitor.flush(120.0)
                                    elif v == "otel":
                                        provider.force_flush()
                                    if v in drain:
                                        drain[v].append((time.perf_counter_ns() - t) / n / 1000.0)
                                        drain_cpu[v].append((time.process_time() - c) / n * 1e6)
                                elif v == "ours":
                                    backlog.append(int(health(writer).get("queue_size", 0)))
                        added_ours = [o - b for o, b in zip(per["ours"], per["bare"], strict=True)]
                        added_otel = [o - b for o, b in zip(per["otel"], per["bare"], strict=True)]
                        ao, at = median(added_ours), median(added_otel)
                        mres[name] = {
                            "calls_per_trial": n,
                            "bare_us": median(per["bare"]),
                            "ours_us": median(per["ours"]),
                            "otel_us": median(per["otel"]),
                            "ours_added_us": ao,
                            "otel_added_us": at,
                            "ratio": (at / ao) if ao > 0 else float("inf"),
                            "trials_us": per,
                            **({"ours_backlog_after_trial": backlog} if backlog else {}),
                            **(
                                {
                                    "ours_drain_us": median(drain["ours"]),
                                    "otel_drain_us": median(drain["otel"]),
                                    "drain_trials_us": drain,
                                    "ours_drain_cpu_us": median(drain_cpu["ours"]),
                                    "otel_drain_cpu_us": median(drain_cpu["otel"]),
                                    # Caller (added wall time per call) + background CPU per event.
                                    "ours_total_us": ao + median(drain_cpu["ours"]),
                                    "otel_total_us": at + median(drain_cpu["otel"]),
                                }
                                if drain["ours"]
                                else {}
                            ),
                        }
                    flushed = bool(llamonitor.flush(120.0))
                    provider.force_flush()
                    h = health(writer)
                    mres["_check"] = {
                        "flushed": flushed,
                        "llamonitor": accounting(h),
                        "otel_spans_started": started,
                        "otel_spans_exported": exporter.exported,
                    }
                finally:
                    stop_monitoring()
                    with contextlib.suppress(Exception):
                        provider.shutdown()
                result["modes"][mode] = mres
    finally:
        loop.close()
    return result


def _drive(loop: asyncio.AbstractEventLoop, kind: str, f: Callable[[], Any], n: int) -> int:
    if kind == "async":
        return loop.run_until_complete(_time_async(f, n))
    if kind == "agen":
        return loop.run_until_complete(_time_agen(f, n))
    if kind == "gen":
        return _time_gen(f, n)
    return _time_sync(f, n)


def print_overhead(res: dict[str, Any]) -> None:
    for mode, mres in res["modes"].items():
        rows = []
        hot = mode == "hot path"
        for name, r in mres.items():
            if name.startswith("_"):
                continue
            row = [
                name,
                fmt_us(r["bare_us"]),
                fmt_us(r["ours_us"]),
                fmt_us(r["otel_us"]),
                fmt_us(r["ours_added_us"]),
                fmt_us(r["otel_added_us"]),
                f"{r['ratio']:.1f}x",
                "PASS" if r["ratio"] >= 8 else "FAIL",
            ]
            if hot:
                total_ratio = r["otel_total_us"] / r["ours_total_us"]
                row += [
                    fmt_us(r.get("ours_drain_us", float("nan"))),
                    fmt_us(r.get("otel_drain_us", float("nan"))),
                    f"{r['ours_total_us']:.2f} / {r['otel_total_us']:.2f}",
                    f"{total_ratio:.1f}x {'PASS' if total_ratio >= 6 else 'FAIL'}",
                ]
            rows.append(row)
        cols = [
            "shape",
            "bare",
            "llamonitor",
            "OTel SDK",
            "ours added",
            "OTel added",
            "OTel/ours",
            "≥8x",
        ]
        if hot:
            cols += ["ours worker/event", "OTel BSP/event", "total CPU ours / OTel", "≥6x"]
        show(
            f"Overhead per call, mode = {mode} (µs, median of {res['trials']} interleaved trials)",
            cols,
            rows,
        )
        if hot:
            say(
                "  worker/event, BSP/event: the drain after each trial (flush / force_flush), timed "
                "apart and divided by the calls: the background thread's cost per event. Total CPU: "
                "the caller's added time plus the CPU of every thread during the drain, per span."
            )
        chk = mres.get("_check", {})
        lm = chk.get("llamonitor", {})
        say(
            f"  llamonitor: received={lm.get('received')} written={lm.get('written')} "
            f"dropped={lm.get('dropped')} pending={lm.get('pending')} balanced={lm.get('balanced')}; "
            f"OTel: started={chk.get('otel_spans_started')} exported={chk.get('otel_spans_exported')}"
        )
        if mode == "concurrent":
            bl = {
                n: r.get("ours_backlog_after_trial")
                for n, r in mres.items()
                if not n.startswith("_")
            }
            say(f"  llamonitor queue left after each timed trial (carried into the next): {bl}")


# --------------------------------------------------------------------------------------
# Section 2: throughput to durable rows, CPU per span (all threads), bursts
# (the runs are in _durable.py)
# --------------------------------------------------------------------------------------

CPU_RATIO_TARGET = 6.0  # total CPU per span: at most 1/6 of OpenTelemetry's
RATE_RATIO_TARGET = 4.0  # durable spans/s: at least 4x OpenTelemetry's BatchSpanProcessor
RATE_TARGET = 100_000  # durable spans/s (1 KB text, Parquet), whatever the queue policy
BURST_MEMORY_TARGET_MB = 128


def run_throughput(quick: bool, trials: int) -> dict[str, Any]:
    with temp_dir("throughput") as tmp:
        return _durable.run_throughput(quick, max(3, trials // 2), tmp)


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_throughput(res: dict[str, Any]) -> None:
    rows = []
    otel = res["variants"]["otel"]
    for name, r in res["variants"].items():
        ours = name != "otel"
        rows.append(
            [
                "OTel BatchSpanProcessor (discarding exporter)" if not ours else f"llamonitor, {name}",
                f"{r['spans_per_s']:,.0f}",
                f"{r['spans_per_s'] / otel['spans_per_s']:.1f}x",
                fmt_us(r["cpu_us"]),
                fmt_us(r["caller_us"]),
                fmt_us(r["background_us"]),
                f"{otel['cpu_us'] / r['cpu_us']:.1f}x" if r["cpu_us"] > 0 else "-",
                f"{r['dropped']:,}",
                "ok" if r["rows_ok"] else "MISMATCH",
                (
                    f"{_pf(r['spans_per_s'] >= RATE_TARGET)} ≥100k/s, "
                    f"{_pf(r['rate_vs_otel'] >= RATE_RATIO_TARGET)} ≥4x rate, "
                    f"{_pf(r['cpu_vs_otel'] >= CPU_RATIO_TARGET)} ≤1/6 CPU"
                )
                if ours
                else "",
            ]
        )
    show(
        f"Durable e2e: {res['n']:,} calls returning a fresh 1 KB text, one thread, until durable "
        f"(medians of {res['trials']} interleaved trials; CPU = all threads, minus the bare function's)",
        [
            "variant",
            "spans/s",
            "vs OTel",
            "CPU µs/span",
            "caller",
            "background",
            "OTel CPU / ours",
            "dropped",
            "rows",
            "targets",
        ],
        rows,
    )
    say(
        "  OTel's rate is from the first call to provider.shutdown() returning, into an exporter "
        "that discards (OTel's best case); llamonitor's to shutdown_monitoring() returning, rows "
        "durable in Parquet and counted back with DuckDB."
    )


def run_burst(quick: bool, trials: int) -> dict[str, Any]:
    with temp_dir("burst") as tmp:
        return _durable.run_burst(quick, max(3, trials // 2), tmp)


def print_burst(res: dict[str, Any]) -> None:
    ok = res["all_kept"] and res["peak_growth_max_mb"] < BURST_MEMORY_TARGET_MB
    show(
        f"Burst with the default configuration: {res['spans']:,} spans of 1 KB text from 4 threads "
        f"and asyncio at once, exit without shutdown ({res['trials']} runs, fresh processes)",
        ["kept (fewest)", "peak RSS growth MB (median / max)", "burst s", "exit flush s",
         "spilled to the spool (max)", "target"],
        [
            [
                f"{res['rows_min']:,} of {res['spans']:,}",
                f"{res['peak_growth_mb']:.0f} / {res['peak_growth_max_mb']:.0f}",
                f"{res['burst_seconds']:.2f}",
                f"{res['exit_flush_seconds']:.2f}",
                f"{res['spilled_max']:,}",
                f"{_pf(ok)} (none lost, < {BURST_MEMORY_TARGET_MB} MB)",
            ]
        ],
    )


# --------------------------------------------------------------------------------------
# Section 3: memory under overload
# --------------------------------------------------------------------------------------


class SlowBackend(StorageBackend):
    """A sink much slower than the producers: 50 ms + 0.5 ms per row per write
    (at most ~2,000 rows/s). ``fast = True`` makes it drain quickly at the end."""

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self.rows = 0
        self.writes = 0
        self.fast = False

    def write_table(self, table: Any) -> None:  # type: ignore[override]
        n = table.num_rows
        if not self.fast:
            time.sleep(0.05 + 0.0005 * n)
        self.rows += n
        self.writes += 1

    def write_batch(self, events: Any) -> None:  # type: ignore[override]
        if not self.fast:
            time.sleep(0.05 + 0.0005 * len(events))
        self.rows += len(events)
        self.writes += 1


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _overload(
    label: str,
    make_result: Callable[[int], str],
    text_len: int,
    seconds: float,
    producers: int,
    max_queue_size: int,
    warmup: int = 50,
) -> dict[str, Any]:
    backend = SlowBackend()
    cfg = MonitorConfig(
        storage=StorageConfig(backend=backend),
        max_queue_size=max_queue_size,
        queue_full_policy="drop_newest",
        shutdown_timeout_seconds=120.0,
    )
    gc.collect()
    writer = initialize_monitoring(cfg)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    calls = [0] * producers
    try:

        @monitor_llm(
            operation_name="generate", measure_text=True, custom_attributes=dict(MODEL_ATTRS)
        )
        def answer(i: int) -> str:
            return make_result(i)

        for i in range(warmup):  # warm up allocator and code paths, then settle
            answer(i)
        llamonitor.flush(30.0)
        gc.collect()
        time.sleep(0.2)
        base = _rss()

        def produce(k: int) -> None:
            i = k * 1_000_000_000
            c = 0
            while not stop.is_set():
                answer(i)
                i += 1
                c += 1
            calls[k] = c

        try:
            import pyarrow as pa

            arrow_bytes: Callable[[], int] = pa.total_allocated_bytes
        except Exception:  # pragma: no cover
            arrow_bytes = lambda: 0  # noqa: E731

        def sample() -> None:
            t0 = time.perf_counter()
            while not stop.wait(0.25):
                h = health(writer)
                samples.append(
                    {
                        "t": round(time.perf_counter() - t0, 2),
                        "rss_growth_mb": (_rss() - base) / 2**20,
                        "arrow_live_mb": arrow_bytes() / 2**20,
                        "queue": h.get("queue_size"),
                        "buffer": h.get("buffer_size"),
                        "received": h.get("events_received"),
                        "written": h.get("events_written"),
                        "dropped": h.get("events_dropped"),
                    }
                )

        threads = [
            threading.Thread(target=produce, args=(k,), daemon=True) for k in range(producers)
        ]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for th in threads:
            th.start()
        time.sleep(seconds)
        stop.set()
        for th in threads:
            th.join()
        sampler.join()
        live = accounting(health(writer))
        peak = max((s["rss_growth_mb"] for s in samples), default=0.0)
        backend.fast = True  # let shutdown drain what is queued quickly
        ok = bool(shutdown_monitoring(120.0))
    finally:
        stop.set()
        stop_monitoring()
    final = accounting(health(writer))
    total_calls = sum(calls) + warmup
    per_record = text_len + 600  # rough: the str + SpanContext/ids/tuple
    return {
        "label": label,
        "seconds": seconds,
        "producers": producers,
        "max_queue_size": max_queue_size,
        "calls": total_calls,
        "calls_per_s": sum(calls) / seconds,
        "peak_rss_growth_mb": peak,
        "peak_arrow_live_mb": max((s["arrow_live_mb"] for s in samples), default=0.0),
        "final_rss_growth_mb": samples[-1]["rss_growth_mb"] if samples else 0.0,
        "queue_bound_estimate_mb": max_queue_size * per_record / 2**20
        if text_len < 16384
        else None,
        "max_queue_seen": max((s["queue"] or 0 for s in samples), default=0),
        "max_buffered_seen": max((s["buffer"] or 0 for s in samples), default=0),
        "live_accounting": live,
        "final_accounting": final,
        "backend_rows": backend.rows,
        "shutdown_ok": ok,
        "accounting_ok": final["balanced"]
        and final["pending"] == 0
        and final["received"] == total_calls
        and final["written"] == backend.rows,
        "samples": samples,
    }


def run_memory(quick: bool) -> dict[str, Any]:
    seconds = 1.5 if quick else 3.0
    out: dict[str, Any] = {}

    def four_kb(i: int) -> str:
        # a fresh 4 KB string per call, as an LLM client would return
        return TEXT_4K[:-12] + f"{i:012d}"

    out["4 KB text, 2 producers"] = _overload(
        "4 KB text, 2 producers", four_kb, 4096, seconds, producers=2, max_queue_size=10_000
    )

    unit = TEXT_4K + "\n"
    holder = [(unit * (50 * 2**20 // len(unit) + 1))[: 50 * 2**20]]

    def fifty_mb(i: int) -> str:
        # a fresh 50 MB string per call (the same object would prove nothing)
        return holder[0][:-12] + f"{i:012d}"

    out["50 MB text, 1 producer"] = _overload(
        "50 MB text, 1 producer",
        fifty_mb,
        len(holder[0]),
        seconds,
        producers=1,
        max_queue_size=10_000,
        warmup=2,
    )
    holder.clear()
    return out


def print_memory(res: dict[str, Any]) -> None:
    rows = []
    for label, r in res.items():
        fa = r["final_accounting"]
        rows.append(
            [
                label,
                f"{r['calls']:,}",
                f"{r['calls_per_s']:,.0f}",
                f"{r['peak_rss_growth_mb']:.1f}",
                f"{r['peak_arrow_live_mb']:.1f}",
                "-"
                if r["queue_bound_estimate_mb"] is None
                else f"{r['queue_bound_estimate_mb']:.0f}",
                f"{r['max_queue_seen']:,}",
                f"{r['max_buffered_seen']:,}",
                f"{fa['written']:,}",
                f"{fa['dropped']:,}",
                "OK" if r["accounting_ok"] else "MISMATCH",
            ]
        )
    show(
        "Memory under overload (sink ≤ 2,000 rows/s, max_queue_size=10,000, drop_newest)",
        [
            "workload",
            "calls",
            "calls/s",
            "peak RSS +MB",
            "Arrow live MB",
            "queue bound MB",
            "max queue",
            "max buffered",
            "written",
            "dropped",
            "accounting",
        ],
        rows,
    )
    say(
        "  queue bound MB: max_queue_size x (text + ~600 B of span/ids/tuple). max buffered: events "
        "past the queue (the batch being converted + batches waiting for the sink)."
    )
    for label, r in res.items():
        la, fa = r["live_accounting"], r["final_accounting"]
        say(
            f"  {label}: at end of load received={la['received']:,} = written {la['written']:,} + "
            f"failed {la['failed']} + dropped {la['dropped']:,} + pending {la['pending']:,} -> "
            f"{'balanced' if la['balanced'] else 'NOT balanced'}; after shutdown "
            f"dropped by reason {fa['dropped_by_reason']}, backend rows {r['backend_rows']:,}"
        )


# --------------------------------------------------------------------------------------
# Section 4: integrations (instrument_openai)
# --------------------------------------------------------------------------------------

INTEGRATION_CALL_TARGET_US = 10.0
INTEGRATION_CHUNK_TARGET_US = 1.0
STREAM_CHUNKS = 100
_BENCH_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Summarize the benefits of columnar storage in one sentence."},
]


def _openai_payloads(n_chunks: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A chat completion body and the chunks of a stream (text, finish, usage)."""
    usage = {
        "prompt_tokens": 31,
        "completion_tokens": n_chunks,
        "total_tokens": 31 + n_chunks,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": make_text(400)},
            }
        ],
        "usage": usage,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"content": f"tok{i} "}) for i in range(n_chunks - 2)]
    chunks.append(chunk({}, "stop"))
    chunks.append({**chunk({}), "choices": [], "usage": usage})  # include_usage
    return body, chunks


def _prebuilt_client(n_chunks: int) -> Any:
    """An OpenAI client whose ``chat.completions.create`` returns prebuilt SDK objects
    (a ``ChatCompletion``, or an ``openai.Stream`` over prebuilt ``ChatCompletionChunk``s):
    no HTTP, no JSON, so what remains is the wrapper's own cost."""
    import openai
    from openai.resources.chat.completions import Completions
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body, raw = _openai_payloads(n_chunks)
    completion = ChatCompletion.model_validate(body)
    chunks = [ChatCompletionChunk.model_validate(c) for c in raw]

    class Response:  # stands in for the stream's httpx response (closed like one)
        def close(self) -> None:
            pass

    class PrebuiltStream(openai.Stream):  # type: ignore[type-arg]
        def __init__(self) -> None:  # the SDK's own iteration and close, over a list
            self.response = Response()  # type: ignore[assignment]
            self._iterator = iter(chunks)

    class PrebuiltCompletions(Completions):
        def create(self, **kwargs: Any) -> Any:  # type: ignore[override]
            return PrebuiltStream() if kwargs.get("stream") else completion

    client = openai.OpenAI(api_key="bench", base_url="http://127.0.0.1:9/v1")
    client.chat.__dict__["completions"] = PrebuiltCompletions(client)
    return client


def _mock_transport_client(n_chunks: int) -> Any:
    """An OpenAI client on an ``httpx2.MockTransport``: the SDK's whole path (request
    building, HTTP client, SSE decoding, JSON, models) without a network."""
    import httpx2
    import openai

    body, chunks = _openai_payloads(n_chunks)
    json_body = json.dumps(body).encode()
    sse = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )

    def handler(request: Any) -> Any:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, content=json_body, headers={"content-type": "application/json"})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(
        api_key="bench", base_url="http://bench.local/v1", http_client=http, max_retries=0
    )


def _call_loop(client: Any, n: int) -> int:
    create = client.chat.completions.create
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        create(model="gpt-4o-mini", messages=_BENCH_MESSAGES, temperature=0.2, max_tokens=256)
    return clock() - t


def _stream_loop(client: Any, n: int) -> int:
    create = client.chat.completions.create
    clock = time.perf_counter_ns
    t = clock()
    for _ in range(n):
        for _chunk in create(
            model="gpt-4o-mini",
            messages=_BENCH_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        ):
            pass
    return clock() - t


def run_integrations(quick: bool, trials: int) -> dict[str, Any]:
    """Time per call of the same ``chat.completions.create`` bare and with
    ``instrument_openai(client)``; streams of 1 and ``STREAM_CHUNKS + 1`` chunks
    give the cost per chunk (the difference of their added times, per chunk)."""
    from llamonitor.integrations import instrument_openai

    scale = 0.25 if quick else 1.0
    shapes: dict[str, tuple[Callable[[Any, int], int], Callable[[], Any], int]] = {
        "call (prebuilt ChatCompletion)": (_call_loop, lambda: _prebuilt_client(3), 5000),
        "stream, 3 chunks (prebuilt)": (_stream_loop, lambda: _prebuilt_client(3), 3000),
        f"stream, {STREAM_CHUNKS + 3} chunks (prebuilt)": (
            _stream_loop,
            lambda: _prebuilt_client(STREAM_CHUNKS + 3),
            300,
        ),
        "call via SDK + MockTransport": (_call_loop, lambda: _mock_transport_client(3), 400),
        f"stream, {STREAM_CHUNKS + 3} chunks via SDK + MockTransport": (
            _stream_loop,
            lambda: _mock_transport_client(STREAM_CHUNKS + 3),
            40,
        ),
    }
    result: dict[str, Any] = {"trials": trials, "shapes": {}}
    with temp_dir("integrations") as out:
        writer = initialize_monitoring(llamonitor_config("hot path", out))
        try:
            for name, (loop, make, n_full) in shapes.items():
                n = max(20, int(n_full * scale))
                clients = {"bare": make(), "instrumented": make()}
                instrument_openai(clients["instrumented"])
                per: dict[str, list[float]] = {"bare": [], "instrumented": []}
                for c in clients.values():  # warm up: caches, first records
                    loop(c, max(10, n // 10))
                llamonitor.flush(60.0)
                variants = list(clients)
                for t in range(trials):
                    for v in variants[t % 2 :] + variants[: t % 2]:
                        gc.collect()
                        per[v].append(loop(clients[v], n) / n / 1000.0)
                        llamonitor.flush(120.0)  # drain outside the timed loop
                added = [i - b for i, b in zip(per["instrumented"], per["bare"], strict=True)]
                result["shapes"][name] = {
                    "n_per_trial": n,
                    "bare_us": median(per["bare"]),
                    "instrumented_us": median(per["instrumented"]),
                    "added_us": median(added),
                    "added_trials_us": added,
                    "trials_us": per,
                }
            names = list(shapes)
            small, big = result["shapes"][names[1]], result["shapes"][names[2]]
            per_chunk = [
                (b - s) / STREAM_CHUNKS
                for b, s in zip(big["added_trials_us"], small["added_trials_us"], strict=True)
            ]
            result["per_chunk_us"] = median(per_chunk)
            result["per_stream_us"] = small["added_us"] - 3 * result["per_chunk_us"]
            result["per_call_us"] = result["shapes"][names[0]]["added_us"]
            flushed = bool(llamonitor.flush(120.0))
            result["_check"] = {"flushed": flushed, "llamonitor": accounting(health(writer))}
        finally:
            stop_monitoring()
    return result


def _added(name: str, r: dict[str, Any]) -> str:
    # Through the SDK, the difference is far below the SDK's own trial-to-trial noise.
    return "(in the noise)" if "MockTransport" in name else fmt_us(r["added_us"])


def print_integrations(res: dict[str, Any]) -> None:
    rows = [
        [name, fmt_us(r["bare_us"]), fmt_us(r["instrumented_us"]), _added(name, r)]
        for name, r in res["shapes"].items()
    ]
    show(
        f"instrument_openai: µs per call (medians of {res['trials']} interleaved trials)",
        ["shape", "bare", "instrumented", "added"],
        rows,
    )
    call, chunk = res["per_call_us"], res["per_chunk_us"]
    say(
        f"  added per call: {call:.2f} µs (target < {INTEGRATION_CALL_TARGET_US:g}: "
        f"{'PASS' if call < INTEGRATION_CALL_TARGET_US else 'FAIL'}); per streamed chunk: "
        f"{chunk:.3f} µs (target < {INTEGRATION_CHUNK_TARGET_US:g}: "
        f"{'PASS' if chunk < INTEGRATION_CHUNK_TARGET_US else 'FAIL'}); per stream besides "
        f"its chunks: {res['per_stream_us']:.2f} µs"
    )
    acc = res["_check"]["llamonitor"]
    say(
        f"  accounting: received {acc['received']:,} = written {acc['written']:,} + dropped "
        f"{acc['dropped']:,} + pending {acc['pending']:,}: {'ok' if acc['balanced'] else 'MISMATCH'}"
    )


def _integrations_markdown(res: dict[str, Any]) -> list[str]:
    lines = [
        "**Integrations** (`instrument_openai(client)` vs the same client bare; µs per call, "
        "medians of interleaved trials; *prebuilt*: `create` returns prebuilt SDK objects, so only "
        "the wrapper's cost remains; *MockTransport*: the SDK's whole path without a network):",
        "",
        "| shape | bare | instrumented | added |",
        "|---|---:|---:|---:|",
    ]
    for name, r in res["shapes"].items():
        lines.append(
            f"| {name} | {r['bare_us']:.2f} | {r['instrumented_us']:.2f} | {_added(name, r)} |"
        )
    lines += [
        "",
        f"Added per call {res['per_call_us']:.2f} µs (target < {INTEGRATION_CALL_TARGET_US:g}), "
        f"per streamed chunk {res['per_chunk_us']:.3f} µs (target < "
        f"{INTEGRATION_CHUNK_TARGET_US:g}), per stream besides its chunks "
        f"{res['per_stream_us']:.2f} µs.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------------------
# Markdown for the README
# --------------------------------------------------------------------------------------


def markdown(results: dict[str, Any], argv: list[str]) -> str:
    m = results["machine"]
    lines = [
        "### Benchmark",
        "",
        "```",
        "python benchmarks/bench.py" + (" " + " ".join(argv) if argv else ""),
        "```",
        "",
        f"Measured on {m['cpus']} × {m['cpu']}, {m['implementation']} {m['python']}, "
        f"OpenTelemetry SDK {m['opentelemetry-sdk']}, pyarrow {m['pyarrow']}, "
        f"DuckDB {m['duckdb']} ({results['date']}).",
        "",
    ]
    ov = results.get("overhead")
    if isinstance(ov, dict) and "modes" in ov:
        lines += [
            '**Overhead per call** (µs; medians of interleaved trials; "added" = monitored − bare). '
            'llamonitor: `@monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})`, '
            "Parquet backend. OTel: `start_as_current_span` with the same attributes and the four "
            "text metrics, `BatchSpanProcessor` → discarding exporter.",
            "",
            "| shape | mode | bare | llamonitor added | OTel added | OTel / llamonitor | "
            "background per event, wall (llamonitor / OTel) | total CPU per span (llamonitor / OTel) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, mres in ov["modes"].items():
            for name, r in mres.items():
                if name.startswith("_"):
                    continue
                bg = (
                    f"{r['ours_drain_us']:.2f} / {r['otel_drain_us']:.2f}"
                    if "ours_drain_us" in r
                    else "(overlapped)"
                )
                total = (
                    f"{r['ours_total_us']:.2f} / {r['otel_total_us']:.2f} "
                    f"(**{r['otel_total_us'] / r['ours_total_us']:.1f}×**)"
                    if "ours_total_us" in r
                    else ""
                )
                lines.append(
                    f"| {name} | {mode} | {r['bare_us']:.2f} | {r['ours_added_us']:.2f} | "
                    f"{r['otel_added_us']:.2f} | {r['ratio']:.1f}× | {bg} | {total} |"
                )
        lines += [
            "",
            "*hot path*: background threads parked during the timed loop, queues drained between "
            "trials outside the timing (the caller's cost alone; the drain is timed apart: "
            "llamonitor's worker converts to Arrow, measures the text and writes Parquet, the OTel "
            "exporter discards). *concurrent*: default batching, the worker runs while the caller "
            "does (no flush between trials; on 2 cores it competes for the GIL).",
            "",
        ]
    tp = results.get("throughput")
    if isinstance(tp, dict) and "variants" in tp:
        otel = tp["variants"]["otel"]
        lines += [
            f"**Durable end to end** ({tp['n']:,} calls of a sync function returning a fresh 1 KB "
            "text, one thread, as fast as it can; from the first call until the spans are durable: "
            "llamonitor `shutdown_monitoring()` returned, rows in Parquet counted back with DuckDB; "
            "OTel `provider.shutdown()` returned, `BatchSpanProcessor` into an exporter that "
            "discards. CPU per span: `time.process_time()` of the whole process, all threads, minus "
            f"the bare function's; medians of {tp['trials']} interleaved trials):",
            "",
            "| variant | spans/s | vs OTel | CPU µs/span (caller + background) | OTel CPU / ours | dropped |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in tp["variants"].items():
            label = "OTel `BatchSpanProcessor`" if name == "otel" else f"llamonitor, `{name}`"
            ratio = "" if name == "otel" else f"{otel['cpu_us'] / r['cpu_us']:.1f}×"
            lines.append(
                f"| {label} | {r['spans_per_s']:,.0f} | {r['spans_per_s'] / otel['spans_per_s']:.1f}× | "
                f"{r['cpu_us']:.2f} ({r['caller_us']:.2f} + {r['background_us']:.2f}) | {ratio} | "
                f"{r['dropped']:,} |"
            )
        lines.append("")
    burst = results.get("burst")
    if isinstance(burst, dict) and "runs" in burst:
        lines += [
            f"**Burst, default configuration**: {burst['spans']:,} spans of 1 KB text from 4 threads "
            f"and asyncio at once, in a process that exits without shutdown: {burst['rows_min']:,} "
            f"kept (fewest of {burst['trials']} runs), peak RSS growth {burst['peak_growth_mb']:.0f} MB "
            f"(max {burst['peak_growth_max_mb']:.0f}), burst {burst['burst_seconds']:.2f} s, exit "
            f"flush {burst['exit_flush_seconds']:.2f} s.",
            "",
        ]
    mem = results.get("memory")
    if isinstance(mem, dict) and mem and "error" not in mem:
        lines += [
            "**Memory under overload** (producers as fast as they can against a sink of ≤ 2,000 rows/s, "
            "`max_queue_size=10_000`, `drop_newest`):",
            "",
            "| workload | calls | peak RSS growth | written | dropped (counted) | accounting |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for label, r in mem.items():
            fa = r["final_accounting"]
            lines.append(
                f"| {label} | {r['calls']:,} | {r['peak_rss_growth_mb']:.0f} MB | {fa['written']:,} | "
                f"{fa['dropped']:,} | {'received = written + dropped' if r['accounting_ok'] else 'MISMATCH'} |"
            )
        lines.append("")
    integ = results.get("integrations")
    if isinstance(integ, dict) and "shapes" in integ:
        lines += _integrations_markdown(integ)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller run (~20 s)")
    p.add_argument("--json", metavar="PATH", help="write all figures (and raw trials) as JSON")
    p.add_argument(
        "--only",
        default="overhead,throughput,burst,memory,integrations",
        help="comma-separated sections",
    )
    p.add_argument("--trials", type=int, default=None, help="overhead trials (default 7, quick 3)")
    args = p.parse_args(argv)
    trials = args.trials or (3 if args.quick else 7)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    shown_argv = [
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--json")
    ]
    if args.json and args.json in shown_argv:
        shown_argv.remove(args.json)

    results: dict[str, Any] = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
    }
    m = results["machine"]
    say(
        f"[bold]llamonitor benchmark[/bold] — {m['cpus']} CPU(s) {m['cpu']}, Python {m['python']}, "
        f"OTel SDK {m['opentelemetry-sdk']}, pyarrow {m['pyarrow']}, DuckDB {m['duckdb']}"
    )
    t_start = time.perf_counter()
    runners: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
        "overhead": (lambda: run_overhead(args.quick, trials), print_overhead),
        "throughput": (lambda: run_throughput(args.quick, trials), print_throughput),
        "burst": (lambda: run_burst(args.quick, trials), print_burst),
        "memory": (lambda: run_memory(args.quick), print_memory),
        "integrations": (lambda: run_integrations(args.quick, trials), print_integrations),
    }
    failed = False
    for name in sections:
        if name not in runners:
            say(f"[red]unknown section {name!r}[/red]")
            failed = True
            continue
        run, render = runners[name]
        t = time.perf_counter()
        try:
            res = run()
        except Exception as exc:
            failed = True
            results[name] = {"error": repr(exc), "traceback": traceback.format_exc()}
            say(f"[red]section {name} failed:[/red] {exc!r}")
            say(traceback.format_exc())
            stop_monitoring()
            continue
        results[name] = res
        say()
        render(res)
        say(f"  ({name}: {time.perf_counter() - t:.1f} s)")
    results["seconds"] = time.perf_counter() - t_start
    md = markdown(results, shown_argv)
    results["markdown"] = md
    say()
    say("[bold]Markdown for the README[/bold] (paste as is):")
    print()
    print(md)
    say(f"(whole run: {results['seconds']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        say(f"JSON written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
