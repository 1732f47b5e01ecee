"""Scores as OpenTelemetry ``gen_ai.evaluation.result`` events: our OTLP
exporter sends them as log records parented to the judged span, our receiver
stores them back (from ``/v1/logs`` and from span events in ``/v1/traces``),
and a round trip app -> exporter -> receiver -> store gives the same scores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

import llamonitor  # noqa: E402
from llamonitor import MonitorConfig, StorageConfig, monitor_llm  # noqa: E402
from llamonitor.export import OTLPExporterConfig  # noqa: E402
from llamonitor.export._otlp_scores import ScoreEncoder  # noqa: E402
from llamonitor.otel._scores import scores_from_logs  # noqa: E402
from llamonitor.schema._scores import make_score, scores_table  # noqa: E402
from llamonitor.server import ServerConfig, ServerHandle, start_server  # noqa: E402
from llamonitor.storage._scores import read_scores  # noqa: E402

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = start_server(ServerConfig(port=0), directory=tmp_path / "server")
    yield handle
    handle.stop()


def _server_scores(tmp_path: Path) -> list[dict[str, Any]]:
    rows = read_scores(StorageConfig(output_dir=tmp_path / "server")).to_pylist()
    return sorted(rows, key=lambda r: r["score_id"])


def _attrs(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in record.attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


def test_a_span_score_is_an_evaluation_event_parented_to_its_span() -> None:
    """The log record carries the conventions' event name and attributes, and
    the judged span's trace and span ids."""
    row = make_score("relevance", 0.8, label="relevant", span_id=SPAN, span_trace_id=TRACE,
                     comment="on topic", source="llm", evaluator="judge", timestamp=T0)
    request = ScoreEncoder().encode(scores_table([row]))
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record.event_name == "gen_ai.evaluation.result"
    assert record.trace_id.hex() == TRACE and record.span_id.hex() == SPAN
    assert record.time_unix_nano == int(T0.timestamp()) * 10**9 + 123456000
    attrs = _attrs(record)
    assert attrs["gen_ai.evaluation.name"] == "relevance"
    assert attrs["gen_ai.evaluation.score.value"] == 0.8
    assert attrs["gen_ai.evaluation.score.label"] == "relevant"
    assert attrs["gen_ai.evaluation.explanation"] == "on topic"
    assert attrs["llamonitor.score.source"] == "llm"


def test_encoded_scores_decode_to_the_same_rows() -> None:
    """Span, trace and session scores, labels only, metadata and ids that are
    not OTLP ids in form all come back as they were."""
    rows = [
        make_score("relevance", 0.8, span_id=SPAN, span_trace_id=TRACE, timestamp=T0),
        make_score("feedback", None, label="bad", trace_id="trace-not-hex", source="human",
                   evaluator="ui", comment="wrong city", timestamp=T0),
        make_score("cost_ok", True, session_id="s-1", metadata={"limit": 0.1, "ü": [1]},
                   timestamp=T0),
        make_score("orphan", 2.5, span_id="span-without-trace", timestamp=T0),
    ]
    wire = ScoreEncoder().encode(scores_table(rows)).SerializeToString()
    mapped = scores_from_logs(ExportLogsServiceRequest.FromString(wire))
    assert mapped.rejected == 0
    assert sorted(mapped.rows, key=lambda r: r["score_id"]) == sorted(
        rows, key=lambda r: r["score_id"]
    )


def test_a_foreign_evaluation_event_is_a_score_with_its_extras_in_metadata() -> None:
    """An instrumentation's event (no llamonitor keys) is a span score of source
    code, evaluator its scope; gen_ai.response.id is kept; other records are skipped."""
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    scope.scope.name = "azure.ai.evaluation"
    ev = scope.log_records.add(event_name="gen_ai.evaluation.result",
                               trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN),
                               time_unix_nano=1_772_366_400 * 10**9)
    for key, value in (("gen_ai.evaluation.name", "IntentResolution"),
                       ("gen_ai.evaluation.score.label", "pass"),
                       ("gen_ai.response.id", "chatcmpl-123")):
        ev.attributes.add(key=key).value.string_value = value
    ev.attributes.add(key="gen_ai.evaluation.score.value").value.double_value = 4.0
    old = scope.log_records.add(trace_id=bytes.fromhex(TRACE))  # older SDKs: an attribute
    old.attributes.add(key="event.name").value.string_value = "gen_ai.evaluation.result"
    old.attributes.add(key="gen_ai.evaluation.name").value.string_value = "Relevance"
    old.attributes.add(key="gen_ai.evaluation.score.value").value.int_value = 3
    scope.log_records.add().body.string_value = "an ordinary log line"
    bad = scope.log_records.add(event_name="gen_ai.evaluation.result")
    bad.attributes.add(key="gen_ai.evaluation.name").value.string_value = "no target"
    bad.attributes.add(key="gen_ai.evaluation.score.value").value.double_value = 1.0
    mapped = scores_from_logs(request)
    assert mapped.other_records == 1 and mapped.rejected == 1
    assert "nothing names what it judges" in mapped.errors[0]
    intent, relevance = mapped.rows
    assert intent["target"] == "span" and intent["span_id"] == SPAN
    assert intent["trace_id"] == TRACE
    assert intent["value"] == 4.0 and intent["label"] == "pass"
    assert intent["source"] == "code" and intent["evaluator"] == "azure.ai.evaluation"
    assert json.loads(intent["metadata"]) == {
        "otel.attributes": {"gen_ai.response.id": "chatcmpl-123"}
    }
    assert relevance["target"] == "trace" and relevance["value"] == 3.0


