"""The OTLP receiver's memory bound and content policy, on the real app and store:
the writer's queue is sized by each span's real bytes, so a flood of big requests
is refused with an OTLP-correct 503 (``Retry-After``) once ``max_queue_bytes`` is
reached while every accepted span lands in the Parquet store exactly once; and
the spans it receives follow ``MonitorConfig``'s capture and redaction settings,
redacted before any cut (a secret straddling ``content_max_chars`` or the 16 KiB
attribute limit is still found)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from google.rpc.status_pb2 import Status  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from llamonitor import MonitorConfig, StorageConfig  # noqa: E402
from llamonitor.otel._values import MAX_VALUE_CHARS  # noqa: E402
from llamonitor.server import (  # noqa: E402
    ServerConfig,
    ServerHandle,
    _ingest,
    create_app,
    open_server_store,
)
from llamonitor.server._ingest import Ingestor  # noqa: E402
from llamonitor.storage.parquet import ParquetBackend  # noqa: E402
from llamonitor.transport.writer import MonitoringWriter  # noqa: E402

MIB = 1024 * 1024
PROTOBUF = {"content-type": "application/x-protobuf"}
BLOB = 8000  # characters of a non-content attribute on every flooded span
QUEUE_BYTES = MIB
SPANS_PER_REQUEST = 10


class GatedParquet(ParquetBackend):
    """The real Parquet store, whose writes wait until ``gate`` is set (a store
    that has fallen behind)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(StorageConfig(backend="parquet", output_dir=directory))
        self.gate = threading.Event()

    async def write_table(self, table: Any) -> None:
        self.gate.wait(120)
        await super().write_table(table)


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(first: int, n: int = SPANS_PER_REQUEST, **attrs: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "flood"))
    t0 = time.time_ns() - 10_000_000
    spans = rs.scope_spans.add().spans
    for i in range(first, first + n):
        spans.append(Span(
            trace_id=(i // 100 + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
            name=f"span-{i}", start_time_unix_nano=t0, end_time_unix_nano=t0 + 1000,
            attributes=[kv(k, v) for k, v in attrs.items()],
        ))
    return req


@dataclass
class Flood:
    app: Any
    backend: GatedParquet
    ingestor: Ingestor
    store: Any


@pytest.fixture
def flood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flood]:
    """The server app receiving OTLP into a gated Parquet store through a writer
    whose queue holds 1 MiB (and up to 2,000 rows: the byte bound is the one met)."""
    monkeypatch.setattr(_ingest, "QUEUE_WAIT_SECONDS", 0.2)
    backend = GatedParquet(tmp_path / "store")
    writer = MonitoringWriter(MonitorConfig(
        storage=StorageConfig(backend=backend, batch_size=100_000, flush_interval_seconds=0.05),
        max_queue_size=2000, max_queue_bytes=QUEUE_BYTES, spool_enabled=False,
    )).start()
    store = open_server_store(tmp_path / "store")
    ingestor = Ingestor(writer, True, 64 * MIB)
    app = create_app(store, ServerConfig(), ingestor=ingestor)
    yield Flood(app, backend, ingestor, store)
    backend.gate.set()
    writer.stop(30)
    store.close()


async def _post_all(app: Any, bodies: dict[int, bytes], concurrency: int) -> dict[int, Any]:
    transport = httpx.ASGITransport(app=app)
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8585",
                                 timeout=120) as client:
        async def one(first: int, body: bytes) -> tuple[int, Any]:
            async with limit:
                return first, await client.post("/v1/traces", content=body, headers=PROTOBUF)

        return dict(await asyncio.gather(*(one(k, b) for k, b in bodies.items())))


