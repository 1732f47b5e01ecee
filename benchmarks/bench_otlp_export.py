#!/usr/bin/env python
"""OTLP export: llamonitor's pipeline beside the OpenTelemetry SDK, and the
decorator's overhead with and without the OTLP exporter.

Usage::

    python benchmarks/bench_otlp_export.py           # about 1-2 minutes
    python benchmarks/bench_otlp_export.py --quick   # smoke run, about 20 s

Sections, in one run, against one local OTLP/HTTP receiver (a separate
process: a ``ThreadingHTTPServer`` that decodes every request with
opentelemetry-proto and counts the spans):

* **throughput** -- spans/s from the first call until the receiver has
  counted every span: ``@monitor_llm`` calls through llamonitor's pipeline
  (storage: a backend that discards, so the figure is the export's) and
  ``OTLPExporterConfig`` (http/protobuf, no compression; the producer is
  held to the exporter's pace, since an exporter sink that falls 4 batches
  behind drops its oldest, counted), beside the
  OpenTelemetry SDK (``TracerProvider`` + ``BatchSpanProcessor`` +
  ``OTLPSpanExporter`` of opentelemetry-exporter-otlp-proto-http) making the
  same spans: the same name, kind and attributes as llamonitor's (taken from
  llamonitor's encoding of the same call). Both produce from one thread and
  flush once at the end (``llamonitor.flush()`` / ``force_flush()``), so
  neither waits out a batch timer; rounds alternate; the median round is shown.
* **overhead** -- time per call of the same function bare and decorated, with
  storage only and with storage plus the OTLP exporter sending to the
  receiver (the worker and the sink running, as in production): median over
  interleaved trials of (decorated - bare) per call.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from typing import Any

import pyarrow as pa

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, monitor_llm
from llamonitor.export import OTLPExporterConfig

RECEIVER = textwrap.dedent(
    """
    import gzip, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest, ExportTraceServiceResponse)
    count = 0
    lock = threading.Lock()
    OK = ExportTraceServiceResponse().SerializeToString()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def do_GET(self):
            body = str(count).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_POST(self):
            global count
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            req = ExportTraceServiceRequest.FromString(body)
            n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            with lock:
                count += n
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(OK)))
            self.end_headers()
            self.wfile.write(OK)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


class Receiver:
    """The receiver process; ``count()`` is the spans it decoded so far."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def count(self) -> int:
        with urllib.request.urlopen(self.base + "/count", timeout=10) as resp:
            return int(resp.read())

    def wait_for(self, total: int, timeout: float = 300.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= total:
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


PACE_EVERY = 500
PACE_PENDING = 2_000


class Discard:
    """A storage backend that takes every batch and keeps nothing."""

    def initialize(self) -> None:
        pass

    def write_table(self, table: pa.Table) -> None:
        pass

    def close(self) -> None:
        pass


ATTRS = {"provider": "openai", "model": "gpt-4o", "input_tokens": 120, "output_tokens": 40}


@monitor_llm("answer", custom_attributes=ATTRS)
def answer(i: int) -> int:
    return i


def bare(i: int) -> int:
    return i


def _config(receiver: Receiver | None, spool: str) -> MonitorConfig:
    exporters = [] if receiver is None else [OTLPExporterConfig(endpoint=receiver.base)]
    return MonitorConfig(
        storage=StorageConfig(backend=Discard(), batch_size=1000),
        exporters=exporters,
        spool_dir=spool,
        max_queue_size=1_000_000,
        max_queue_bytes=2 * 1024**3,
    )


def llamonitor_round(receiver: Receiver, n: int, spool: str) -> float:
    """spans/s of ``n`` decorated calls until the receiver has them all."""
    before = receiver.count()
    writer = llamonitor.initialize_monitoring(_config(receiver, spool))
    try:
        t0 = time.perf_counter()
        for start in range(0, n, PACE_EVERY):
            for i in range(start, min(n, start + PACE_EVERY)):
                answer(i)
            # An exporter sink that falls MAX_PENDING_BATCHES behind drops its
            # oldest batch (the transport's isolation, counted): keep the
            # producer at the exporter's pace, as the SDK's queue (sized to
            # hold every span below) never drops.
            while writer.health_check()["sinks"]["otlp"]["pending"] > PACE_PENDING:
                time.sleep(0.001)
        llamonitor.flush(120)  # what is batched goes now, as force_flush does below
        if not receiver.wait_for(before + n):
            sink = writer.health_check()["sinks"]["otlp"]
            raise RuntimeError(
                f"llamonitor: the receiver got {receiver.count() - before:,} of {n:,} spans; "
                f"the sink: {json.dumps(sink, default=str)}"
            )
        elapsed = time.perf_counter() - t0
        dropped = writer.health_check()["sinks"]["otlp"]["dropped"]
        if dropped:
            raise RuntimeError(f"llamonitor: the exporter sink dropped {dropped:,} spans")
    finally:
        llamonitor.shutdown_monitoring(30)
    return n / elapsed


def equivalent_span() -> tuple[str, int, dict[str, Any]]:
    """Name, kind and attributes of llamonitor's span for ``answer(0)``."""
    from llamonitor.export import SpanEncoder
    from llamonitor.testing import capture_spans

    with capture_spans() as spans:
        answer(0)
        llamonitor.flush(10)
        table = pa.Table.from_pylist(spans.rows(), schema=llamonitor.SCHEMA)
    span = SpanEncoder().encode(table).resource_spans[0].scope_spans[0].spans[0]
    attrs: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        attrs[kv.key] = getattr(kv.value, kind)
    return span.name, span.kind, attrs


