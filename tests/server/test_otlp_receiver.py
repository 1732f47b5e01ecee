"""The OTLP receiver of ``llamonitor serve`` (``POST /v1/traces``, OTLP/gRPC) on a
real uvicorn / grpcio server, fed by the official OpenTelemetry SDK exporters
(``opentelemetry-exporter-otlp-proto-http`` and ``-grpc``), by hand-built OTLP
requests, and by the hostile inputs of issue 11: truncated protobuf, wrong
content types, 100 MB bodies, decompression bombs, 1M-attribute spans, invalid
ids, clocks far in the future. Each is a clear 4xx (or a partial success) and a
count, and the spans of the requests around them all land.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
grpc = pytest.importorskip("grpc")

from google.rpc.status_pb2 import Status  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: E402
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: E402
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from llamonitor.otel._values import MAX_ATTRIBUTES  # noqa: E402
from llamonitor.server import ServerConfig, ServerHandle, start_server  # noqa: E402
from llamonitor.server._ingest import Ingestor  # noqa: E402

MIB = 1024 * 1024
PROTOBUF = {"content-type": "application/x-protobuf"}
TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ServerHandle]:
    """``llamonitor serve`` of a Parquet store, with OTLP/gRPC on a free port and a
    2 MiB OTLP body bound (so oversized bodies are cheap to send)."""
    handle = start_server(
        ServerConfig(port=0, otlp_grpc_port=0, otlp_max_body_bytes=2 * MIB,
                     otlp_max_decompressed_bytes=8 * MIB),
        directory=tmp_path / "store",
    )
    yield handle
    handle.stop()


def ingestor(handle: ServerHandle) -> Ingestor:
    assert handle.receive is not None
    return handle.receive.ingestor


def stored(handle: ServerHandle, where: str = "") -> list[dict[str, Any]]:
    """The store's rows once the receiver's writer has flushed."""
    assert ingestor(handle).writer.flush(15)
    store = handle.app.app.state.llamonitor.store  # type: ignore[attr-defined]
    return list(store.rows(f"SELECT * FROM {{rel}} {where} ORDER BY timestamp, span_id"))


def health(handle: ServerHandle) -> dict[str, Any]:
    otlp: dict[str, Any] = httpx.get(handle.url + "api/health").json()["otlp"]
    return otlp


def grpc_target(handle: ServerHandle) -> str:
    assert handle.receive is not None and handle.receive.grpc is not None
    return f"127.0.0.1:{handle.receive.grpc.port}"


def sdk_spans(exporter: SpanExporter, service: str = "shop") -> list[str]:
    """Record an agent -> LLM call -> tool trace with the real SDK and export it
    through ``exporter``; returns the span names."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.otlp")
    with tracer.start_as_current_span("invoke_agent planner") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.agent.name", "planner")
        agent.set_attribute("gen_ai.conversation.id", "conv-7")
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            llm.set_attribute("gen_ai.usage.input_tokens", 1000)
            llm.set_attribute("gen_ai.usage.output_tokens", 100)
            llm.set_attribute("gen_ai.conversation.id", "conv-7")
        with tracer.start_as_current_span("execute_tool search") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_status(StatusCode.ERROR, "index offline")
    assert provider.force_flush(15_000)
    provider.shutdown()
    return ["invoke_agent planner", "chat gpt-4o-mini", "execute_tool search"]


def assert_trace(rows: list[dict[str, Any]]) -> None:
    by_name = {r["operation_name"]: r for r in rows}
    agent, llm, tool = (by_name[n] for n in
                        ("invoke_agent planner", "chat gpt-4o-mini", "execute_tool search"))
    assert agent["parent_span_id"] is None
    assert llm["parent_span_id"] == tool["parent_span_id"] == agent["span_id"]
    assert len({r["trace_id"] for r in rows}) == 1 and len(agent["trace_id"]) == 32
    assert (agent["operation_type"], llm["operation_type"], tool["operation_type"]) == (
        "agent_workflow", "llm_call", "tool")
    assert agent["agent_name"] == "planner" and agent["session_id"] == "conv-7"
    assert (llm["provider"], llm["model"], llm["input_tokens"], llm["output_tokens"]) == (
        "openai", "gpt-4o-mini", 1000, 100)
    assert llm["total_tokens"] == 1100
    assert llm["cost_usd"] is not None and llm["cost_source"] == "genai-prices"  # priced here
    assert tool["error"] is True and tool["error_message"] == "index offline"
    assert {r["project_name"] for r in rows} == {"shop"}
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in rows)


