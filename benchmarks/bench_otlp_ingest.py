#!/usr/bin/env python
# ruff: noqa: E501
"""llamonitor benchmark: OTLP/HTTP protobuf ingest into the embedded Parquet store,
beside Arize Phoenix receiving the same payloads on this machine, same run.

Usage::

    python benchmarks/bench_otlp_ingest.py                  # 200k spans; Phoenix 5,000 (cap 120 s)
    python benchmarks/bench_otlp_ingest.py --quick          # 50k spans; Phoenix 1,000 (cap 60 s)
    python benchmarks/bench_otlp_ingest.py --no-phoenix
    python benchmarks/bench_otlp_ingest.py --phoenix-bin /path/to/venv/bin/phoenix

The payloads: ``ExportTraceServiceRequest`` bodies of 512 spans (the
OpenTelemetry SDK's ``BatchSpanProcessor`` batch), built once with
``opentelemetry-proto``, each span an OTel GenAI one as
``opentelemetry-instrumentation-openai-v2`` records it (``chat gpt-4o-mini``,
provider, request/response model and id, tokens, temperature, finish
reasons, server address; traces of one agent span and 7 LLM calls).

**llamonitor**: ``llamonitor collect --dir <tmp> --no-grpc`` as its own
process (one process: HTTP receiver, mapping, writer, Parquet files). This
process posts the bodies from ``--clients`` keep-alive connections; the
figure is spans from the first post until ``/api/health`` says the writer
has written them all (durable in Parquet), then a DuckDB count of the
store checks that every span is there. Target (issue 11): >= 50,000 spans/s.

**Phoenix**: ``phoenix serve`` (``pip install arize-phoenix``, in a venv of
its own: it pins its own OpenTelemetry packages; ``.ci/run`` builds
``.venv-phoenix`` with the version its test uses, and this script takes
``--phoenix-bin``, else ``$PHOENIX_BIN``, else ``./.venv-phoenix``, else PATH),
with ``PHOENIX_WORKING_DIR`` a temp dir (SQLite) and free ports, gets the first
``--phoenix-spans`` of the same bodies at ``/v1/traces``. It answers 200 once
a request is queued and inserts in the background, so the durable figure is
the spans committed to its ``phoenix.db`` (read-only ``count(*)`` of ``spans``,
polled every 0.2 s) over the time from the first post until all are there or
the cap passes; then its GraphQL API (``projects { recordCount }``) must count
the same, and, once it has stopped, every sent span id must be in its
``spans`` table. Its users report ~80 spans/s on SQLite (Phoenix#3027).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

BATCH = 512
PROTOBUF = {"content-type": "application/x-protobuf"}


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        out = KeyValue(key=key)
        out.value.array_value.values.extend(AnyValue(string_value=v) for v in value)
        return out
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def payloads(spans: int, seed: int = 7) -> list[bytes]:
    """``spans`` GenAI spans in bodies of ``BATCH``, distinct ids throughout."""
    rng = __import__("random").Random(seed)
    now = time.time_ns()
    bodies = []
    made = 0
    while made < spans:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([
            _kv("service.name", "bench-app"), _kv("openinference.project.name", "bench"),
            _kv("telemetry.sdk.name", "opentelemetry"), _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.version", "1.45.2"), _kv("host.name", "bench-host"),
        ])
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.openai_v2"
        ss.scope.version = "2.1b0"
        n = min(BATCH, spans - made)
        root = b""
        trace = b""
        for i in range(n):
            t0 = now - rng.randrange(1, 3_600) * 10**9
            if i % 8 == 0:
                trace, root = rng.randbytes(16), rng.randbytes(8)
                span = ss.spans.add(trace_id=trace, span_id=root, name="invoke_agent planner",
                                    kind=1, start_time_unix_nano=t0, end_time_unix_nano=t0 + 900_000_000)
                span.attributes.extend([_kv("gen_ai.operation.name", "invoke_agent"),
                                        _kv("gen_ai.agent.name", "planner")])
                continue
            span = ss.spans.add(trace_id=trace, span_id=rng.randbytes(8), parent_span_id=root,
                                name="chat gpt-4o-mini", kind=3, start_time_unix_nano=t0,
                                end_time_unix_nano=t0 + rng.randrange(200, 2_000) * 1_000_000)
            span.attributes.extend([
                _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
                _kv("gen_ai.request.model", "gpt-4o-mini"),
                _kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                _kv("gen_ai.response.id", f"chatcmpl-{made + i}"),
                _kv("gen_ai.usage.input_tokens", rng.randrange(50, 4_000)),
                _kv("gen_ai.usage.output_tokens", rng.randrange(10, 800)),
                _kv("gen_ai.request.temperature", 0.7),
                _kv("gen_ai.response.finish_reasons", ["stop"]),
                _kv("server.address", "api.openai.com"), _kv("server.port", 443),
            ])
        bodies.append(req.SerializeToString())
        made += n
    return bodies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def post_all(url: str, bodies: list[bytes], clients: int, headers: dict[str, str]) -> list[int]:
    """Post every body (round robin over ``clients`` connections); the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def run(part: list[bytes]) -> None:
        with httpx.Client(timeout=120) as client:
            for body in part:
                while True:
                    status = client.post(url, content=body, headers=headers).status_code
                    if status != 503:  # the receiver's queue is full: retry, as exporters do
                        break
                    time.sleep(0.05)
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=run, args=(bodies[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def bench_llamonitor(bodies: list[bytes], spans: int, clients: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamonitor.cli", "collect", "--dir", str(tmp / "store"),
         "--http-port", str(port), "--no-grpc"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_http(base + "api/health", proc, 60)
        t0 = time.perf_counter()
        statuses = post_all(base + "v1/traces", bodies, clients, PROTOBUF)
        t_posted = time.perf_counter()
        written = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            writer = httpx.get(base + "api/health", timeout=30).json()["writer"]
            written = writer["events_written"]
            if written >= spans:
                break
            time.sleep(0.05)
        t1 = time.perf_counter()
    finally:
        proc.terminate()
        proc.wait(60)
    import duckdb

    con = duckdb.connect()
    stored = con.execute(
        f"SELECT count(*) FROM read_parquet('{tmp / 'store'}/**/*.parquet')"
    ).fetchall()[0][0]
    con.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "spans": spans, "stored": stored, "ok": statuses.count(200), "requests": len(bodies),
        "accepted_per_s": spans / (t_posted - t0), "durable_per_s": written / (t1 - t0),
        "seconds": t1 - t0,
    }


_COUNT = "{ projects { edges { node { name recordCount } } } }"


def phoenix_count(base: str) -> int:
    """The spans Phoenix's GraphQL API counts (every project)."""
    answer = httpx.post(base + "graphql", json={"query": _COUNT}, timeout=30).json()
    return sum(e["node"]["recordCount"] for e in answer["data"]["projects"]["edges"])


def phoenix_committed(db: Path) -> int:
    """Spans committed to Phoenix's SQLite file (read-only; WAL readers do not block it)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT count(*) FROM spans").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not migrated yet
        return 0
    finally:
        con.close()


def sent_span_ids(bodies: list[bytes]) -> set[str]:
    ids = set()
    for body in bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                ids.update(span.span_id.hex() for span in ss.spans)
    return ids


def bench_phoenix(phoenix: str, bodies: list[bytes], spans: int, clients: int,
                  cap_seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-phoenix-"))
    db = tmp / "phoenix.db"
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(tmp), "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_TELEMETRY_ENABLED": "false", "OTEL_SDK_DISABLED": "true"}
    log = open(tmp / "phoenix.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([phoenix, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp)
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_http(base + "healthz", proc, 240)
        t0 = time.perf_counter()
        statuses = post_all(base + "v1/traces", bodies, clients, PROTOBUF)
        t_posted = time.perf_counter()
        # Durable: rows committed to its SQLite file (it inserts in the background).
        stored, t1 = 0, t0
        deadline = t0 + cap_seconds
        while time.perf_counter() < deadline:
            stored, t1 = phoenix_committed(db), time.perf_counter()
            if stored >= spans:
                break
            time.sleep(0.2)
        counted = phoenix_count(base)  # what its own API says, same moment
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    # The spans that landed are the ones sent (its own DB, after it stopped).
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    landed = {r[0] for r in con.execute("SELECT span_id FROM spans")}
    con.close()
    missing = len(sent_span_ids(bodies) - landed)
    if stored < spans or counted != stored or missing:
        print(f"phoenix: {stored:,} committed, its API counts {counted:,}, {missing:,} sent "
              f"span ids missing; log tail:")
        print((tmp / "phoenix.log").read_text(errors="replace")[-1500:])
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "spans": spans, "stored": stored, "ok": statuses.count(200), "requests": len(bodies),
        "accepted_per_s": spans / (t_posted - t0), "durable_per_s": stored / (t1 - t0),
        "seconds": t1 - t0, "api_count": counted, "missing": missing,
    }


def find_phoenix(given: str | None) -> str | None:
    """The phoenix command: ``--phoenix-bin``, else ``PHOENIX_BIN`` (as ``.ci/run``
    sets it), else the repository's ``.venv-phoenix`` (``.ci/run`` builds it), else PATH."""
    if given or os.environ.get("PHOENIX_BIN"):
        return given or os.environ["PHOENIX_BIN"]
    beside = Path(__file__).resolve().parent.parent / ".venv-phoenix" / "bin" / "phoenix"
    return str(beside) if beside.exists() else shutil.which("phoenix")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--spans", type=int)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--no-phoenix", action="store_true")
    p.add_argument("--phoenix-bin", default=None,
                   help="the phoenix command (default: $PHOENIX_BIN, ./.venv-phoenix, PATH)")
    p.add_argument("--phoenix-spans", type=int)
    args = p.parse_args()
    spans = args.spans or (50_000 if args.quick else 200_000)
    phoenix_spans = args.phoenix_spans or (1_024 if args.quick else 5_120)
    cap = 60.0 if args.quick else 120.0
    bodies = payloads(spans)
    size = sum(map(len, bodies))
    print(f"{spans:,} GenAI spans in {len(bodies)} OTLP/protobuf bodies of {BATCH} "
          f"({size / spans:.0f} bytes/span), {args.clients} client connections\n")
    rows = []
    ours = bench_llamonitor(bodies, spans, args.clients)
    rows.append(("llamonitor collect (Parquet)", ours))
    phoenix = find_phoenix(args.phoenix_bin)
    if not args.no_phoenix:
        if phoenix is None:
            print("phoenix: not found (pip install arize-phoenix, or --phoenix-bin)")
        else:
            n = min(phoenix_spans, spans)
            part = bodies[: (n + BATCH - 1) // BATCH]
            rows.append(("Arize Phoenix serve (SQLite)", bench_phoenix(phoenix, part, n, args.clients, cap)))
    print(f"{'receiver':32} {'spans':>8} {'stored':>8} {'200s':>6} {'accepted/s':>12} {'durable/s':>11}")
    for name, r in rows:
        print(f"{name:32} {r['spans']:>8,} {r['stored']:>8,} {r['ok']:>6,} "
              f"{r['accepted_per_s']:>12,.0f} {r['durable_per_s']:>11,.0f}")
    if len(rows) == 2:
        r = rows[1][1]
        print(f"Phoenix: {r['stored']:,} spans committed to its SQLite file in {r['seconds']:.1f} s, "
              f"its GraphQL API counts {r['api_count']:,}, {r['missing']:,} sent span ids missing")
    target = "PASS" if ours["durable_per_s"] >= 50_000 else "FAIL"
    print(f"\nllamonitor: {ours['durable_per_s']:,.0f} spans/s durable (target >= 50,000: {target})")
    if len(rows) == 2 and rows[1][1]["durable_per_s"]:
        print(f"ratio llamonitor / Phoenix: {ours['durable_per_s'] / rows[1][1]['durable_per_s']:,.0f}x")
    if ours["stored"] != spans:
        print(f"WARNING: the store holds {ours['stored']:,} of {spans:,} spans")
        sys.exit(1)


if __name__ == "__main__":
    main()
