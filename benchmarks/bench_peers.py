#!/usr/bin/env python
# ruff: noqa: E501, RUF001, RUF002
"""llamonitor beside the SDKs a user would pick instead, measured in one run.

Usage::

    python benchmarks/bench_peers.py            # full run, 3-5 minutes
    python benchmarks/bench_peers.py --quick    # smoke run, about 40 s
    python benchmarks/bench_peers.py --only llamonitor,otel --json out.json

The same workload for every SDK: a sync function ``generate(prompt)`` returning
1 KB of text, instrumented the way each SDK's docs say:

* **llamonitor** ``@monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})``,
  Parquet in a temp dir;
* **OpenTelemetry SDK** ``tracer.start_as_current_span`` (bench.py's span: the
  same attributes, the four text metrics), ``BatchSpanProcessor``;
* **Langfuse** ``@observe()`` (its own OTel pipeline: ``LangfuseSpanProcessor``);
* **Logfire** ``@logfire.instrument()``, ``send_to_logfire=False``, a
  ``BatchSpanProcessor`` in ``additional_span_processors``;
* **OpenLLMetry** (``traceloop-sdk``) ``@workflow``, ``Traceloop.init(exporter=...)``;
* **OTel SDK, exporter discards**: bench.py's setup, for reference (not durable).

Every peer exports with OTLP/HTTP (protobuf) to a local receiver: a separate
process on 127.0.0.1 started by this script that answers 200, keeps the bodies
and decodes them only when asked to count, so its work is not charged to the
SDK under test. Nothing leaves the machine: every endpoint is 127.0.0.1, the
telemetry and opt-out flags are set, proxies are cleared.

Each measurement runs in a fresh child process (the peers share OpenTelemetry's
process-wide tracer provider, and configuration cannot be undone): per trial,
one child per SDK and phase, in an order that rotates from trial to trial.

* **caller** (hot path, like bench.py): background export parked (OTel batch
  size, queue and delay set huge; llamonitor's batch size and interval huge);
  rounds of ``n`` bare and ``n`` instrumented calls, alternating, the queue
  drained after each instrumented round outside the timing. Added = the
  median of per-round (instrumented − bare), on the calling thread's CPU
  time (other processes inflate wall time, not that; wall is printed too).
* **durable**: default batching, a queue large enough that nothing is dropped
  (llamonitor ``queue_full_policy="block"``; OTel ``OTEL_BSP_MAX_QUEUE_SIZE``).
  ``N`` calls as fast as possible; the clock stops when the SDK's flush and
  shutdown return; then the spans are counted back (DuckDB over the Parquet
  files; the receiver's decoded count). Spans/s = N / that time. Total CPU
  per span = process CPU time (every thread) over the same window / N, minus
  the bare loop's.

Every span is accounted for: each child checks that the spans stored (or
received, by distinct span id) equal the spans it made, warm-up included. A
mismatch or a crashed child makes the exit code 1; a peer that is not installed
is skipped, and the output says so.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------
# The SDKs and the workload
# --------------------------------------------------------------------------------------

SDKS = ["llamonitor", "otel", "langfuse", "logfire", "openllmetry", "otel-discard"]
LABEL = {
    "llamonitor": "llamonitor",
    "otel": "OpenTelemetry SDK",
    "langfuse": "Langfuse `@observe`",
    "logfire": "Logfire",
    "openllmetry": "OpenLLMetry `@workflow`",
    "otel-discard": "OTel SDK, exporter discards",
}
HOW = {
    "llamonitor": '`@monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})` → Parquet',
    "otel": "`start_as_current_span` + 4 text metrics, `BatchSpanProcessor` → OTLP/HTTP",
    "langfuse": "`@observe()`: input and output as JSON, its `LangfuseSpanProcessor` → OTLP/HTTP, gzip",
    "logfire": "`@logfire.instrument()`: arguments recorded; `send_to_logfire=False`, `BatchSpanProcessor` → OTLP/HTTP",
    "openllmetry": "`@workflow(name=...)`: input and output as JSON; `Traceloop.init(exporter=...)` → OTLP/HTTP",
    "otel-discard": "the OpenTelemetry SDK row's span; the exporter counts and discards (bench.py's setup; not durable)",
}
# Modules a child imports; one missing means the SDK is skipped.
NEEDS = {
    "llamonitor": ["llamonitor", "duckdb"],
    "otel": ["opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"],
    "langfuse": ["langfuse", "opentelemetry.exporter.otlp.proto.http"],
    "logfire": ["logfire", "opentelemetry.exporter.otlp.proto.http"],
    "openllmetry": ["traceloop.sdk", "opentelemetry.exporter.otlp.proto.http"],
    "otel-discard": ["opentelemetry.sdk"],
}
NEEDS_RECEIVER = {"otel", "langfuse", "logfire", "openllmetry"}
RECEIVER_NEEDS = ["opentelemetry.proto.collector.trace.v1.trace_service_pb2"]
DISTS = [
    "llamonitor",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "langfuse",
    "logfire",
    "traceloop-sdk",
    "protobuf",
    "pyarrow",
    "duckdb",
]

TEXT_1K = ("the model returned a detailed answer about vector databases and its cost\n" * 15)[:1024]
PROMPT = "What is the answer?"
WARMUP = 300
ROUND_SECONDS = 0.25  # target length of one caller loop; never fewer than MIN_CALLS calls
MIN_CALLS = 1_000
BIG = 2_000_000  # "parked"/"never full": OTel's batch size, queue and delay in hot-path mode


def generate(prompt: str) -> str:
    """The bare workload: what an LLM call returns, without the call."""
    return TEXT_1K


def workload() -> Callable[[str], str]:
    """A fresh copy of ``generate`` to decorate, named as in a user's module (Logfire
    and OpenLLMetry put the qualified name in the span)."""

    def fn(prompt: str) -> str:
        return TEXT_1K

    fn.__name__ = fn.__qualname__ = "generate"
    fn.__module__ = "app"
    return fn


def text_metrics(s: str) -> dict[str, int]:
    """bench.py's OTel span work: the four text metrics llamonitor stores."""
    return {
        "llm.text.char_count": len(s),
        "llm.text.word_count": len(s.split()),
        "llm.text.byte_size": len(s.encode("utf-8")),
        "llm.text.line_count": 0 if not s else s.count("\n") + (0 if s.endswith("\n") else 1),
    }