def otel_round(receiver: Receiver, n: int, name: str, attrs: dict[str, Any]) -> float:
    """spans/s of ``n`` SDK spans (same name and attributes) until the receiver has them all."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    before = receiver.count()
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=receiver.base + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=n + 1))
    tracer = provider.get_tracer("bench")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attrs):
                bare(i)
        provider.force_flush(120_000)
        if not receiver.wait_for(before + n):
            raise RuntimeError("OpenTelemetry: the receiver did not get every span")
        elapsed = time.perf_counter() - t0
    finally:
        provider.shutdown()
    return n / elapsed


def per_call_ns(fn: Any, calls: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for i in range(calls):
            fn(i)
        return (time.perf_counter_ns() - t0) / calls
    finally:
        gc.enable()


def overhead(receiver: Receiver, trials: int, calls: int, spool: str) -> dict[str, float]:
    """Median (decorated - bare) ns per call, storage only vs storage + OTLP."""
    diffs: dict[str, list[float]] = {"storage only": [], "storage + OTLP exporter": []}
    for t in range(trials):
        order = list(diffs) if t % 2 == 0 else list(reversed(diffs))
        for label in order:
            with_otlp = label != "storage only"
            llamonitor.initialize_monitoring(_config(receiver if with_otlp else None, spool))
            try:
                per_call_ns(answer, calls // 10)  # warm up
                b = per_call_ns(bare, calls)
                d = per_call_ns(answer, calls)
                diffs[label].append(d - b)
                llamonitor.flush(60)
            finally:
                llamonitor.shutdown_monitoring(30)
    return {k: statistics.median(v) for k, v in diffs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = 5_000 if args.quick else 50_000
    rounds = 1 if args.quick else 3
    trials = 3 if args.quick else 7
    calls = 20_000 if args.quick else 100_000

    receiver = Receiver()
    spool = tempfile.mkdtemp(prefix="bench-otlp-spool-")
    results: dict[str, Any] = {"spans": n, "rounds": rounds}
    try:
        name, kind, attrs = equivalent_span()
        print(f"span: {name!r}, kind {kind}, {len(attrs)} attributes; {n:,} spans a round")
        ours: list[float] = []
        theirs: list[float] = []
        for r in range(rounds):
            pair = [("llamonitor", ours), ("otel", theirs)]
            for label, out in pair if r % 2 == 0 else reversed(pair):
                if label == "llamonitor":
                    out.append(llamonitor_round(receiver, n, spool))
                else:
                    out.append(otel_round(receiver, n, name, attrs))
        results["llamonitor_spans_per_s"] = statistics.median(ours)
        results["otel_sdk_spans_per_s"] = statistics.median(theirs)
        ratio = results["llamonitor_spans_per_s"] / results["otel_sdk_spans_per_s"]
        results["ratio"] = ratio
        print()
        print("| export to a local OTLP/HTTP receiver | spans/s |")
        print("|---|---:|")
        print(f"| llamonitor (@monitor_llm -> OTLPExporterConfig) | "
              f"{results['llamonitor_spans_per_s']:,.0f} |")
        print(f"| OpenTelemetry SDK (BatchSpanProcessor + OTLPSpanExporter) | "
              f"{results['otel_sdk_spans_per_s']:,.0f} |")
        print(f"| ratio | {ratio:.2f}x {'PASS' if ratio >= 1 else 'FAIL'} (target >= 1) |")

        costs = overhead(receiver, trials, calls, spool)
        results["overhead_ns"] = costs
        print()
        print("| decorator overhead per call | ns |")
        print("|---|---:|")
        for label, ns in costs.items():
            print(f"| {label} | {ns:,.0f} |")
        base = costs["storage only"]
        delta = costs["storage + OTLP exporter"] - base
        print(f"| difference | {delta:+,.0f} ({delta / base:+.0%}) |")
    finally:
        receiver.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OTEL_SDK_DISABLED", "false")
    threading.current_thread().name = "bench"
    sys.exit(main())