def test_evaluation_span_events_in_a_trace_request_are_stored_as_scores(
    receiver: ServerHandle, tmp_path: Path
) -> None:
    """An instrumentation that puts the event on the span (span.add_event) gets
    a span score on that span, and the span is stored as well."""
    span = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN), name="chat",
                start_time_unix_nano=1_772_366_400 * 10**9,
                end_time_unix_nano=1_772_366_401 * 10**9)
    ev = span.events.add(name="gen_ai.evaluation.result", time_unix_nano=1_772_366_402 * 10**9)
    ev.attributes.append(KeyValue(key="gen_ai.evaluation.name"))
    ev.attributes[-1].value.string_value = "groundedness"
    ev.attributes.append(KeyValue(key="gen_ai.evaluation.score.value"))
    ev.attributes[-1].value.double_value = 0.25
    span.events.add(name="exception")  # not a score
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    resp = httpx.post(receiver.url + "v1/traces", content=request.SerializeToString(),
                      headers=PROTOBUF)
    assert resp.status_code == 200
    (score,) = _server_scores(tmp_path)
    assert score["name"] == "groundedness" and score["value"] == 0.25
    assert score["target"] == "span" and score["span_id"] == SPAN and score["trace_id"] == TRACE
    assert score["timestamp"] == datetime.fromtimestamp(1_772_366_402, timezone.utc)