def version(dist: str) -> str:
    try:
        from importlib.metadata import version as v

        return v(dist)
    except Exception:
        return "-"


def missing(modules: list[str]) -> list[str]:
    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except (ImportError, ValueError):
            out.append(m)
    return out


# --------------------------------------------------------------------------------------
# The local OTLP/HTTP receiver (its own process)
# --------------------------------------------------------------------------------------


def serve_receiver() -> int:
    """Accept OTLP/HTTP exports on 127.0.0.1 under ``/<run>/...``, answer 200, keep the
    bodies; ``GET /_count/<run>`` decodes and counts them (and forgets them)."""
    import gzip
    import zlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    lock = threading.Lock()
    bodies: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    others: dict[str, Counter[str]] = defaultdict(Counter)

    def count(run: str) -> dict[str, Any]:
        with lock:
            got = bodies.pop(run, [])
            other = dict(others.pop(run, Counter()))
        names: Counter[str] = Counter()
        ids: set[bytes] = set()
        spans = raw = 0
        sample: dict[str, int] = {}  # one span's attributes: key -> bytes of its value
        for enc, body in got:
            raw += len(body)
            if enc == "gzip":
                body = gzip.decompress(body)
            elif enc == "deflate":
                body = zlib.decompress(body)
            req = ExportTraceServiceRequest.FromString(body)
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        if not sample:
                            sample = {kv.key: kv.value.ByteSize() for kv in sp.attributes}
                        spans += 1
                        names[sp.name] += 1
                        ids.add(sp.trace_id + sp.span_id)
        return {
            "requests": len(got),
            "bytes": raw,
            "spans": spans,
            "distinct": len(ids),
            "by_name": dict(names),
            "sample_attributes": sample,
            "other_requests": other,
        }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self._body()
            run, _, rest = self.path.lstrip("/").partition("/")
            if rest.endswith("v1/traces"):
                with lock:
                    bodies[run].append((self.headers.get("Content-Encoding") or "", body))
                # An empty ExportTraceServiceResponse: full success.
                self._reply(b"", "application/x-protobuf")
            else:
                with lock:
                    others[run][f"POST /{rest}"] += 1
                self._reply(b"{}", "application/json")

        def do_GET(self) -> None:
            if self.path.startswith("/_count/"):
                self._reply(json.dumps(count(self.path[8:])).encode(), "application/json")
                return
            run, _, rest = self.path.lstrip("/").partition("/")
            with lock:
                others[run][f"GET /{rest}"] += 1
            self._reply(b"{}", "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    # Serve until the parent closes our stdin (or dies).
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()
    return 0


def receiver_count(port: int, run: str) -> dict[str, Any]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/_count/{run}", timeout=300) as r:
        return dict(json.loads(r.read()))


# --------------------------------------------------------------------------------------
# One SDK in a child process
# --------------------------------------------------------------------------------------


class Adapter:
    """Sets one SDK up for a phase; gives the instrumented function, a drain (flush,
    outside any timing), a finish (flush + shutdown: the durable point) and a count."""

    fn: Callable[[str], str]

    def __init__(self, phase: str, port: int, run: str) -> None:
        self.phase, self.port, self.run = phase, port, run
        self.url = f"http://127.0.0.1:{port}/{run}/v1/traces"

    def drain(self) -> None:
        raise NotImplementedError

    def finish(self) -> bool:
        raise NotImplementedError

    def count(self) -> dict[str, Any]:
        c = receiver_count(self.port, self.run)
        c["stored"] = c["distinct"]
        return c

    def exporter(self) -> Any:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=self.url)


