#!/usr/bin/env python
"""Prometheus metrics: what the decorator pays, what the sink pays, what a scrape takes.

Usage::

    python benchmarks/bench_prometheus.py            # about a minute
    python benchmarks/bench_prometheus.py --quick    # about 15 seconds
    python benchmarks/bench_prometheus.py --json out.json

Sections:

* **overhead** -- time per call of a ``@monitor_llm`` function (Parquet store
  in a temp dir) minus the same function bare, with the Prometheus exporter
  off and on, in the same run: trials alternate the two configurations (each
  trial starts monitoring afresh), bare and decorated calls are paired within
  a trial, figures are medians over trials. *hot path*: the worker is parked
  during the timed loop (batch size and flush interval huge) and drained
  outside it, so the figure is the caller's own cost; *concurrent*: default
  batching, the worker and the sinks (the Prometheus one included) run while
  the caller does, so on two cores with the GIL their work shows up here.
* **sink** -- the exporter's cost per span: ``SpanMetrics.update`` on batches
  of 10,000 spans with every LLM column, beside writing the same batch to
  Parquet (the store every span goes to anyway) and beside the per-span
  ``prometheus_client`` way (``labels(...).observe`` for each metric of each
  span), all in this run.
* **scrape** -- ``GET /metrics`` of ``start_metrics_server`` with the caps
  reached: every label past ``max_label_values`` (100) and every metric at
  ``max_series`` (the default, and 1,000 for scale). Target: under 50 ms.
  Beside it, ``prometheus_client.generate_latest`` of the same collector
  (what serving it from a registry of your own costs).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pyarrow as pa

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, monitor_llm
from llamonitor.export import PrometheusConfig, SpanMetrics, start_metrics_server
from llamonitor.export._collectors import SpanMetricsCollector
from llamonitor.export._metric_state import DEFAULT_MAX_SERIES, DURATION_BUCKETS, TOKEN_BUCKETS

SCRAPE_TARGET_MS = 50.0


def say(msg: str = "") -> None:
    print(msg, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- overhead ---------------------------------------------------------------------------


def _bare(i: int) -> str:
    return "Sure, here is the answer: 42."


_decorated = monitor_llm("bench.call", custom_attributes={
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
})(_bare)


def _per_call_ns(f: Callable[[int], Any], n: int) -> float:
    start = time.perf_counter_ns()
    for i in range(n):
        f(i)
    return (time.perf_counter_ns() - start) / n


def _config(out: Path, prometheus: bool, hot: bool) -> MonitorConfig:
    storage: dict[str, Any] = {"backend": "parquet", "output_dir": out}
    if hot:
        storage.update(batch_size=10_000_000, flush_interval_seconds=3600.0)
    return MonitorConfig(
        storage=StorageConfig(**storage),
        max_queue_size=2_000_000,
        prometheus=PrometheusConfig(port=None) if prometheus else None,
    )


def run_overhead(quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 20_000
    trials = 4 if quick else 10
    out: dict[str, Any] = {"calls_per_trial": n, "trials": trials}
    with tempfile.TemporaryDirectory(prefix="bench-prom-") as tmp:
        for mode in ("hot path", "concurrent"):
            hot = mode == "hot path"
            diffs: dict[str, list[float]] = {"off": [], "on": []}
            for trial in range(trials):
                order = ("off", "on") if trial % 2 == 0 else ("on", "off")
                for variant in order:
                    where = Path(tmp) / f"{mode}-{trial}-{variant}"
                    llamonitor.initialize_monitoring(_config(where, variant == "on", hot))
                    _per_call_ns(_decorated, 200)  # warm
                    llamonitor.flush(60)
                    bare = _per_call_ns(_bare, n)
                    monitored = _per_call_ns(_decorated, n)
                    llamonitor.shutdown_monitoring(60)
                    diffs[variant].append(monitored - bare)
            out[mode] = {k: median(v) / 1000 for k, v in diffs.items()}
    return out


def print_overhead(res: dict[str, Any]) -> None:
    say(f"\n== overhead: µs per decorated call minus bare ({res['calls_per_trial']:,} calls, "
        f"{res['trials']} trials, medians)")
    say(f"{'mode':<12} {'prometheus off':>15} {'prometheus on':>15} {'on - off':>10}")
    for mode in ("hot path", "concurrent"):
        r = res[mode]
        say(f"{mode:<12} {r['off']:>15.2f} {r['on']:>15.2f} {r['on'] - r['off']:>+10.2f}")


# -- the sink's cost --------------------------------------------------------------------


def make_rows(n: int, seed: int, models: int = 20, ops: int = 8, agents: int = 4) -> pa.Table:
    """Spans with every LLM column, ``models`` x ``ops`` x ``agents`` label values."""
    rnd = random.Random(seed)
    cols: dict[str, list[Any]] = {name: [] for name in llamonitor.SCHEMA.names}
    t0 = 1_700_000_000_000_000
    for i in range(n):
        failed = rnd.random() < 0.05
        row = {
            "event_id": f"{seed:04x}{i:028x}", "session_id": "s" * 32, "trace_id": "t" * 32,
            "span_id": f"{i:016x}", "parent_span_id": None,
            "operation_name": f"op.{rnd.randrange(ops)}", "operation_type": "llm_call",
            "timestamp": t0 + i, "duration_ms": rnd.lognormvariate(6, 1),
            "error": True if failed else None,
            "error_type": "openai.RateLimitError" if failed else None,
            "error_message": None, "provider": "openai", "model": f"model-{rnd.randrange(models)}",
            "agent_name": f"agent-{rnd.randrange(agents)}", "project_name": "bench",
            "input_tokens": rnd.randrange(10, 5000), "output_tokens": rnd.randrange(1, 800),
            "cost_usd": rnd.random() / 100, "time_to_first_token_ms": rnd.random() * 500,
            "process_id": 1,
        }
        for name in cols:
            cols[name].append(row.get(name))
    return pa.table(cols).cast(llamonitor.SCHEMA)


def _per_client_peer(table: pa.Table) -> Callable[[], None]:
    """What a per-span exporter does: each metric observed per span through
    prometheus_client's own metric objects."""
    registry = prometheus_client.CollectorRegistry()
    labels = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
              "gen_ai_agent_name", "llamonitor_operation_name"]
    tokens = prometheus_client.Histogram(
        "gen_ai_client_token_usage", "", [*labels, "gen_ai_token_type"],
        buckets=TOKEN_BUCKETS, registry=registry)
    duration = prometheus_client.Histogram(
        "gen_ai_client_operation_duration_seconds", "", [*labels, "error_type"],
        buckets=DURATION_BUCKETS, registry=registry)
    first = prometheus_client.Histogram(
        "gen_ai_client_operation_time_to_first_chunk_seconds", "", labels,
        buckets=DURATION_BUCKETS, registry=registry)
    cost = prometheus_client.Counter("llamonitor_cost_usd", "", labels, registry=registry)
    rows = table.select(["operation_type", "provider", "model", "agent_name", "operation_name",
                         "error_type", "duration_ms", "time_to_first_token_ms", "input_tokens",
                         "output_tokens", "cost_usd"]).to_pylist()

    def run() -> None:
        for r in rows:  # the per-span loop is the point
            key = ("chat", r["provider"] or "", r["model"] or "", r["agent_name"] or "",
                   r["operation_name"])
            tokens.labels(*key, "input").observe(r["input_tokens"])
            tokens.labels(*key, "output").observe(r["output_tokens"])
            duration.labels(*key, r["error_type"] or "").observe(r["duration_ms"] / 1000)
            first.labels(*key).observe(r["time_to_first_token_ms"] / 1000)
            cost.labels(*key).inc(r["cost_usd"])

    return run