def request_of(*spans: Span, service: str = "hand") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    name = AnyValue(string_value=service)
    rs.resource.attributes.append(KeyValue(key="service.name", value=name))
    rs.scope_spans.add().spans.extend(spans)
    return req


def span(n: int, trace: bytes = b"\x0a" * 16, start: int | None = None, **attrs: Any) -> Span:
    t0 = time.time_ns() - 10_000_000 if start is None else start
    return Span(
        trace_id=trace, span_id=n.to_bytes(8, "big"), name=f"span-{n}",
        start_time_unix_nano=t0, end_time_unix_nano=t0 + 1_000_000,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in attrs.items()],
    )


def post(handle: ServerHandle, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(handle.url + "v1/traces", content=body, headers=headers or PROTOBUF,
                      timeout=30)


# -- the official exporters ----------------------------------------------------


def test_official_http_exporter_lands_rows_with_columns_and_hierarchy(
    receiver: ServerHandle,
) -> None:
    """opentelemetry-exporter-otlp-proto-http (protobuf, gzip) -> rows with ids,
    parent links, GenAI columns, status and a computed cost."""
    sdk_spans(HttpExporter(endpoint=receiver.url + "v1/traces", compression=Compression.Gzip))
    rows = stored(receiver)
    assert len(rows) == 3
    assert_trace(rows)
    counts = health(receiver)
    assert counts["spans_accepted"] == 3 and counts["spans_rejected"] == 0


def test_official_grpc_exporter_lands_the_same_rows(receiver: ServerHandle) -> None:
    """opentelemetry-exporter-otlp-proto-grpc (gzip) -> the same rows over OTLP/gRPC."""
    sdk_spans(GrpcExporter(endpoint=grpc_target(receiver), insecure=True,
                           compression=grpc.Compression.Gzip))
    rows = stored(receiver)
    assert len(rows) == 3
    assert_trace(rows)


def test_token_is_required_over_http_and_grpc(tmp_path: Path) -> None:
    """With a token, a request without it is 401 / UNAUTHENTICATED (counted), and the
    exporters configured with the Bearer header get through."""
    handle = start_server(ServerConfig(port=0, otlp_grpc_port=0, token=TOKEN),
                          directory=tmp_path / "store")
    try:
        body = request_of(span(1)).SerializeToString()
        assert post(handle, body).status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        channel = grpc.insecure_channel(grpc_target(handle))
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            export(request_of(span(2)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        sdk_spans(HttpExporter(endpoint=handle.url + "v1/traces", headers=auth))
        sdk_spans(GrpcExporter(endpoint=grpc_target(handle), insecure=True,
                               headers=tuple(auth.items())))
        assert len(stored(handle)) == 6
        got = httpx.get(handle.url + "api/health", headers=auth).json()["otlp"]
        assert got["refused_unauthenticated"] == 2
    finally:
        handle.stop()


# -- encodings -----------------------------------------------------------------


def test_otlp_json_with_hex_ids_camel_case_and_int_enums(receiver: ServerHandle) -> None:
    """OTLP/JSON (hex ids, camelCase, enum numbers, int64 as strings) is accepted and
    answered in JSON; the span lands with its parent."""
    now = time.time_ns()
    doc = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
            "scopeSpans": [{
                "scope": {"name": "manual"},
                "spans": [
                    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                     "name": "root", "kind": 2, "startTimeUnixNano": str(now - 2_000_000),
                     "endTimeUnixNano": str(now)},
                    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
                     "parentSpanId": "eee19b7ec3c1b174", "name": "child", "kind": 3,
                     "startTimeUnixNano": now - 1_000_000, "endTimeUnixNano": now,
                     "status": {"code": 2, "message": "bad"},
                     "attributes": [{"key": "llm.token_count.prompt", "value": {"intValue": "12"}}],
                     "someFutureField": True},
                ],
            }],
        }]
    }
    response = post(receiver, json.dumps(doc).encode(), **{"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # no partial success: everything accepted
    root, child = stored(receiver)
    assert root["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert child["parent_span_id"] == "eee19b7ec3c1b174" == root["span_id"]
    assert child["error"] is True and child["input_tokens"] == 12
    assert json.loads(root["custom_attributes"])["otel.span_kind"] == "server"


def test_partial_success_reports_rejected_spans_in_the_request_encoding(
    receiver: ServerHandle,
) -> None:
    """A request with an invalid span is a 200 whose partial_success counts and
    explains it (protobuf and JSON); the valid spans land; /api/health counts by reason."""
    bad_id = Span(trace_id=bytes(16), span_id=b"\x01" * 8, name="zero-trace",
                  start_time_unix_nano=time.time_ns())
    future = span(3, start=time.time_ns() + 10 * 365 * 86400 * 10**9)
    response = post(receiver, request_of(span(1), bad_id, future).SerializeToString())
    assert response.status_code == 200
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 2
    assert "invalid trace_id" in parsed.partial_success.error_message
    assert "24 h" in parsed.partial_success.error_message
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "not-hex", "spanId": "0000000000000009", "name": "x",
         "startTimeUnixNano": str(time.time_ns())},
        {"traceId": "0a" * 16, "spanId": "0000000000000008", "name": "ok",
         "startTimeUnixNano": str(time.time_ns())},
    ]}]}]}
    as_json = post(receiver, json.dumps(doc).encode(), **{"content-type": "application/json"})
    assert as_json.status_code == 200
    assert as_json.json()["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert sorted(r["operation_name"] for r in stored(receiver)) == ["ok", "span-1"]
    counts = health(receiver)
    assert counts["rejected_by_reason"] == {"invalid_trace_id": 2, "clock_future": 1}
    assert counts["spans_rejected"] == 3 and counts["spans_accepted"] == 2


# -- the bad-input matrix --------------------------------------------------------


def test_bad_requests_are_clear_4xx_counted_and_lose_nothing_around_them(
    receiver: ServerHandle,
) -> None:
    """Truncated protobuf (400), garbage JSON (400), a wrong content type (415), an
    unknown encoding (415), corrupt gzip (400), a gzip bomb (413): each answered with a
    google.rpc.Status naming the problem and counted, while the good requests sent
    between them all land."""
    good = [request_of(span(i, trace=bytes([i]) * 16)).SerializeToString() for i in range(1, 8)]
    whole = request_of(span(99), span(100)).SerializeToString()
    bomb = gzip.compress(b"\0" * (9 * MIB))  # 9 MiB past an 8 MiB bound, 9 KB sent
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (whole[: len(whole) - 7], PROTOBUF, 400, "not a valid OTLP"),
        (b"{not json", {"content-type": "application/json"}, 400, "not JSON"),
        (whole, {"content-type": "text/plain"}, 415, "unsupported Content-Type"),
        (whole, {**PROTOBUF, "content-encoding": "br"}, 415, "unsupported Content-Encoding"),
        (gzip.compress(whole)[:-8] + bytes(8), {**PROTOBUF, "content-encoding": "gzip"}, 400,
         "corrupt"),  # a wrong CRC
        (bomb, {**PROTOBUF, "content-encoding": "gzip"}, 413, "decompresses to more than"),
    ]
    assert post(receiver, good[0]).status_code == 200
    for (body, headers, status, words), ok in zip(cases, good[1:], strict=True):
        response = post(receiver, body, **headers)
        assert response.status_code == status, response.content
        if headers["content-type"] == "application/json":
            assert words in response.json()["message"]
        else:
            assert words in Status.FromString(response.content).message
        assert post(receiver, ok).status_code == 200
    assert len(stored(receiver)) == 7
    counts = health(receiver)
    assert counts["refused_malformed"] == 3
    assert counts["refused_unsupported"] == 2
    assert counts["refused_too_large"] == 1
    assert counts["spans_accepted"] == 7