class Llamonitor(Adapter):
    def __init__(self, phase: str, port: int, run: str) -> None:
        super().__init__(phase, port, run)
        import llamonitor
        from llamonitor import MonitorConfig, StorageConfig, initialize_monitoring, monitor_llm

        self.lm = llamonitor
        self.out = Path(tempfile.mkdtemp(prefix="llamonitor-bench-peers-"))
        atexit.register(shutil.rmtree, self.out, True)  # also when the child fails
        if phase == "caller":  # bench.py's hot path: the worker parked during the timing
            cfg = MonitorConfig(
                storage=StorageConfig(
                    backend="parquet",
                    output_dir=self.out,
                    batch_size=10_000_000,
                    flush_interval_seconds=3600.0,
                ),
                max_queue_size=1_000_000,
                max_queue_bytes=4 * 1024**3,
                shutdown_timeout_seconds=600.0,
            )
        else:  # bench.py's throughput: default batching, nothing dropped
            cfg = MonitorConfig(
                storage=StorageConfig(backend="parquet", output_dir=self.out),
                queue_full_policy="block",
                block_timeout_seconds=600.0,
                shutdown_timeout_seconds=600.0,
            )
        self.writer = initialize_monitoring(cfg)

        self.fn = monitor_llm(measure_text=True, custom_attributes={"model": "gpt-4"})(workload())

    def drain(self) -> None:
        self.lm.flush(600.0)

    def finish(self) -> bool:
        from llamonitor import shutdown_monitoring

        return bool(shutdown_monitoring(600.0))

    def count(self) -> dict[str, Any]:
        import duckdb

        h = dict(self.writer.health_check())
        con = duckdb.connect()
        try:
            rows, distinct, chars = con.execute(
                "SELECT count(*), count(DISTINCT event_id), sum(text_char_count) "
                f"FROM read_parquet('{self.out}/**/*.parquet')"
            ).fetchone()
        finally:
            con.close()
            shutil.rmtree(self.out, ignore_errors=True)
        return {
            "rows": int(rows),
            "distinct": int(distinct),
            "sum_char_count": int(chars or 0),
            "chars_ok": int(chars or 0) == int(rows) * len(TEXT_1K),
            "stored": int(distinct) if int(chars or 0) == int(rows) * len(TEXT_1K) else -1,
            "written": h.get("events_written"),
            "dropped": h.get("events_dropped"),
        }


class Otel(Adapter):
    def __init__(self, phase: str, port: int, run: str) -> None:
        super().__init__(phase, port, run)
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider()
        # Batch size, delay and queue from OTEL_BSP_* (set by the parent per phase).
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter()))
        start = self.provider.get_tracer("llamonitor-bench").start_as_current_span
        attrs = {
            "llm.operation_name": "generate",
            "llm.operation_type": "llm_call",
            "session.id": "3f2a9c1e5b7d4f608a1b2c3d4e5f6a7b",
            "llm.model": "gpt-4",
        }

        def generate(prompt: str) -> str:
            with start("generate", attributes=attrs) as span:
                r = TEXT_1K
                span.set_attributes(text_metrics(r))
                return r

        self.fn = generate

    def drain(self) -> None:
        self.provider.force_flush()

    def finish(self) -> bool:
        ok = bool(self.provider.force_flush())
        self.provider.shutdown()
        return ok


