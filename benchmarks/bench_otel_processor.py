#!/usr/bin/env python
"""llamonitor.otel.SpanProcessor: what it costs the application's threads.

Usage::

    python benchmarks/bench_otel_processor.py            # ~40 s
    python benchmarks/bench_otel_processor.py --quick    # ~10 s
    python benchmarks/bench_otel_processor.py --only decorator --json out.json

Sections:

* **decorator** -- ``@monitor_llm`` per-call overhead (added over the bare
  function, median of interleaved trials), for a *root* span (called at top
  level) and a *non-root* span (called inside a decorated parent), with the
  OTel bridge off (no ``SpanProcessor``), on (a processor exists, no OTel span
  around), and on inside an OTel span (the root becomes its child). Hot-path
  mode: the worker is parked during the timed loop and the queue drained
  outside it. Times are the calling thread's CPU time (``thread_time_ns``),
  median and minimum over trials. Run it against another checkout
  (``PYTHONPATH=<other>/src``) for a before/after: the bridge variants are
  skipped where ``llamonitor.otel`` is missing.

* **on_end** -- the app-thread cost of ``on_end`` of llamonitor's processor
  beside the SDK's ``BatchSpanProcessor`` (discarding exporter), on the same
  finished spans, both parked (their threads never run during the timing).
  Also a whole ``start_as_current_span`` + end through a provider with each.

* **convert** -- finished spans per second turned into rows and handed to the
  pipeline (encode, map, fix, one Arrow table per batch), and until written
  to Parquet.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, initialize_monitoring, monitor_llm

try:
    from llamonitor.otel import SpanProcessor

    HAVE_BRIDGE = True
except ImportError:  # another checkout, before the bridge
    HAVE_BRIDGE = False


# The calling thread's CPU time: on a machine others share, wall time mostly
# measures their load. The worker threads are parked during the timed loops,
# so on a quiet machine the two agree.
_clock = time.thread_time_ns


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _config(out: Path) -> MonitorConfig:
    return MonitorConfig(
        storage=StorageConfig(
            backend="parquet", output_dir=out, batch_size=10_000_000, flush_interval_seconds=3600
        ),
        max_queue_size=1_000_000,
        max_queue_bytes=4 * 1024**3,
    )


# -- decorator -------------------------------------------------------------


def run_decorator(quick: bool, trials: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider

    n = 5_000  # short trials, many of them: the least disturbed ones show

    def work() -> str:
        return "x"

    deco = monitor_llm(operation_name="leaf")(work)

    def root_loop(f: Callable[[], str]) -> int:
        t0 = _clock()
        for _ in range(n):
            f()
        return _clock() - t0

    @monitor_llm(operation_name="parent")
    def nested_loop(f: Callable[[], str]) -> int:
        return root_loop(f)

    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    out: dict[str, Any] = {"calls_per_trial": n, "trials": trials, "bridge_available": HAVE_BRIDGE}
    with tempfile.TemporaryDirectory() as tmp:
        initialize_monitoring(_config(Path(tmp)))
        try:
            settings = ["off"] + (["on", "on, inside an OTel span"] if HAVE_BRIDGE else [])
            for setting in settings:
                processor = None
                if setting != "off":
                    processor = SpanProcessor()
                    provider.add_span_processor(processor)
                for shape, loop in (("root", root_loop), ("non-root", nested_loop)):
                    per: dict[str, list[float]] = {"bare": [], "monitored": []}
                    variants = [("bare", work), ("monitored", deco)]
                    for f in (work, deco):
                        loop(f)  # warm up
                    for t in range(trials):
                        for name, f in variants[t % 2 :] + variants[: t % 2]:
                            gc.collect()
                            if setting == "on, inside an OTel span":
                                with tracer.start_as_current_span("around"):
                                    ns = loop(f)
                            else:
                                ns = loop(f)
                            per[name].append(ns / n / 1000)
                            llamonitor.flush(120)
                    added = [m - b for m, b in zip(per["monitored"], per["bare"], strict=True)]
                    out[f"{shape} | bridge {setting}"] = {
                        "bare_us": median(per["bare"]),
                        "added_us": median(added),
                        # The least disturbed trial: on a shared machine, the
                        # steadier figure for differences of a few ns.
                        "added_min_us": min(added),
                        "added_trials_us": added,
                    }
                if processor is not None:
                    processor.shutdown()
        finally:
            llamonitor.shutdown_monitoring(60)
            provider.shutdown()
    return out


def print_decorator(res: dict[str, Any]) -> None:
    print(f"\n@monitor_llm added per call (µs of thread CPU, {res['trials']} trials, hot path)")
    for key, r in res.items():
        if isinstance(r, dict):
            trials = " ".join(f"{x:.3f}" for x in r["added_trials_us"])
            print(
                f"  {key:40s} bare {r['bare_us']:.3f}  added: median {r['added_us']:.3f}"
                f"  min {r['added_min_us']:.3f}   [{trials}]"
            )


# -- on_end ----------------------------------------------------------------


def run_on_end(quick: bool, trials: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    n = 5_000 if quick else 20_000
    big = 10 * n
    make: dict[str, Callable[[], Any]] = {
        "BatchSpanProcessor": lambda: BatchSpanProcessor(
            Discard(),
            max_queue_size=big,
            max_export_batch_size=big,
            schedule_delay_millis=3_600_000,
        ),
    }
    if HAVE_BRIDGE:
        make["llamonitor SpanProcessor"] = lambda: SpanProcessor(
            max_queue_size=big, batch_size=big, interval_seconds=3600
        )
    source = TracerProvider()
    tracer = source.get_tracer("bench")
    finished = []
    for i in range(n):
        with tracer.start_as_current_span("chat gpt-4o") as s:
            s.set_attribute("gen_ai.request.model", "gpt-4o")
            s.set_attribute("gen_ai.usage.input_tokens", i)
        finished.append(s)
    res: dict[str, Any] = {"spans_per_trial": n}
    with tempfile.TemporaryDirectory() as tmp:
        initialize_monitoring(_config(Path(tmp)))
        try:
            procs = {name: mk() for name, mk in make.items()}
            providers = {name: TracerProvider() for name in make}
            for name, p in procs.items():
                providers[name].add_span_processor(p)
            on_end: dict[str, list[float]] = {name: [] for name in make}
            whole: dict[str, list[float]] = {name: [] for name in make}
            names = list(make)
            for t in range(trials):
                for name in names[t % len(names) :] + names[: t % len(names)]:
                    p = procs[name]
                    gc.collect()
                    t0 = _clock()
                    for s in finished:
                        p.on_end(s)
                    on_end[name].append((_clock() - t0) / n / 1000)
                    p.force_flush(600_000)
                    tr = providers[name].get_tracer("bench")
                    gc.collect()
                    t0 = _clock()
                    for _ in range(n):
                        with tr.start_as_current_span("chat gpt-4o") as s:
                            s.set_attribute("gen_ai.request.model", "gpt-4o")
                    whole[name].append((_clock() - t0) / n / 1000)
                    p.force_flush(600_000)
                    llamonitor.flush(120)
            for name in names:
                res[name] = {
                    "on_end_us": median(on_end[name]),
                    "span_us": median(whole[name]),
                    "on_end_trials_us": on_end[name],
                }
            for pr in providers.values():
                pr.shutdown()
        finally:
            llamonitor.shutdown_monitoring(60)
    return res


def print_on_end(res: dict[str, Any]) -> None:
    print(
        "\non_end on the app thread, and a whole span "
        f"(µs per span, {res['spans_per_trial']}/trial)"
    )
    for key, r in res.items():
        if isinstance(r, dict):
            print(f"  {key:28s} on_end {r['on_end_us']:.3f}   start+end span {r['span_us']:.3f}")


# -- convert ---------------------------------------------------------------


def run_convert(quick: bool, trials: int) -> dict[str, Any]:
    if not HAVE_BRIDGE:
        return {"skipped": "no llamonitor.otel"}
    from opentelemetry.sdk.trace import TracerProvider

    n = 5_000 if quick else 20_000
    big = 10 * n
    rates: list[float] = []
    durable: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        initialize_monitoring(_config(Path(tmp)))
        try:
            processor = SpanProcessor(max_queue_size=big, batch_size=512, interval_seconds=3600)
            provider = TracerProvider()
            provider.add_span_processor(processor)
            tracer = provider.get_tracer("bench")
            for _ in range(trials):
                for i in range(n):
                    with tracer.start_as_current_span("chat gpt-4o") as s:
                        s.set_attribute("gen_ai.operation.name", "chat")
                        s.set_attribute("gen_ai.request.model", "gpt-4o")
                        s.set_attribute("gen_ai.usage.input_tokens", i)
                        s.set_attribute("gen_ai.usage.output_tokens", 7)
                t0 = time.perf_counter()
                processor.force_flush(600_000)
                t1 = time.perf_counter()
                llamonitor.flush(120)
                rates.append(n / (t1 - t0))
                durable.append(n / (time.perf_counter() - t0))
            provider.shutdown()
        finally:
            llamonitor.shutdown_monitoring(60)
    return {
        "spans_per_trial": n,
        "spans_per_s": median(rates),
        "durable_spans_per_s": median(durable),
        "trials": rates,
    }


def print_convert(res: dict[str, Any]) -> None:
    if "spans_per_s" in res:
        print(
            f"\nfinished spans handed to the pipeline: {res['spans_per_s']:,.0f} spans/s; "
            f"until written to Parquet: {res['durable_spans_per_s']:,.0f} spans/s"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--only", default="decorator,on_end,convert")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    trials = args.trials or (7 if args.quick else 21)
    sections = {
        "decorator": (run_decorator, print_decorator),
        "on_end": (run_on_end, print_on_end),
        "convert": (run_convert, print_convert),
    }
    results: dict[str, Any] = {"python": sys.version.split()[0], "llamonitor": llamonitor.__file__}
    failed = False
    for name in args.only.split(","):
        run, show = sections[name]
        try:
            results[name] = run(args.quick, trials)
            show(results[name])
        except Exception as exc:  # a section that fails does not hide the others
            failed = True
            results[name] = {"error": repr(exc)}
            print(f"{name}: FAILED {exc!r}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