def test_the_logs_endpoint_answers_partial_success_for_events_it_cannot_store(
    receiver: ServerHandle, tmp_path: Path
) -> None:
    """Good events are stored; one without a name is counted in the answer's
    partial_success with the reason; OTLP/JSON with hex ids works as well."""
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "gen_ai.evaluation.result", "traceId": TRACE, "spanId": SPAN,
         "timeUnixNano": "1772366400000000000",
         "attributes": [{"key": "gen_ai.evaluation.name", "value": {"stringValue": "tone"}},
                        {"key": "gen_ai.evaluation.score.label",
                         "value": {"stringValue": "polite"}}]},
        {"eventName": "gen_ai.evaluation.result", "traceId": TRACE,
         "attributes": [{"key": "gen_ai.evaluation.score.value",
                         "value": {"doubleValue": 1.0}}]},
    ]}]}]}
    resp = httpx.post(receiver.url + "v1/logs", json=doc)
    assert resp.status_code == 200
    body = resp.json()
    assert body["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "name is required" in body["partialSuccess"]["errorMessage"]
    (score,) = _server_scores(tmp_path)
    assert score["label"] == "polite" and score["span_id"] == SPAN
    bad = httpx.post(receiver.url + "v1/logs", content=b"\xff\x00garbage", headers=PROTOBUF)
    assert bad.status_code == 400


def test_exporter_to_receiver_to_store_gives_the_same_scores(
    receiver: ServerHandle, tmp_path: Path
) -> None:
    """llamonitor.score() in an app exporting over OTLP: the receiving server's
    store holds exactly the scores the app's own store holds, on the spans the
    exporter sent."""

    @monitor_llm("answer", custom_attributes={"provider": "openai", "model": "gpt-4o"})
    def answer() -> tuple[str, str]:
        span = llamonitor.current_span()
        assert span is not None
        assert span.score("valid_json", True, comment="parsed")
        return span.trace_id, span.span_id

    config = MonitorConfig(
        storage=StorageConfig(output_dir=tmp_path / "app", flush_interval_seconds=0.05),
        exporters=[OTLPExporterConfig(endpoint=receiver.url.rstrip("/"))],
    )
    llamonitor.initialize_monitoring(config)
    try:
        trace_id, span_id = answer()
        assert llamonitor.score("helpfulness", 0.75, trace_id=trace_id, source="human",
                                evaluator="ui", comment="good, a bit long")
        assert llamonitor.score("tone", label="polite", session_id="session-7",
                                metadata={"rubric": "v2"}, source="llm")
        assert llamonitor.flush(15)
    finally:
        llamonitor.shutdown_monitoring()
    sent = sorted(read_scores(StorageConfig(output_dir=tmp_path / "app")).to_pylist(),
                  key=lambda r: r["score_id"])
    assert len(sent) == 3
    assert _server_scores(tmp_path) == sent
    span_score = next(r for r in sent if r["name"] == "valid_json")
    assert span_score["span_id"] == span_id and span_score["trace_id"] == trace_id
    assert receiver.receive is not None and receiver.receive.ingestor.writer.flush(15)
    got = httpx.get(receiver.url + f"api/traces/{trace_id}").json()
    assert {s["name"] for s in got["scores"]} >= {"valid_json", "helpfulness"}


def test_scores_off_sends_no_logs(receiver: ServerHandle, tmp_path: Path) -> None:
    """OTLPExporterConfig(scores=False): the receiver gets no scores."""
    config = MonitorConfig(
        storage=StorageConfig(output_dir=tmp_path / "app", flush_interval_seconds=0.05),
        exporters=[OTLPExporterConfig(endpoint=receiver.url.rstrip("/"), scores=False)],
    )
    llamonitor.initialize_monitoring(config)
    try:
        assert llamonitor.score("x", 1.0, trace_id=TRACE)
        assert llamonitor.flush(15)
    finally:
        llamonitor.shutdown_monitoring()
    assert len(read_scores(StorageConfig(output_dir=tmp_path / "app"))) == 1
    assert _server_scores(tmp_path) == []


def test_the_logs_response_is_a_logs_response(receiver: ServerHandle) -> None:
    """A protobuf request gets an ExportLogsServiceResponse without partial success."""
    row = make_score("x", 1.0, trace_id=TRACE, timestamp=T0)
    wire = ScoreEncoder().encode(scores_table([row])).SerializeToString()
    resp = httpx.post(receiver.url + "v1/logs", content=wire, headers=PROTOBUF)
    assert resp.status_code == 200
    assert not ExportLogsServiceResponse.FromString(resp.content).HasField("partial_success")


def test_scores_go_over_grpc_to_a_logs_service() -> None:
    """protocol="grpc": the score backend calls LogsService/Export with the records."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

    got: list[ExportLogsServiceRequest] = []

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            got.append(request)
            return ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        backend = OTLPExporterConfig(
            endpoint=f"http://127.0.0.1:{port}", protocol="grpc"
        ).create_score_backend()
        row = make_score("relevance", 0.5, span_id=SPAN, span_trace_id=TRACE, timestamp=T0)
        backend.write_table(scores_table([row]))
        backend.close()
    finally:
        server.stop(0)
    (request,) = got
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record.event_name == "gen_ai.evaluation.result" and record.span_id.hex() == SPAN


def test_the_receivers_grpc_port_takes_scores_from_our_grpc_exporter(tmp_path: Path) -> None:
    """OTLP/gRPC end to end: the exporter's LogsService call is stored as scores,
    and a wrong token is refused."""
    pytest.importorskip("grpc")
    from llamonitor.export._otlp_send import ExportUnavailable

    handle = start_server(ServerConfig(port=0, otlp_grpc_port=0, token="t0ken-0123456789abcd"),
                          directory=tmp_path / "server")
    try:
        assert handle.receive is not None and handle.receive.grpc is not None
        endpoint = f"http://127.0.0.1:{handle.receive.grpc.port}"
        row = make_score("relevance", 0.5, span_id=SPAN, span_trace_id=TRACE, timestamp=T0)
        wrong = OTLPExporterConfig(endpoint=endpoint, protocol="grpc",
                                   headers={"authorization": "Bearer nope"})
        backend = wrong.create_score_backend()
        with pytest.raises(ExportUnavailable):
            backend.write_table(scores_table([row]))
        backend.close()
        right = OTLPExporterConfig(endpoint=endpoint, protocol="grpc",
                                   headers={"authorization": "Bearer t0ken-0123456789abcd"})
        backend = right.create_score_backend()
        backend.write_table(scores_table([row]))
        backend.close()
    finally:
        handle.stop()
    assert _server_scores(tmp_path) == [row]