class OtelDiscard(Otel):
    """bench.py's OpenTelemetry setup: the same span, an exporter that counts and
    discards. No serialization and nothing durable: the SDK's own floor."""

    def exporter(self) -> Any:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            exported = 0

            def export(self, spans: Any) -> Any:
                self.exported += len(spans)
                return SpanExportResult.SUCCESS

        self.discard = Discard()
        return self.discard

    def count(self) -> dict[str, Any]:
        n = self.discard.exported
        return {"stored": n, "spans": n, "by_name": {"generate": n}}


class Langfuse(Adapter):
    def __init__(self, phase: str, port: int, run: str) -> None:
        super().__init__(phase, port, run)
        # The SDK's own exporter to <base>/api/public/otel/v1/traces; keys are dummies.
        os.environ["LANGFUSE_BASE_URL"] = os.environ["LANGFUSE_HOST"] = (
            f"http://127.0.0.1:{port}/{run}"
        )
        from langfuse import Langfuse as Client
        from langfuse import observe

        self.client = Client()

        self.fn = observe()(workload())

    def drain(self) -> None:
        self.client.flush()

    def finish(self) -> bool:
        self.client.flush()
        self.client.shutdown()
        return True


class Logfire(Adapter):
    def __init__(self, phase: str, port: int, run: str) -> None:
        super().__init__(phase, port, run)
        import logfire
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.logfire = logfire
        logfire.configure(
            send_to_logfire=False,
            console=False,
            service_name="llamonitor-bench",
            additional_span_processors=[BatchSpanProcessor(self.exporter())],
        )

        self.fn = logfire.instrument()(workload())

    def drain(self) -> None:
        self.logfire.force_flush(timeout_millis=600_000)

    def finish(self) -> bool:
        ok = bool(self.logfire.force_flush(timeout_millis=600_000))
        self.logfire.shutdown(timeout_millis=600_000)
        return ok


class OpenLLMetry(Adapter):
    def __init__(self, phase: str, port: int, run: str) -> None:
        super().__init__(phase, port, run)
        from opentelemetry import trace
        from traceloop.sdk import Traceloop
        from traceloop.sdk.decorators import workflow

        Traceloop.init(
            app_name="llamonitor-bench",
            exporter=self.exporter(),
            disable_batch=False,
            telemetry_enabled=False,
        )
        self.provider = trace.get_tracer_provider()

        self.fn = workflow(name="generate")(workload())

    def drain(self) -> None:
        self.provider.force_flush()  # type: ignore[attr-defined]

    def finish(self) -> bool:
        ok = bool(self.provider.force_flush())  # type: ignore[attr-defined]
        self.provider.shutdown()  # type: ignore[attr-defined]
        return ok


ADAPTERS: dict[str, type[Adapter]] = {
    "llamonitor": Llamonitor,
    "otel": Otel,
    "otel-discard": OtelDiscard,
    "langfuse": Langfuse,
    "logfire": Logfire,
    "openllmetry": OpenLLMetry,
}


def timed(f: Callable[[str], str], n: int) -> tuple[float, float, float]:
    """``n`` calls of ``f``: (wall, calling thread's CPU, whole process's CPU), µs per call."""
    wall, thread, proc = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    p = PROMPT
    w0, t0, c0 = wall(), thread(), proc()
    for _ in range(n):
        f(p)
    w1, t1, c1 = wall(), thread(), proc()
    return (w1 - w0) / n / 1000.0, (t1 - t0) / n / 1000.0, (c1 - c0) / n / 1000.0