def _raw_post(handle: ServerHandle, head: bytes, send_body: Iterator[bytes]) -> bytes:
    """Send a request on a raw socket, body piece by piece until the server answers
    (or the body ends); returns what the server answered."""
    port = int(handle.url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for piece in send_body:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                sock.sendall(piece)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        return answer


def test_a_100_mb_body_is_refused_early_by_length_and_when_chunked(
    receiver: ServerHandle,
) -> None:
    """A declared 100 MB body is refused (413) before it is read; a chunked body with
    no length is cut off at the bound (413) after about 2 MiB, not 100 MB."""
    head = (b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Length: 104857600\r\n\r\n")
    sent = [0]

    def pieces(size: int, count: int, chunked: bool) -> Iterator[bytes]:
        piece = b"\0" * size
        for _ in range(count):
            sent[0] += size
            yield (f"{size:x}\r\n".encode() + piece + b"\r\n") if chunked else piece

    answer = _raw_post(receiver, head, pieces(64 * 1024, 1600, chunked=False))
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent[0] < 8 * MIB
    sent[0] = 0
    chunked_head = head.replace(b"Content-Length: 104857600", b"Transfer-Encoding: chunked")
    answer = _raw_post(receiver, chunked_head, pieces(256 * 1024, 400, chunked=True))
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent[0] < 16 * MIB
    assert post(receiver, request_of(span(1)).SerializeToString()).status_code == 200
    assert len(stored(receiver)) == 1
    assert health(receiver)["refused_too_large"] == 2


def test_a_million_attribute_span_is_capped_counted_and_stored(tmp_path: Path) -> None:
    """A span carrying 1,000,000 attributes (9 MB of protobuf, under the default 16 MiB
    bound) is stored with MAX_ATTRIBUTES of them; the rest are counted on the row and in
    /api/health."""
    handle = start_server(ServerConfig(port=0), directory=tmp_path / "store")
    try:
        big = span(5)
        kv = KeyValue(key="k", value=AnyValue(int_value=1))
        big.attributes.extend([kv] * 1_000_000)
        body = request_of(big).SerializeToString()
        assert 8 * MIB < len(body) < 16 * MIB
        assert post(handle, body).status_code == 200
        (row,) = stored(handle)
        dropped = 1_000_000 - MAX_ATTRIBUTES
        assert json.loads(row["custom_attributes"])["otel.dropped_attributes_count"] == dropped
        assert health(handle)["dropped_attributes"] == dropped
    finally:
        handle.stop()


def test_an_oversized_or_truncated_grpc_message_is_refused_and_others_land(
    receiver: ServerHandle,
) -> None:
    """A gRPC message past otlp_max_body_bytes is RESOURCE_EXHAUSTED, a truncated one
    INVALID_ARGUMENT (counted); the next one lands."""
    channel = grpc.insecure_channel(grpc_target(receiver))
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=ExportTraceServiceRequest.SerializeToString,
        response_deserializer=ExportTraceServiceResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as refused:
        export(request_of(span(1, padding="x" * (3 * MIB))), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    raw = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        response_deserializer=ExportTraceServiceResponse.FromString,
    )
    whole = request_of(span(3)).SerializeToString()
    with pytest.raises(grpc.RpcError) as bad:
        raw(whole[:-5], timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP" in (bad.value.details() or "")
    answer = export(request_of(span(2)), timeout=10)
    assert answer.partial_success.rejected_spans == 0
    channel.close()
    assert [r["operation_name"] for r in stored(receiver)] == ["span-2"]
    assert health(receiver)["refused_malformed"] == 1


def test_received_spans_reach_the_live_tail(receiver: ServerHandle) -> None:
    """A span received over OTLP is published to the live tail (WebSocket) at once."""
    from .test_live import WsTail, wait_for, ws_url

    ws = WsTail(ws_url(receiver))
    try:
        assert wait_for(lambda: receiver.app.app.state.llamonitor.live_clients() == 1)  # type: ignore[attr-defined]
        assert post(receiver, request_of(span(42)).SerializeToString()).status_code == 200
        ingestor(receiver).writer.flush(15)
        assert wait_for(lambda: "span-42" in ws.names())
    finally:
        ws.close()


class BlockingBackend:
    """A store that hangs every write until ``release`` is set."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.rows = 0

    def initialize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write_table(self, table: Any) -> None:
        self.release.wait()
        self.rows += table.num_rows


def test_a_full_queue_is_a_retryable_503_and_nothing_accepted_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store hangs and the writer's queue is full, a request is refused with
    503 + Retry-After (nothing queued, nothing counted as dropped); once the store is
    back, every span that was accepted is written and a retry is accepted."""
    from fastapi.testclient import TestClient

    import llamonitor
    from llamonitor import MonitorConfig, StorageConfig
    from llamonitor.server import _ingest, create_app, open_server_store

    monkeypatch.setattr(_ingest, "QUEUE_WAIT_SECONDS", 0.05)
    backend = BlockingBackend()
    writer = llamonitor.initialize_monitoring(MonitorConfig(
        storage=StorageConfig(backend=backend, batch_size=5, flush_interval_seconds=0.05),
        max_queue_size=10, spool_enabled=False,
    ))
    store = open_server_store(tmp_path / "empty")
    app = create_app(store, ServerConfig(), ingestor=Ingestor(writer, False, MIB))
    client = TestClient(app, base_url="http://127.0.0.1:8585")
    try:
        accepted = 0
        statuses = []
        for i in range(12):
            body = request_of(*(span(10 * i + j + 1) for j in range(5))).SerializeToString()
            response = client.post("/v1/traces", content=body, headers=PROTOBUF)
            statuses.append(response.status_code)
            if response.status_code == 200:
                accepted += 5
            else:
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                assert "queue is full" in Status.FromString(response.content).message
        assert 503 in statuses and accepted >= 5
        backend.release.set()
        retry = request_of(span(999)).SerializeToString()
        assert client.post("/v1/traces", content=retry, headers=PROTOBUF).status_code == 200
        assert llamonitor.flush(15)
        assert backend.rows == accepted + 1
        h = writer.health_check()
        assert h["dropped"]["queue_full"] == 0
        counts = client.get("/api/health").json()["otlp"]
        assert counts["refused_busy"] == statuses.count(503)
    finally:
        backend.release.set()
        client.close()
        store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_llamonitor_collect_receives_http_and_grpc_and_flushes_on_sigterm(
    tmp_path: Path,
) -> None:
    """`llamonitor collect` (no UI) takes the official exporters' spans over OTLP/HTTP
    and OTLP/gRPC, and a SIGTERM stops it after writing them all into the store."""
    import signal
    import subprocess
    import sys

    from llamonitor.cli._options import open_store

    store = tmp_path / "store"
    http_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamonitor.cli", "collect", "--dir", str(store),
         "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{http_port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.1)
        assert httpx.get(base, timeout=5).status_code == 404  # no UI
        sdk_spans(HttpExporter(endpoint=base + "v1/traces"), service="collected")
        sdk_spans(GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True),
                  service="collected")
        counts = httpx.get(base + "api/health", timeout=5).json()["otlp"]
        assert counts["spans_accepted"] == 6
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "OTLP/gRPC: 127.0.0.1:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    query = open_store(store)
    try:
        table = query.run("SELECT operation_name, project_name FROM {rel}")
    finally:
        query.close()
    assert table is not None and table.num_rows == 6
    assert set(table.column("project_name").to_pylist()) == {"collected"}