def run_sink(quick: bool) -> dict[str, Any]:
    from llamonitor.storage.parquet import ParquetBackend

    batch = 10_000
    batches = [make_rows(batch, seed) for seed in range(3 if quick else 6)]
    state = SpanMetrics()
    state.update(batches[0])  # warm
    times = []
    for table in batches:
        start = time.perf_counter()
        state.update(table)
        times.append(time.perf_counter() - start)
    parquet_times = []
    with tempfile.TemporaryDirectory(prefix="bench-prom-pq-") as tmp:
        import asyncio

        backend = ParquetBackend(StorageConfig(output_dir=tmp))
        for table in batches:
            start = time.perf_counter()
            asyncio.run(backend.write_table(table))
            parquet_times.append(time.perf_counter() - start)
    peer = _per_client_peer(batches[0])
    peer()  # warm
    peer_times = []
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        peer()
        peer_times.append(time.perf_counter() - start)
    return {
        "batch": batch,
        "update_us_per_span": median(times) / batch * 1e6,
        "parquet_us_per_span": median(parquet_times) / batch * 1e6,
        "per_span_client_us_per_span": median(peer_times) / batch * 1e6,
    }


def print_sink(res: dict[str, Any]) -> None:
    say(f"\n== sink: µs per span (batches of {res['batch']:,}, every LLM column, medians)")
    u, p, c = (res["update_us_per_span"], res["parquet_us_per_span"],
               res["per_span_client_us_per_span"])
    say(f"SpanMetrics.update (vectorized)        {u:8.2f}")
    say(f"Parquet write of the same batch        {p:8.2f}   ({u / p:.2f}x of it)")
    say(f"prometheus_client, per span per metric {c:8.2f}   ({c / u:.1f}x the vectorized)")