def run_child(a: argparse.Namespace) -> int:
    """One SDK, one phase; the result goes to ``a.out`` as JSON."""
    t_setup = time.perf_counter()
    sdk = ADAPTERS[a.child](a.phase, a.port, a.run)
    res: dict[str, Any] = {"sdk": a.child, "phase": a.phase, "pid": os.getpid()}
    res["setup_s"] = time.perf_counter() - t_setup
    fn = sdk.fn
    if fn(PROMPT) != TEXT_1K:  # the result passes through untouched
        raise AssertionError(f"{a.child}: the decorated function changed its result")
    made = 1
    timed(generate, WARMUP)
    warm_us = timed(fn, WARMUP)[0]
    made += WARMUP
    sdk.drain()
    if a.phase == "caller":
        # A mean per call does not depend on the loop's length (the drain is outside
        # the timing), so slow SDKs get shorter loops: about ROUND_SECONDS each.
        calls = min(a.calls, max(MIN_CALLS, int(ROUND_SECONDS * 1e6 / max(warm_us, 0.01))))
        res["calls"] = calls
        per: dict[str, list[tuple[float, float, float]]] = {"bare": [], "inst": []}
        for r in range(a.rounds):
            for v in ("bare", "inst") if r % 2 == 0 else ("inst", "bare"):
                gc.collect()
                per[v].append(timed(fn if v == "inst" else generate, calls))
                if v == "inst":
                    made += calls
                    sdk.drain()  # outside the timing: the next round starts with an empty queue
        bare, inst = per["bare"], per["inst"]
        res.update(
            bare_us=[b[0] for b in bare],
            inst_us=[i[0] for i in inst],
            bare_cpu_us=[b[1] for b in bare],
            inst_cpu_us=[i[1] for i in inst],
            added_us=[i[0] - b[0] for i, b in zip(inst, bare, strict=True)],
            added_cpu_us=[i[1] - b[1] for i, b in zip(inst, bare, strict=True)],
            # Parked means no other thread works during the timed loop: process CPU
            # beyond the calling thread's, per call.
            unparked_cpu_us=[i[2] - i[1] for i in inst],
        )
        res["finished"] = sdk.finish()
    else:
        n = a.n
        gc.collect()
        res["bare_us"], _, res["bare_cpu_us"] = timed(generate, n)
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        calls_us, thread_us, _ = timed(fn, n)
        res["finished"] = sdk.finish()
        t_total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        made += n
        res.update(
            n=n,
            calls_s=calls_us * n / 1e6,
            total_s=t_total,
            spans_per_s=n / t_total,
            cpu_s=cpu,
            cpu_us=cpu / n * 1e6 - res["bare_cpu_us"],
            caller_thread_cpu_us=thread_us - res["bare_cpu_us"],
            caller_concurrent_us=calls_us - res["bare_us"],
        )
    c = sdk.count()
    res["made"] = made
    res["count"] = c
    res["accounted"] = c["stored"] == made and c.get("spans", made) == made
    Path(a.out).write_text(json.dumps(res))
    return 0


# --------------------------------------------------------------------------------------
# The parent: run the children interleaved, aggregate, print
# --------------------------------------------------------------------------------------

SCRUB_PREFIXES = ("OTEL_", "LANGFUSE_", "LOGFIRE_", "TRACELOOP_")
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def child_env(phase: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(SCRUB_PREFIXES) and k not in PROXIES
    }
    env.update(
        {
            # Nothing may try the internet: every endpoint is 127.0.0.1 and these say so.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "DO_NOT_TRACK": "1",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-bench",
            "LANGFUSE_SECRET_KEY": "sk-lf-bench",
            "LOGFIRE_SEND_TO_LOGFIRE": "false",
            "LOGFIRE_CONSOLE": "false",
            "TRACELOOP_TELEMETRY": "false",
            "TRACELOOP_METRICS_ENABLED": "false",
            "TRACELOOP_LOGGING_ENABLED": "false",
            "TRACELOOP_SUPPRESS_WARNINGS": "true",
            "PYTHONUNBUFFERED": "1",
            # Never full, so no peer drops what the caller outruns (OTel's default is 2048).
            "OTEL_BSP_MAX_QUEUE_SIZE": str(BIG),
        }
    )
    if phase == "caller":  # parked: the worker wakes neither on size nor on time
        env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = str(BIG)
        env["OTEL_BSP_SCHEDULE_DELAY"] = str(3_600_000)
    return env