def test_a_flood_of_big_requests_is_refused_at_the_byte_bound_and_loses_nothing(
    flood: Flood,
) -> None:
    """While the store is behind, 8 concurrent clients send 150 requests of 10
    spans with 8 KB each: the queue never holds more than ``max_queue_bytes`` of
    them (at 512 B a span it would have taken its 2,000 rows, 16 MB), the rest
    get 503 + Retry-After and a google.rpc.Status UNAVAILABLE; once the store
    catches up, the refused requests are sent again, and every span lands in the
    store exactly once."""
    app, backend, ingestor = flood.app, flood.backend, flood.ingestor
    writer = ingestor.writer
    bodies = {first: request(first, blob="x" * BLOB).SerializeToString()
              for first in range(0, 1500, SPANS_PER_REQUEST)}
    answers = asyncio.run(_post_all(app, bodies, concurrency=8))

    accepted = [k for k, r in answers.items() if r.status_code == 200]
    refused = [k for k, r in answers.items() if r.status_code != 200]
    assert accepted and refused
    for first in accepted:
        reply = ExportTraceServiceResponse.FromString(answers[first].content)
        assert reply.partial_success.rejected_spans == 0  # all or nothing
    for first in refused:
        r = answers[first]
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert Status.FromString(r.content).code == 14  # UNAVAILABLE: OTLP clients retry
    health = writer.health_check()
    assert health["queue_size"] * BLOB <= QUEUE_BYTES  # the bound holds in real bytes
    assert health["dropped"]["queue_full"] == 0  # refused, never dropped

    backend.gate.set()
    assert writer.flush(60)
    left = refused
    for _ in range(50):  # the clients' retries (each one a 200 or a 503 again)
        again = asyncio.run(_post_all(app, {k: bodies[k] for k in left}, concurrency=2))
        left = [k for k, r in again.items() if r.status_code != 200]
        if not left:
            break
    assert not left
    assert writer.flush(60)
    store = flood.store
    ids = [r["span_id"] for r in store.rows("SELECT span_id FROM {rel}")]
    assert len(ids) == len(set(ids)) == 1500  # every span once: no loss, no duplicate
    counts = ingestor.health()
    assert counts["refused_busy"] >= len(refused)
    assert counts["spans_accepted"] == 1500


def test_a_request_larger_than_the_queue_is_queued_in_parts_and_lands_whole(
    flood: Flood,
) -> None:
    """One request of 300 spans x 8 KB (2.4 MB, more than the whole 1 MiB queue)
    is queued in parts of at most half the queue's bytes while the store keeps up:
    it is accepted and lands whole, not refused forever."""
    app, backend, writer = flood.app, flood.backend, flood.ingestor.writer
    backend.gate.set()
    body = request(0, n=300, blob="y" * BLOB).SerializeToString()
    answers = asyncio.run(_post_all(app, {0: body}, concurrency=1))
    assert answers[0].status_code == 200
    assert ExportTraceServiceResponse.FromString(answers[0].content).partial_success \
        .rejected_spans == 0
    assert writer.flush(60)
    store = flood.store
    assert len(list(store.rows("SELECT span_id FROM {rel}"))) == 300


# -- content: the capture setting and redaction --------------------------------

SECRET = "sk-abcdefghijklmnopqrstuvwx"


