"""``OTLPExporterConfig(protocol="http/json")``: spans sent as OTLP/JSON (hex
ids, integer enums, ``Content-Type: application/json``) to a real receiver:
llamonitor's own ``serve`` receiver, which stores them; its rows match."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, monitor_llm
from llamonitor.export import (
    OTLPExporterConfig,
    _otlp_json,
)
from llamonitor.server import ServerConfig, ServerHandle, start_server


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ServerHandle]:
    """``llamonitor serve`` of a Parquet store: its OTLP/HTTP receiver."""
    handle = start_server(ServerConfig(port=0), directory=tmp_path / "received")
    yield handle
    handle.stop()


def _stored(handle: ServerHandle) -> list[dict[str, Any]]:
    assert handle.receive is not None
    assert handle.receive.ingestor.writer.flush(15)
    store = handle.app.app.state.llamonitor.store  # type: ignore[attr-defined]
    return list(store.rows("SELECT * FROM {rel} ORDER BY timestamp, span_id"))


def _run(receiver: ServerHandle, **exporter: Any) -> list[dict[str, Any]]:
    """Two decorated calls (an agent and its LLM call) exported to ``receiver``;
    the rows the app itself stored."""

    @monitor_llm("plan", operation_type="agent_workflow")
    def agent() -> str:
        return llm("hi")

    @monitor_llm("call", custom_attributes={"provider": "openai", "model": "gpt-4o-mini"})
    def llm(prompt: str) -> str:
        return "hello"

    memory = llamonitor.InMemoryBackend()
    config = MonitorConfig(
        storage=StorageConfig(backend=memory, flush_interval_seconds=0.05),
        exporters=[OTLPExporterConfig(endpoint=receiver.url, protocol="http/json", **exporter)],
        project_name="json-shop",
    )
    writer = llamonitor.initialize_monitoring(config)
    agent()
    assert llamonitor.flush(10)
    health = writer.health_check()
    llamonitor.shutdown_monitoring()
    otlp = next(s for name, s in health["sinks"].items() if "otlp" in name.lower())
    assert otlp.get("failed", 0) == 0, otlp
    return list(memory.rows())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_http_json_spans_land_in_our_receiver_with_ids_and_parents(
    receiver: ServerHandle, compression: str
) -> None:
    """The receiver stores every span with the sender's trace, span and parent
    ids, model and project: the JSON body was OTLP/JSON (hex ids), not
    protobuf's base64 mapping (which would change or reject every id)."""
    sent = {r["operation_name"]: r for r in _run(receiver, compression=compression)}
    got = {r["operation_name"]: r for r in _stored(receiver)}
    assert set(got) == {"plan", "call"}  # llamonitor's own names come back
    plan, call = got["plan"], got["call"]
    assert plan["trace_id"] == call["trace_id"] == sent["plan"]["trace_id"]
    assert plan["span_id"] == sent["plan"]["span_id"]
    assert call["span_id"] == sent["call"]["span_id"]
    assert call["parent_span_id"] == plan["span_id"]
    assert call["model"] == "gpt-4o-mini" and call["provider"] == "openai"
    assert call["project_name"] == "json-shop"
    assert call["operation_type"] == sent["call"]["operation_type"]


def test_the_json_body_has_hex_ids_integer_enums_and_camel_case() -> None:
    """What the sender posts: hex ``traceId``/``spanId``/``parentSpanId`` (also in
    links), ``kind`` and ``status.code`` as numbers, lowerCamelCase keys."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.parent_span_id = b"\x5b" * 16, b"\xee" * 8, b"\x01" * 8
    span.name, span.kind = "chat", Span.SPAN_KIND_CLIENT
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.status.code = Status.STATUS_CODE_ERROR
    link = span.links.add()
    link.trace_id, link.span_id = b"\xab" * 16, b"\xcd" * 8
    doc = json.loads(_otlp_json.encode(request))
    got = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert got["traceId"] == "5b" * 16 and got["spanId"] == "ee" * 8
    assert got["parentSpanId"] == "01" * 8
    assert got["links"][0] == {"traceId": "ab" * 16, "spanId": "cd" * 8}
    assert got["kind"] == 3 and got["status"]["code"] == 2
    assert got["startTimeUnixNano"] == "1700000000000000000"
    assert base64.b64encode(b"\x5b" * 16).decode() not in json.dumps(doc)


def test_http_json_is_a_valid_protocol_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``OTEL_EXPORTER_OTLP_PROTOCOL=http/json`` is taken, with the HTTP
    endpoint's ``/v1/traces`` path."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    got = OTLPExporterConfig().resolve()
    assert got.protocol == "http/json"
    assert got.endpoints["traces"] == "http://collector:4318/v1/traces"