def spawn(
    sdk: str, phase: str, trial: int, a: argparse.Namespace, port: int, work: Path
) -> dict[str, Any]:
    run = f"{sdk}-{phase}-{trial}"
    out, log = work / f"{run}.json", work / f"{run}.log"
    cmd = [
        sys.executable, __file__, "--_child", sdk, "--phase", phase, "--port", str(port),
        "--run", run, "--out", str(out), "--n", str(a.n), "--calls", str(a.calls),
        "--rounds", str(a.rounds),
    ]  # fmt: skip
    t = time.perf_counter()
    with log.open("wb") as fh:
        try:
            rc = subprocess.run(
                cmd, env=child_env(phase), stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=900, check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = -9
    wall = time.perf_counter() - t
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        return {"sdk": sdk, "phase": phase, "error": f"exit {rc}", "log": tail, "wall_s": wall}
    res = dict(json.loads(out.read_text()))
    res["wall_s"] = wall
    return res


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def aggregate(runs: list[dict[str, Any]], sdks: list[str]) -> dict[str, Any]:
    agg: dict[str, Any] = {}
    for sdk in sdks:
        mine = [r for r in runs if r["sdk"] == sdk]
        ok = [r for r in mine if "error" not in r]
        caller = [r for r in ok if r["phase"] == "caller"]
        durable = [r for r in ok if r["phase"] == "durable"]

        def pool(key: str, rs: list[dict[str, Any]] = caller) -> list[float]:
            return [x for r in rs for x in r[key]]

        def each(key: str, rs: list[dict[str, Any]] = durable) -> list[float]:
            return [float(r[key]) for r in rs]

        agg[sdk] = {
            "errors": [r for r in mine if "error" in r],
            "caller_children": len(caller),
            "durable_children": len(durable),
            "bare_us": median(pool("bare_us")),
            "added_us": median(pool("added_us")),
            "added_us_all": pool("added_us"),
            "bare_cpu_us": median(pool("bare_cpu_us")),
            "added_cpu_us": median(pool("added_cpu_us")),
            "added_cpu_us_all": pool("added_cpu_us"),
            "unparked_cpu_us": median(pool("unparked_cpu_us")),
            "calls": min((int(r["calls"]) for r in caller), default=0),
            "cpu_us": median(each("cpu_us")),
            "cpu_us_all": each("cpu_us"),
            "spans_per_s": median(each("spans_per_s")),
            "spans_per_s_all": each("spans_per_s"),
            "caller_thread_cpu_us": median(each("caller_thread_cpu_us")),
            "caller_concurrent_us": median(each("caller_concurrent_us")),
            "made": sum(r["made"] for r in ok),
            "stored": sum(r["count"]["stored"] for r in ok),
            "unaccounted": [
                {"phase": r["phase"], "made": r["made"], "count": r["count"]}
                for r in ok
                if not r["accounted"]
            ],
            "span_names": sorted({n for r in ok for n in r["count"].get("by_name", {})}),
            "other_requests": {
                k: v for r in ok for k, v in r["count"].get("other_requests", {}).items()
            },
            "not_finished": sum(1 for r in ok if not r["finished"]),
        }
    return agg


def ratio(x: float, y: float) -> str:
    return f"{x / y:.1f}×" if y > 0 and x == x and y == y else "–"


def f2(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def table(title: str, cols: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*r)
        Console(width=None if sys.stdout.isatty() else 200).print(t)
    except ImportError:
        say(title)
        for r in [cols, *rows]:
            say(" | ".join(r))


def report(agg: dict[str, Any], a: argparse.Namespace) -> None:
    lm = agg.get("llamonitor")
    nan = float("nan")
    base = lm or {"added_cpu_us": nan, "added_us": nan, "cpu_us": nan, "spans_per_s": nan}
    rows = [
        [
            LABEL[sdk], f2(r["bare_cpu_us"]), f2(r["added_cpu_us"]), ratio(r["added_cpu_us"], base["added_cpu_us"]),
            f2(r["bare_us"]), f2(r["added_us"]), ratio(r["added_us"], base["added_us"]),
            f2(r["unparked_cpu_us"]), f"{len(r['added_cpu_us_all'])} × {r['calls']:,}",
        ]
        for sdk, r in agg.items()
    ]  # fmt: skip
    table(
        f"Caller-side cost, hot path: export parked (µs per call; medians of {a.rounds} rounds × {a.trials} children)",
        [
            "SDK",
            "bare CPU",
            "added CPU",
            "÷ llamonitor",
            "bare wall",
            "added wall",
            "÷ llamonitor",
            "other threads' CPU",
            "rounds × calls",
        ],
        rows,
    )
    say(
        "  CPU: the calling thread's (time.thread_time), which other engineers' load does not inflate as it does "
        "wall time; other threads' CPU during the parked loop should be ~0 (it shows a worker that was not parked)."
    )
    rows = [
        [
            LABEL[sdk], f2(r["cpu_us"]), ratio(r["cpu_us"], base["cpu_us"]),
            f"{r['spans_per_s']:,.0f}" if r["spans_per_s"] == r["spans_per_s"] else "–",
            ratio(base["spans_per_s"], r["spans_per_s"]),
            f2(r["caller_thread_cpu_us"]), f2(r["caller_concurrent_us"]), f"{r['stored']:,} / {r['made']:,}",
        ]
        for sdk, r in agg.items()
    ]  # fmt: skip
    table(
        f"Total CPU per span (every thread) and durable end to end ({a.n:,} calls; medians of {a.trials} children)",
        [
            "SDK",
            "CPU µs/span",
            "÷ llamonitor",
            "durable spans/s",
            "llamonitor ÷",
            "caller-thread CPU µs",
            "caller wall µs",
            "spans counted / made",
        ],
        rows,
    )
    say(
        "  caller-thread CPU / caller wall: per call in the durable run's call loop (export running), minus the bare "
        "loop's; the rest of the CPU column is the export's. 'spans counted / made' covers every child, warm-ups included."
    )


def markdown(agg: dict[str, Any], a: argparse.Namespace, info: dict[str, Any]) -> str:
    lm = agg.get("llamonitor")
    nan = float("nan")
    base = lm or {"added_cpu_us": nan, "cpu_us": nan, "spans_per_s": nan}
    v = info["versions"]
    lines = [
        f"**Beside the peers** (`python benchmarks/bench_peers.py`, {info['date']}; llamonitor {v['llamonitor']}, "
        f"OpenTelemetry SDK {v['opentelemetry-sdk']}, Langfuse {v['langfuse']}, Logfire {v['logfire']}, "
        f"traceloop-sdk {v['traceloop-sdk']}). One sync function returning 1 KB of text, each SDK in fresh "
        "processes, interleaved. The peers export OTLP/HTTP to a local receiver in its own process; llamonitor "
        "writes Parquet. *Caller*: µs of the calling thread's CPU added per call, export parked (median of "
        f"{a.rounds * a.trials} rounds of {min(MIN_CALLS, a.calls):,}–{a.calls:,} calls). *CPU*: the process's CPU, every thread, from the first "
        f"call until flush and shutdown return, per span, bare loop subtracted. *Durable*: {a.n:,} calls as fast as "
        "possible until flush and shutdown return; every span counted back (median of "
        f"{a.trials}).",
        "",
        "| SDK | instrumented as | caller µs | ÷ llamonitor | CPU µs/span | ÷ llamonitor | durable spans/s | llamonitor ÷ |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sdk, r in agg.items():
        b = "**" if sdk == "llamonitor" else ""
        rate = f"{r['spans_per_s']:,.0f}" if r["spans_per_s"] == r["spans_per_s"] else "–"
        lines.append(
            f"| {b}{LABEL[sdk]}{b} | {HOW[sdk]} | {b}{f2(r['added_cpu_us'])}{b} | "
            f"{ratio(r['added_cpu_us'], base['added_cpu_us'])} | {b}{f2(r['cpu_us'])}{b} | "
            f"{ratio(r['cpu_us'], base['cpu_us'])} | {b}{rate}{b} | {ratio(base['spans_per_s'], r['spans_per_s'])} |"
        )
    made = sum(r["made"] for r in agg.values())
    stored = sum(r["stored"] for r in agg.values())
    lines += ["", f"Spans made {made:,}; counted back {stored:,}."]
    return "\n".join(lines)


def machine(sdks: list[str]) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "versions": {d: version(d) for d in DISTS},
        "sdks": sdks,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (~1 minute)")
    p.add_argument("--only", default=",".join(SDKS), help=f"comma-separated, of {','.join(SDKS)}")
    p.add_argument("--trials", type=int, help="children per SDK and phase (default 3, quick 1)")
    p.add_argument("--n", type=int, help="calls of the durable run (default 20,000, quick 5,000)")
    p.add_argument(
        "--calls", type=int, help="most calls per caller loop (default 4,000, quick 2,000)"
    )
    p.add_argument("--rounds", type=int, help="caller rounds per child (default 4, quick 2)")
    p.add_argument("--json", metavar="PATH", help="write every figure and trial as JSON")
    p.add_argument("--_receiver", dest="receiver", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_child", dest="child", help=argparse.SUPPRESS)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.receiver:
        return serve_receiver()
    if a.child:
        return run_child(a)
    a.trials = a.trials or (1 if a.quick else 3)
    a.n = a.n or (5_000 if a.quick else 20_000)
    a.calls = a.calls or (2_000 if a.quick else 4_000)
    a.rounds = a.rounds or (2 if a.quick else 4)

    wanted = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SDKS]
    if unknown:
        p.error(f"unknown SDK(s) {unknown}; choose from {SDKS}")
    sdks, skipped = [], {}
    for sdk in wanted:
        gone = missing(NEEDS[sdk] + (RECEIVER_NEEDS if sdk in NEEDS_RECEIVER else []))
        if gone:
            skipped[sdk] = gone
        else:
            sdks.append(sdk)
    info = machine(sdks)
    say(
        f"llamonitor vs peers — {info['cpus']} × {info['cpu']}, CPython {info['python']}, load {info['loadavg'][0]:.1f}"
    )
    say("versions: " + ", ".join(f"{d} {v}" for d, v in info["versions"].items()))
    for sdk, gone in skipped.items():
        pkg = "llamonitor duckdb" if sdk == "llamonitor" else "see benchmarks/README.md"
        say(f"SKIPPED {LABEL[sdk]}: not installed ({', '.join(gone)}; {pkg})")
    if not sdks:
        say("nothing to run")
        return 1
    say(
        f"trials {a.trials}; caller: {a.rounds} rounds of up to {a.calls:,} calls per child; durable: {a.n:,} calls per child"
    )

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="llamonitor-bench-peers-"))
    receiver = None
    port = 0
    if NEEDS_RECEIVER.intersection(sdks):
        receiver = subprocess.Popen(
            [sys.executable, __file__, "--_receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=child_env("durable"),
        )  # fmt: skip
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
    runs: list[dict[str, Any]] = []
    try:
        for t in range(a.trials):
            order = sdks[t % len(sdks) :] + sdks[: t % len(sdks)]
            for phase in ("caller", "durable"):
                for sdk in order:
                    r = spawn(sdk, phase, t, a, port, work)
                    runs.append(r)
                    if "error" in r:
                        say(f"  trial {t + 1} {phase:7} {LABEL[sdk]}: FAILED {r['error']}")
                        for line in r["log"]:
                            say(f"      {line}")
                    elif phase == "caller":
                        say(
                            f"  trial {t + 1} caller  {LABEL[sdk]:28} added {median(r['added_cpu_us']):8.2f} µs CPU"
                            f" ({median(r['added_us']):.2f} wall)  spans {r['count']['stored']:,}/{r['made']:,}"
                            f"  ({r['wall_s']:.1f} s)"
                        )
                    else:
                        say(
                            f"  trial {t + 1} durable {LABEL[sdk]:28} {r['spans_per_s']:9,.0f} spans/s"
                            f"  CPU {r['cpu_us']:7.2f} µs/span  spans {r['count']['stored']:,}/{r['made']:,}"
                            f"  ({r['wall_s']:.1f} s)"
                        )
    finally:
        if receiver is not None:
            with contextlib.suppress(Exception):
                assert receiver.stdin is not None
                receiver.stdin.close()
                receiver.wait(10)
            if receiver.poll() is None:
                receiver.kill()
        shutil.rmtree(work, ignore_errors=True)

    agg = aggregate(runs, sdks)
    say()
    report(agg, a)
    bad = False
    for sdk, r in agg.items():
        for e in r["errors"]:
            bad = True
            say(f"FAILED {LABEL[sdk]} ({e['phase']}): {e['error']}")
        for u in r["unaccounted"]:
            bad = True
            say(
                f"SPANS UNACCOUNTED {LABEL[sdk]} ({u['phase']}): made {u['made']:,}, counted {u['count']}"
            )
        if r["not_finished"]:
            bad = True
            say(
                f"FLUSH FAILED {LABEL[sdk]}: flush/shutdown returned False in {r['not_finished']} children"
            )
        extra = (
            f"; other requests to the receiver: {r['other_requests']}"
            if r["other_requests"]
            else ""
        )
        say(
            f"  {LABEL[sdk]}: {r['stored']:,} of {r['made']:,} spans accounted for; span names {r['span_names'] or '(Parquet rows)'}{extra}"
        )
    md = markdown(agg, a, info)
    say()
    say("Markdown for the README:")
    say()
    say(md)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - t0
    say(
        f"\n(whole run: {info['seconds']:.0f} s; load {info['loadavg'][0]:.1f} → {info['loadavg_end'][0]:.1f})"
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(a),
                    "skipped": skipped,
                    "summary": agg,
                    "runs": runs,
                    "markdown": md,
                },
                indent=2,
                default=str,
            )
        )
        say(f"JSON written to {a.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