def content_span(cap: int) -> ExportTraceServiceRequest:
    """An OpenInference LLM span whose prompt has an e-mail address straddling
    the ``content_max_chars`` cut, a message attribute with one straddling the
    16 KiB attribute cut, and a GenAI prompt event with a key in it."""
    req = request(0, n=1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    prompt = "a " * ((cap - 4) // 2) + "bob@example.com and " + SECRET
    message = "b " * ((MAX_VALUE_CHARS - 6) // 2) + "carol@example.com"
    span.attributes.extend([
        kv("openinference.span.kind", "LLM"), kv("llm.model_name", "gpt-4o-mini"),
        kv("input.value", prompt), kv("output.value", "mailed dave@example.com"),
        kv("llm.input_messages.0.message.content", message),
        kv("app.note", "kept as is: erin@example.com"),
    ])
    event = span.events.add(name="gen_ai.content.prompt", time_unix_nano=span.start_time_unix_nano)
    event.attributes.append(kv("gen_ai.prompt", f"token={SECRET}"))
    return req


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``serve(**env)``: ``llamonitor serve`` (uvicorn on a free port) of a Parquet
    store, its receiver's writer configured from ``LLMOPS_*`` variables."""
    from llamonitor.server import start_server

    handles: list[ServerHandle] = []

    def start(**env: str) -> ServerHandle:
        for key, value in env.items():
            monkeypatch.setenv(f"LLMOPS_{key.upper()}", value)
        handle = start_server(ServerConfig(port=0), directory=tmp_path / "store")
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


def received(handle: ServerHandle, req: ExportTraceServiceRequest) -> dict[str, Any]:
    answer = httpx.post(handle.url + "v1/traces", content=req.SerializeToString(),
                        headers=PROTOBUF, timeout=30)
    assert answer.status_code == 200, answer.content
    assert handle.receive is not None and handle.receive.ingestor.writer.flush(30)
    store = handle.app.app.state.llamonitor.store  # type: ignore[attr-defined]
    (row,) = list(store.rows("SELECT * FROM {rel}"))
    return dict(row)


def test_received_content_is_dropped_by_default_keeping_the_prompt_hash(serve: Any) -> None:
    """capture_content off (the default): no prompt or completion column and no
    content attribute or event text is stored from received spans, as for
    decorated code; the prompt hash and the other attributes stay."""
    row = received(serve(), content_span(4096))
    assert row["prompt_content"] is None and row["completion_content"] is None
    assert row["prompt_hash"] and row["model"] == "gpt-4o-mini"
    text = json.dumps(row, default=str)
    for address in ("bob@", "carol@", "dave@", SECRET[:8]):
        assert address not in text
    custom = json.loads(row["custom_attributes"])
    assert custom["app.note"] == "kept as is: erin@example.com"
    assert "input.value" not in custom and "llm.input_messages.0.message.content" not in custom


def test_received_content_is_redacted_before_it_is_cut(serve: Any) -> None:
    """capture_content on, the built-in rules and a pattern from the environment:
    the prompt is redacted whole before it is cut to ``content_max_chars`` (the
    e-mail address across the cut leaves no fragment), so is the message past
    16 KiB and the prompt event; other attributes are kept as sent."""
    cap = 200
    row = received(
        serve(capture_content="true", content_max_chars=str(cap),
              redact_patterns='["mailed"]'),
        content_span(cap),
    )
    prompt = row["prompt_content"]
    assert len(prompt) == cap and prompt.endswith("[EMA")  # "[EMAIL]" cut, not the address
    assert row["completion_content"] == "[REDACTED] [EMAIL]"
    custom = json.loads(row["custom_attributes"])
    message = custom["llm.input_messages.0.message.content"]
    assert "carol" not in message and "[EM" in message
    (event,) = custom["otel.events"]
    assert event["attributes"]["gen_ai.prompt"] == "token=[SECRET]"
    assert custom["app.note"] == "kept as is: erin@example.com"  # not content: as sent
    assert SECRET[:8] not in json.dumps(row, default=str)


def logfire_span() -> ExportTraceServiceRequest:
    """A span of Logfire's OpenAI instrumentation: the request and the response
    as JSON in ``request_data`` / ``response_data``, messages and choices included."""
    req = request(0, n=1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.extend([
        kv("gen_ai.system", "openai"), kv("logfire.msg", "Chat Completion with 'gpt-4o-mini'"),
        kv("request_data", json.dumps({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "mail bob@example.com the key " + SECRET}]})),
        kv("response_data", json.dumps({
            "model": "gpt-4o-mini-2024-07-18",
            "message": {"role": "assistant", "content": "mailed dave@example.com"},
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}})),
    ])
    return req


def test_logfire_request_and_response_data_are_content(serve: Any) -> None:
    """Logfire's ``request_data`` / ``response_data`` carry the messages: with
    capture_content off (the default) neither is stored, while the model and the
    token counts read from them fill their columns; with capture on they are
    stored through the redaction rules."""
    off = received(serve(), logfire_span())
    assert (off["model"], off["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (off["input_tokens"], off["output_tokens"]) == (12, 3)
    custom = json.loads(off["custom_attributes"])
    assert "request_data" not in custom and "response_data" not in custom
    assert custom["logfire.msg"] == "Chat Completion with 'gpt-4o-mini'"
    text = json.dumps(off, default=str)
    assert "bob@" not in text and "dave@" not in text and SECRET[:8] not in text


def test_logfire_request_and_response_data_are_redacted_with_capture_on(
    serve: Any,
) -> None:
    """capture_content on: ``request_data`` / ``response_data`` are kept, their
    values redacted, the model names they give columns excepted."""
    on = received(serve(capture_content="true"), logfire_span())
    assert (on["model"], on["input_tokens"], on["output_tokens"]) == ("gpt-4o-mini", 12, 3)
    # the dated name is no phone number: the JSON's model is kept as sent
    assert on["response_model"] == "gpt-4o-mini-2024-07-18"
    custom = json.loads(on["custom_attributes"])
    sent = json.loads(custom["request_data"])["messages"][0]["content"]
    assert sent == "mail [EMAIL] the key [SECRET]"
    assert "[EMAIL]" in custom["response_data"] and "dave@" not in custom["response_data"]


def long_logfire_span() -> ExportTraceServiceRequest:
    """A Logfire span whose ``request_data`` (a long prompt, then the model) and
    ``response_data`` (a long answer, then the usage) are each over 16 KiB, the
    fields the columns come from after the 16 KiB attribute cut."""
    req = request(0, n=1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    prompt = "cc carol@example.com " + "p " * MAX_VALUE_CHARS + "mail bob@example.com " + SECRET
    answer = "a " * MAX_VALUE_CHARS + "mailed dave@example.com"
    span.attributes.extend([
        kv("gen_ai.system", "openai"), kv("logfire.msg", "Chat Completion with 'gpt-4o-mini'"),
        kv("request_data", json.dumps({
            "messages": [{"role": "user", "content": prompt}], "model": "gpt-4o-mini"})),
        kv("response_data", json.dumps({
            "message": {"role": "assistant", "content": answer},
            "model": "gpt-4o-mini-2024-07-18",
            "usage": {"prompt_tokens": 8200, "completion_tokens": 8100}})),
    ])
    return req


@pytest.mark.parametrize("capture", ["false", "true"])
def test_logfire_json_over_16_kib_still_gives_the_model_and_tokens(
    serve: Any, capture: str
) -> None:
    """The model and the token counts are read from Logfire's whole JSON (up to
    64 KiB) before the stored value is cut to 16 KiB: a long prompt or answer
    does not lose them. With capture on the stored JSON is redacted and cut
    (counted in ``otel.truncated_values``); with it off it is not stored."""
    row = received(serve(capture_content=capture), long_logfire_span())
    assert (row["model"], row["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (row["input_tokens"], row["output_tokens"]) == (8200, 8100)
    custom = json.loads(row["custom_attributes"])
    text = json.dumps(row, default=str)
    for address in ("carol@", "bob@", "dave@", SECRET[:8]):
        assert address not in text
    if capture == "false":
        assert "request_data" not in custom and "response_data" not in custom
        return
    for key in ("request_data", "response_data"):
        assert len(custom[key]) == MAX_VALUE_CHARS
    assert custom["otel.truncated_values"] == 2
    request_data = json.loads(custom["request_data"] + '"}]}')  # cut in the prompt
    assert request_data["messages"][0]["content"].startswith("cc [EMAIL] p p")


def test_the_receivers_settings_are_the_processes_only_while_it_serves(serve: Any) -> None:
    """A receiver with its own writer in a process without monitoring makes its
    ``LLMOPS_*`` content cut the process's while it serves, and puts the
    process's back when it stops."""
    from llamonitor.llm import _settings as llm_settings

    before = llm_settings.SETTINGS
    handle = serve(content_max_chars="123")
    assert llm_settings.SETTINGS.content_max_chars == 123
    handle.stop()
    assert llm_settings.SETTINGS is before


def test_stopping_the_server_keeps_the_settings_of_monitoring_started_since(
    serve: Any, tmp_path: Path
) -> None:
    """``initialize_monitoring`` after the server started: its settings (capture,
    project) stay when the server stops."""
    import llamonitor
    from llamonitor.llm import _settings as llm_settings

    handle = serve()
    llamonitor.initialize_monitoring(MonitorConfig(
        storage=StorageConfig(output_dir=tmp_path / "app"), capture_content=True,
        project_name="myproj"))
    try:
        mine = llm_settings.SETTINGS
        handle.stop()
        assert llm_settings.SETTINGS is mine
    finally:
        llamonitor.shutdown_monitoring(10)


def fill_queue(writer: Any) -> int:
    """Queue other spans until the store's backlog and the queue are full (the
    worker waits for the gated store, nothing drains); returns how many."""
    fill = 0
    while writer.record_table(_ingest.rows_from_request(
            request(100_000 + fill, n=20, blob="z" * BLOB)).table(), 0.5):
        fill += 20
    return fill


def test_requests_in_hand_are_bounded_by_the_queue_bytes_too(
    flood: Flood, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request waits for room (the store behind, the queue full), a
    second one that would take the bytes in hand past ``max_queue_bytes`` is
    refused at once with 503, before it is mapped; the first is accepted once
    the store catches up, and both land once the second is sent again."""
    monkeypatch.setattr(_ingest, "QUEUE_WAIT_SECONDS", 60.0)
    backend, ingestor, writer = flood.backend, flood.ingestor, flood.ingestor.writer
    fill = fill_queue(writer)
    waiting = request(0, n=50, blob="w" * BLOB).SerializeToString()  # 400 KB
    big = request(50, n=90, blob="v" * BLOB).SerializeToString()  # 730 KB
    assert len(waiting) + len(big) > QUEUE_BYTES > len(big)
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(ingestor.handle_http(
        waiting, "application/x-protobuf", "")))
    thread.start()
    deadline = time.monotonic() + 60
    while ingestor.health()["bytes_in_hand"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first request waits for room
    refused = ingestor.handle_http(big, "application/x-protobuf", "")
    assert refused.status == 503 and ("retry-after", "1") in refused.headers
    assert "holds" in Status.FromString(refused.body).message
    backend.gate.set()
    thread.join(120)
    assert first[0].status == 200
    assert ingestor.handle_http(big, "application/x-protobuf", "").status == 200
    assert writer.flush(60)
    ids = {r["span_id"] for r in flood.store.rows("SELECT span_id FROM {rel}")}
    assert len(ids) == fill + 140


def test_grpc_gets_unavailable_when_full_and_loses_nothing(flood: Flood) -> None:
    """Over OTLP/gRPC (the official exporter's transport), a request that finds
    the queue full is answered UNAVAILABLE (which OTLP clients retry); the
    retry after the store caught up is accepted and lands once."""
    grpc = pytest.importorskip("grpc")
    from llamonitor.server._otlp_grpc import SERVICE, start_grpc

    backend, ingestor, writer = flood.backend, flood.ingestor, flood.ingestor.writer
    fill = fill_queue(writer)
    server = start_grpc(ingestor, "127.0.0.1", 0, None, 16 * MIB)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        export = channel.unary_unary(
            f"/{SERVICE}/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        body = request(0, n=10, blob="g" * BLOB)
        with pytest.raises(grpc.RpcError) as refused:
            export(body, timeout=60)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # when to come back, where the OpenTelemetry exporter and gRPC's rich errors look
        from google.rpc.error_details_pb2 import RetryInfo
        from google.rpc.status_pb2 import Status as RpcStatus

        trailers = dict(refused.value.trailing_metadata())
        info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert info.retry_delay.seconds == _ingest.RETRY_AFTER_SECONDS
        rich = RpcStatus.FromString(trailers["grpc-status-details-bin"])
        assert rich.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert rich.details[0].Is(RetryInfo.DESCRIPTOR)
        backend.gate.set()
        assert writer.flush(60)
        assert export(body, timeout=60).partial_success.rejected_spans == 0
    finally:
        channel.close()
        server.stop()
    assert writer.flush(60)
    ids = [r["span_id"] for r in flood.store.rows("SELECT span_id FROM {rel}")]
    assert len(ids) == len(set(ids)) == fill + 10