# -- the scrape ---------------------------------------------------------------------------


def capped_state(max_series: int) -> SpanMetrics:
    """Every label past 100 values, every family at ``max_series`` label sets."""
    state = SpanMetrics(max_label_values=100, max_series=max_series)
    for seed in range(4):
        state.update(make_rows(20_000, 100 + seed, models=150, ops=150, agents=150))
    return state


def run_scrape(quick: bool) -> dict[str, Any]:
    from llamonitor.export._exposition import MetricsRegistry

    out: dict[str, Any] = {"target_ms": SCRAPE_TARGET_MS, "runs": []}
    for max_series in (DEFAULT_MAX_SERIES, 1000):
        state = capped_state(max_series)
        snap = state.snapshot()
        capped = ("gen_ai_request_model", "gen_ai_agent_name", "llamonitor_operation_name")
        assert all(snap.label_values[k] == 100 for k in capped), snap.label_values
        assert all(v > 0 for v in snap.folded.values() if v), snap.folded
        ours = MetricsRegistry()
        ours.register(SpanMetricsCollector(state))
        plain = prometheus_client.CollectorRegistry()
        plain.register(SpanMetricsCollector(state))
        server = start_metrics_server(0, registry=ours)
        try:
            with httpx.Client(timeout=60) as client:
                body = client.get(server.url).content
                times = []
                for _ in range(10 if quick else 30):
                    start = time.perf_counter()
                    client.get(server.url).raise_for_status()
                    times.append(time.perf_counter() - start)
        finally:
            server.stop()
        generic = []
        for _ in range(3 if quick else 5):
            start = time.perf_counter()
            prometheus_client.generate_latest(plain)
            generic.append(time.perf_counter() - start)
        out["runs"].append({
            "max_series": max_series,
            "series": sum(len(f.label_values) for f in snap.families),
            "lines": body.count(b"\n"),
            "bytes": len(body),
            "scrape_ms": median(times) * 1000,
            "p90_ms": sorted(times)[int(len(times) * 0.9)] * 1000,
            "generate_latest_ms": median(generic) * 1000,
        })
    return out


def print_scrape(res: dict[str, Any]) -> None:
    say(f"\n== scrape: GET /metrics with the caps reached (target < {res['target_ms']:.0f} ms)")
    say(f"{'max_series':>10} {'series':>7} {'lines':>7} {'KiB':>6} {'median ms':>10} "
        f"{'p90 ms':>7} {'generate_latest ms':>19}  ok")
    for r in res["runs"]:
        ok = "yes" if r["scrape_ms"] < res["target_ms"] else "NO"
        if r["max_series"] != DEFAULT_MAX_SERIES:
            ok += " (not the default)"
        say(f"{r['max_series']:>10,} {r['series']:>7,} {r['lines']:>7,} {r['bytes'] / 1024:>6.0f} "
            f"{r['scrape_ms']:>10.1f} {r['p90_ms']:>7.1f} {r['generate_latest_ms']:>19.1f}  {ok}")
    say("(median/p90: GET over HTTP of start_metrics_server; generate_latest: prometheus_client"
        " formatting the same collector, what a registry of your own costs)")


SECTIONS = {
    "overhead": (run_overhead, print_overhead),
    "sink": (run_sink, print_sink),
    "scrape": (run_scrape, print_scrape),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from importlib.metadata import version

    say(f"python {platform.python_version()}, {platform.machine()}, "
        f"prometheus_client {version('prometheus_client')}")
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        run, show = SECTIONS[name]
        results[name] = run(args.quick)
        show(results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
