"""The OTLP exporter against real OTLP receivers (HTTP and gRPC servers that
decode with opentelemetry-proto): what a receiver gets is what the GenAI
conventions say, every column can be read back, and an outage or a refusal
loses nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("opentelemetry.proto")
pytest.importorskip("grpc")

import llamonitor
from _helpers import T0, span_row
from _otlp_peers import GRPCReceiver, HTTPReceiver, ReceivedSpan
from llamonitor import ConfigurationError, MonitorConfig, StorageConfig, monitor_llm
from llamonitor.export import OTLPExporterConfig
from llamonitor.export._otlp_ids import otlp_id
from llamonitor.export._otlp_spans import SpanEncoder
from llamonitor.storage.base import RowsRejected

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

FULL_ROW: dict[str, Any] = span_row(
    0,
    event_id="ev-full",
    session_id="5" * 32,
    trace_id="a1" * 16,
    span_id="b2" * 8,
    parent_span_id="c3" * 8,
    operation_name="answer",
    operation_type="llm_call",
    duration_ms=1234.5,
    error=True,
    error_type="openai.RateLimitError",
    error_message="slow down",
    text_char_count=11,
    text_word_count=2,
    text_byte_size=11,
    text_line_count=1,
    image_count=1,
    image_total_pixels=100,
    image_file_size_bytes=2048,
    image_width=10,
    image_height=10,
    image_format="PNG",
    time_to_first_token_ms=250.0,
    stream_item_count=7,
    project_name="shop",
    agent_name="planner",
    provider="openai",
    model="gpt-4o",
    response_model="gpt-4o-2024-08-06",
    response_id="chatcmpl-1",
    input_tokens=120,
    output_tokens=40,
    total_tokens=160,
    cache_read_tokens=100,
    cache_write_tokens=5,
    reasoning_tokens=12,
    token_source="provider",
    input_cost_usd=0.0003,
    output_cost_usd=0.0004,
    cost_usd=0.0007,
    cost_source="genai-prices",
    finish_reason="stop,length",
    temperature=0.2,
    max_tokens=256,
    prompt_hash="ab" * 16,
    prompt_content="user: Weather in Paris?",
    completion_content="Rainy, 57°F.",
    process_id=4242,
    custom_attributes=json.dumps(
        {"user": "u1", "n": 3, "ok": True, "tags": ["a", "b"], "deep": {"x": [1, "y"]}}
    ),
)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)


def _wait(predicate: Any, rounds: int = 200) -> bool:
    pause = threading.Event()
    for _ in range(rounds):
        if predicate():
            return True
        llamonitor.flush(5)
        pause.wait(0.05)
    return bool(predicate())


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    with HTTPReceiver() as receiver:
        yield receiver


def _send(receiver: HTTPReceiver | GRPCReceiver, rows: list[dict[str, Any]], **cfg: Any) -> None:
    backend = OTLPExporterConfig(endpoint=receiver.base, **cfg).create_backend()
    try:
        backend.write_table(_table(rows))
    finally:
        backend.close()


def _read_back(span: ReceivedSpan) -> dict[str, Any]:
    """A row from a received span, by the mapping docs/otel.md documents
    (what the OTLP ingest side does)."""
    a, s = span.attributes, span.span
    row: dict[str, Any] = {
        "trace_id": a.get("llamonitor.trace_id", s.trace_id.hex()),
        "span_id": a.get("llamonitor.span_id", s.span_id.hex()),
        "parent_span_id": a.get(
            "llamonitor.parent_span_id", s.parent_span_id.hex() or None
        ),
        "timestamp": EPOCH + timedelta(microseconds=s.start_time_unix_nano // 1000),
        "session_id": a["gen_ai.conversation.id"],
        "error": True if s.status.code == 2 else None,
        "error_message": s.status.message or a.get("llamonitor.error_message"),
        "error_type": None if a.get("error.type") == "_OTHER" else a.get("error.type"),
        "project_name": span.resource.get("llamonitor.project_name"),
        "process_id": span.resource.get("process.pid"),
        "provider": a.get("gen_ai.provider.name", a.get("gen_ai.system")),
        "finish_reason": ",".join(a["gen_ai.response.finish_reasons"])
        if "gen_ai.response.finish_reasons" in a
        else None,
    }
    for column, attribute in {
        "model": "gen_ai.request.model",
        "response_model": "gen_ai.response.model",
        "response_id": "gen_ai.response.id",
        "input_tokens": "gen_ai.usage.input_tokens",
        "output_tokens": "gen_ai.usage.output_tokens",
        "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
        "cache_write_tokens": "gen_ai.usage.cache_creation.input_tokens",
        "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
        "temperature": "gen_ai.request.temperature",
        "max_tokens": "gen_ai.request.max_tokens",
        "agent_name": "gen_ai.agent.name",
    }.items():
        row[column] = a.get(attribute)
    if "gen_ai.input.messages" in a:
        (message,) = json.loads(a["gen_ai.input.messages"])
        row["prompt_content"] = "".join(p["content"] for p in message["parts"])
    if "gen_ai.output.messages" in a:
        (message,) = json.loads(a["gen_ai.output.messages"])
        row["completion_content"] = "".join(p["content"] for p in message["parts"])
    custom: dict[str, Any] = {}
    for key, value in a.items():
        if key.startswith("llamonitor.custom."):
            custom[key.removeprefix("llamonitor.custom.")] = value
        elif key.startswith("llamonitor.custom_json."):
            custom[key.removeprefix("llamonitor.custom_json.")] = json.loads(value)
        elif key.startswith("llamonitor.") and key[11:] in llamonitor.SCHEMA.names:
            row.setdefault(key[11:], value)
    row["custom_attributes"] = custom or None
    return row


def test_every_column_reaches_the_receiver_under_its_convention_name(
    http_receiver: HTTPReceiver,
) -> None:
    """A row with every column set arrives as a CLIENT span named by the GenAI
    conventions, with their attribute names, and every column can be read back."""
    _send(http_receiver, [FULL_ROW])
    (span,) = http_receiver.received.spans()
    a = span.attributes
    assert span.name == "chat gpt-4o"
    assert span.span.kind == 3  # SPAN_KIND_CLIENT
    assert span.span.status.code == 2 and span.span.status.message == "slow down"
    assert span.span.trace_id == bytes.fromhex("a1" * 16)
    assert span.span.span_id == bytes.fromhex("b2" * 8)
    assert span.span.parent_span_id == bytes.fromhex("c3" * 8)
    start = int(FULL_ROW["timestamp"].timestamp()) * 10**9
    assert span.span.start_time_unix_nano == start
    assert span.span.end_time_unix_nano == start + 1_234_500_000
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 5,
        "gen_ai.usage.reasoning.output_tokens": 12,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.conversation.id": "5" * 32,
        "gen_ai.agent.name": "planner",
        "error.type": "openai.RateLimitError",
        "gen_ai.usage.cost": 0.0007,
        "llamonitor.cost_usd": 0.0007,
        "llamonitor.input_cost_usd": 0.0003,
        "llamonitor.output_cost_usd": 0.0004,
        "llamonitor.custom.user": "u1",
        "llamonitor.custom.tags": ["a", "b"],
        "llamonitor.custom_json.deep": '{"x":[1,"y"]}',
    }.items() <= a.items()
    assert "gen_ai.system" not in a
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "user: Weather in Paris?"}]}
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Rainy, 57°F."}],
            "finish_reason": "stop",
        }
    ]
    assert span.resource["service.name"] == "shop"
    assert span.scope.name == "llamonitor" and span.scope.version == llamonitor.__version__

    back = _read_back(span)
    for column in llamonitor.SCHEMA.names:
        if column == "custom_attributes":
            assert back[column] == json.loads(FULL_ROW[column])
        else:
            assert back[column] == FULL_ROW[column], column


def test_every_gen_ai_name_we_read_is_one_we_send_or_its_older_form() -> None:
    """Each GenAI attribute the schema maps to a column is what the exporter
    sends for that column (or an older name of it, sent with ``semconv="v1.36"``)."""
    from llamonitor.export._otlp_spans import GEN_AI_COLUMNS
    from llamonitor.schema import GEN_AI_ATTRIBUTES

    request = SpanEncoder(semconv="both").encode(_table([FULL_ROW]))
    sent = {kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes}
    for attribute, column in GEN_AI_ATTRIBUTES.items():
        assert attribute in sent or GEN_AI_COLUMNS.get(column) in sent, attribute


def test_decorated_calls_arrive_as_one_tree_with_the_projects_service_name(
    tmp_path: Path,
) -> None:
    """``@monitor_llm`` spans exported over gzip'd HTTP keep their trace, their
    parent links and the project as ``service.name``; an LLM call is named by its model."""

    @monitor_llm("plan", operation_type="agent_workflow")
    def agent() -> str:
        tool("paris")
        return llm("hi")

    @monitor_llm("lookup", operation_type="tool")
    def tool(city: str) -> str:
        return city

    @monitor_llm("call", custom_attributes={"provider": "openai", "model": "gpt-4o-mini"})
    def llm(prompt: str) -> str:
        return "hello"

    memory = llamonitor.InMemoryBackend()
    with HTTPReceiver() as receiver:
        exporter = OTLPExporterConfig(endpoint=receiver.base, compression="gzip")
        config = MonitorConfig(
            storage=StorageConfig(backend=memory, flush_interval_seconds=0.05),
            exporters=[exporter],
            project_name="travel",
        )
        llamonitor.initialize_monitoring(config)
        agent()
        assert llamonitor.flush(10)
        llamonitor.shutdown_monitoring()
    rows = {r["operation_name"]: r for r in memory.rows()}
    got = {s.attributes["llamonitor.operation_name"]: s for s in receiver.received.spans()}
    assert got["plan"].name == "invoke_agent plan"
    assert got["lookup"].name == "execute_tool lookup"
    assert got["lookup"].attributes["gen_ai.tool.name"] == "lookup"
    assert got["call"].name == "chat gpt-4o-mini" and got["call"].span.kind == 3
    assert got["plan"].span.kind == got["lookup"].span.kind == 1  # INTERNAL
    for name, span in got.items():
        assert span.span.trace_id.hex() == rows[name]["trace_id"]
        assert span.span.span_id.hex() == rows[name]["span_id"]
        assert span.resource["service.name"] == "travel"
        assert span.resource["process.pid"] == rows[name]["process_id"]
    assert got["lookup"].span.parent_span_id == got["plan"].span.span_id
    assert got["call"].span.parent_span_id == got["plan"].span.span_id
    assert got["plan"].span.parent_span_id == b""
    assert all(h.get("content-encoding") == "gzip" for h in receiver.received.headers)


def test_grpc_carries_the_same_spans_and_the_headers_as_metadata() -> None:
    """Over gRPC (gzip) the receiver gets the same span, and the configured
    headers arrive as call metadata."""
    with GRPCReceiver() as receiver:
        _send(
            receiver,
            [FULL_ROW],
            protocol="grpc",
            compression="gzip",
            headers={"Authorization": "Bearer t0k"},
        )
    (span,) = receiver.received.spans()
    assert span.name == "chat gpt-4o"
    assert span.attributes["gen_ai.usage.input_tokens"] == 120
    assert receiver.received.headers[0]["authorization"] == "Bearer t0k"


def test_the_environment_alone_configures_the_exporter(
    http_receiver: HTTPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LLMOPS_EXPORTERS='["otlp"]'`` and the OTEL_* variables export with no
    code: endpoint, URL-decoded headers, service name, resource attributes."""
    monkeypatch.setenv("LLMOPS_EXPORTERS", '["otlp"]')
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.base)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b%3Dc,team=ml")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=x")
    config = MonitorConfig.for_local_dev(tmp_path)
    assert isinstance(config.exporters[0], OTLPExporterConfig)

    @monitor_llm("step")
    def step() -> int:
        return 1

    llamonitor.initialize_monitoring(config)
    step()
    assert llamonitor.flush(10)
    llamonitor.shutdown_monitoring()
    (span,) = http_receiver.received.spans()
    assert span.resource["service.name"] == "checkout"
    assert span.resource["deployment.environment"] == "prod"
    headers = http_receiver.received.headers[0]
    assert headers["x-api-key"] == "a b=c" and headers["team"] == "ml"
    assert headers["content-encoding"] == "gzip"


def test_endpoints_follow_the_otel_rules(tmp_path: Path) -> None:
    """The base endpoint gets ``/v1/traces`` over HTTP, a signal-specific one is
    used as is, gRPC is plain only for http://, and the timeout variable is in ms."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/otlp/"}
    got = OTLPExporterConfig().resolve(environ=env)
    assert got.endpoints == {
        "traces": "https://collector:4318/otlp/v1/traces",
        "metrics": "https://collector:4318/otlp/v1/metrics",
        "logs": "https://collector:4318/otlp/v1/logs",  # scores (docs/scores.md)
    }
    env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = "http://loki:3100/otlp/v1/logs"
    assert OTLPExporterConfig().resolve(environ=env).endpoints["logs"] == (
        "http://loki:3100/otlp/v1/logs"
    )
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://tempo:9999/custom"
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2500"
    got = OTLPExporterConfig().resolve(environ=env)
    assert got.endpoints["traces"] == "http://tempo:9999/custom"
    assert got.timeout_seconds == 2.5
    # an argument beats the environment
    got = OTLPExporterConfig(endpoint="http://mine:4318").resolve(environ=env)
    assert got.endpoints["traces"] == "http://mine:4318/v1/traces"
    assert OTLPExporterConfig().resolve(environ={}).endpoints["traces"] == (
        "http://localhost:4318/v1/traces"
    )
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert OTLPExporterConfig().resolve(environ=grpc).insecure
    assert not OTLPExporterConfig(endpoint="https://c:4317").resolve(environ=grpc).insecure
    plain = OTLPExporterConfig(endpoint="c:4317").resolve(
        environ={**grpc, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    )
    assert plain.insecure and plain.endpoints["traces"] == "http://c:4317"
    ident = OTLPExporterConfig(endpoint="https://user:secret@c:4318/?key=s3").spool_identity()
    assert "secret" not in json.dumps(ident) and "s3" not in json.dumps(ident)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, "exporters[0].endpoint"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:99999"}, "exporters[0].traces_endpoint"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/xml"}, "exporters[0].protocol"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "exporters[0].headers"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "exporters[0].compression"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "exporters[0].timeout_seconds"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], setting: str
) -> None:
    """A bad value, given or from the environment, stops initialize_monitoring
    with a ConfigurationError naming the exporter's setting."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = MonitorConfig.for_local_dev(tmp_path, exporters=["otlp"])
    with pytest.raises(ConfigurationError) as info:
        llamonitor.initialize_monitoring(config)
    assert info.value.setting == setting


def test_an_unknown_exporter_kind_is_refused() -> None:
    """``exporters=["nope"]`` names the kinds there are."""
    with pytest.raises(ValueError, match=r"exporters\[0\].*known: .*otlp"):
        MonitorConfig(exporters=["nope"])


def test_the_v1_36_option_emits_the_older_names(
    http_receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``semconv="v1.36"`` (or OTEL_SEMCONV_STABILITY_OPT_IN without
    gen_ai_latest_experimental) gives ``gen_ai.system`` and content as events;
    ``both`` gives each name."""
    _send(http_receiver, [FULL_ROW], semconv="v1.36")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    _send(http_receiver, [FULL_ROW])
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    _send(http_receiver, [FULL_ROW])
    _send(http_receiver, [FULL_ROW], semconv="both")
    old, from_env, latest, both = http_receiver.received.spans()
    for span in (old, from_env):
        assert span.attributes["gen_ai.system"] == "openai"
        assert "gen_ai.provider.name" not in span.attributes
        assert "gen_ai.input.messages" not in span.attributes
        events = {e.name: e for e in span.span.events}
        assert set(events) == {"gen_ai.user.message", "gen_ai.choice"}
        choice = {kv.key: kv.value for kv in events["gen_ai.choice"].attributes}
        assert json.loads(choice["message"].string_value)["content"] == "Rainy, 57°F."
    assert "gen_ai.system" not in latest.attributes and not latest.span.events
    assert both.attributes["gen_ai.system"] == both.attributes["gen_ai.provider.name"]
    assert "gen_ai.input.messages" in both.attributes and len(both.span.events) == 2


def test_ids_that_are_not_hex_map_to_stable_valid_ids(http_receiver: HTTPReceiver) -> None:
    """Ids of another form hash to valid, non-zero OTLP ids, the same on every
    export, with the child pointing at its parent; their text is kept."""
    parent = span_row(1, trace_id="trace-x", span_id="root", session_id="s1")
    child = span_row(2, trace_id="trace-x", span_id="leaf", parent_span_id="root")
    zero = span_row(3, trace_id="0" * 32, span_id="0" * 16)
    _send(http_receiver, [parent, child, zero])
    _send(http_receiver, [parent, child, zero])
    spans = http_receiver.received.spans()
    first, again = spans[:3], spans[3:]
    assert [s.span.SerializeToString() for s in first] == [
        s.span.SerializeToString() for s in again
    ]
    p, c, z = first
    assert p.span.trace_id == c.span.trace_id == otlp_id("trace-x", 16)[0]
    assert c.span.parent_span_id == p.span.span_id
    assert len(p.span.trace_id) == 16 and len(p.span.span_id) == 8
    assert any(z.span.trace_id) and any(z.span.span_id)
    assert c.attributes["llamonitor.span_id"] == "leaf"
    assert c.attributes["llamonitor.parent_span_id"] == "root"


def test_a_receiver_that_is_down_gets_every_span_once_it_is_back(tmp_path: Path) -> None:
    """Spans made while the receiver is down are spooled and delivered when it
    is back, with the ids they would have had (a repeat is the same span)."""
    receiver = HTTPReceiver()
    port = receiver.port
    receiver.stop()  # nothing listens on the port now

    @monitor_llm("while_down")
    def work(i: int) -> int:
        return i

    memory = llamonitor.InMemoryBackend()
    config = MonitorConfig(
        storage=StorageConfig(backend=memory, flush_interval_seconds=0.05),
        exporters=[OTLPExporterConfig(endpoint=f"http://127.0.0.1:{port}", timeout_seconds=2)],
        spool_dir=tmp_path / "spool",
        max_retries=1,
        retry_backoff_seconds=0.05,
        retry_max_backoff_seconds=0.2,
    )
    writer = llamonitor.initialize_monitoring(config)
    for i in range(30):
        work(i)
    llamonitor.flush(10)
    assert writer.health_check()["sinks"]["otlp"]["spooled"] == 30
    back = HTTPReceiver(port=port).start()
    try:
        for i in range(30, 40):
            work(i)
        assert _wait(lambda: len(back.received.by_event()) >= 40)
        # The sink counts a replayed record done just after the receiver answered.
        _wait(lambda: writer.health_check()["sinks"]["otlp"]["spooled"] == 0)
        health = writer.health_check()["sinks"]["otlp"]
        llamonitor.shutdown_monitoring()
    finally:
        back.stop()
    rows = {r["event_id"]: r for r in memory.rows()}
    spans = back.received.spans()
    assert {s.attributes["llamonitor.event_id"] for s in spans} == set(rows)
    for s in spans:  # a span sent twice (at least once) carries the same ids
        row = rows[s.attributes["llamonitor.event_id"]]
        assert s.span.span_id.hex() == row["span_id"] and s.span.trace_id.hex() == row["trace_id"]
    assert health["spooled"] == 0 and health["written"] == 40


def test_a_refused_batch_is_not_retried_and_kept_as_rejected(tmp_path: Path) -> None:
    """A 400 is sent once (no retry loop), its spans are kept in the spool as
    rejected and counted, and later spans go through when the receiver takes them."""

    @monitor_llm("refused")
    def work(i: int) -> int:
        return i

    with HTTPReceiver() as receiver:
        receiver.always = (400, {"Content-Type": "text/plain"}, b"bad span")
        config = MonitorConfig.for_local_dev(
            tmp_path, exporters=[OTLPExporterConfig(endpoint=receiver.base)], max_retries=3
        )
        writer = llamonitor.initialize_monitoring(config)
        for i in range(5):
            work(i)
        assert llamonitor.flush(10)
        refused = writer.health_check()["sinks"]["otlp"]
        receiver.always = None
        work(5)
        assert llamonitor.flush(10)
        after = writer.health_check()["sinks"]["otlp"]
        llamonitor.shutdown_monitoring()
    assert receiver.answered.count(400) == 1
    assert refused["rejected"] == 5 and refused["spool_rejected_bytes"] > 0
    assert refused["backend"]["spans_rejected"] == 5
    assert len(receiver.received.spans()) == 1 and after["written"] == 1


def test_backend_raises_rows_rejected_for_the_refused_requests_only(
    http_receiver: HTTPReceiver,
) -> None:
    """Of a batch sent in several requests, only the refused request's rows
    are raised as rejected; the others are delivered."""
    rows = [span_row(i, span_id=f"{i + 1:016x}") for i in range(6)]
    http_receiver.fail_next.extend([None, (400, {}, b"no")])
    backend = OTLPExporterConfig(endpoint=http_receiver.base, max_spans_per_request=2)
    sink = backend.create_backend()
    with pytest.raises(RowsRejected) as info:
        sink.write_table(_table(rows))
    sink.close()
    assert info.value.rejected.column("event_id").to_pylist() == ["e000002", "e000003"]
    assert "HTTP 400: no" in info.value.errors[0]
    assert len(http_receiver.received.spans()) == 4


def test_retry_after_and_partial_success(http_receiver: HTTPReceiver) -> None:
    """A 503 with a short Retry-After is waited for and sent again in the same
    write; spans a receiver reports rejected in a partial success are counted."""
    http_receiver.fail_next.append((503, {"Retry-After": "0.1"}, b""))
    http_receiver.partial = 1
    sink = OTLPExporterConfig(endpoint=http_receiver.base).create_backend()
    sink.write_table(_table([span_row(0), span_row(1, span_id="2" * 16)]))
    sink.close()
    assert http_receiver.answered == [503, 200]
    assert sink.stats()["partial_rejected_spans"] == 1 and sink.stats()["spans_sent"] == 2


def test_a_long_retry_after_holds_requests_back() -> None:
    """A Retry-After longer than a write can wait makes the next writes fail at
    once as unavailable (transient, so the sink spools), without a request."""
    from llamonitor.export import ExportUnavailable
    from llamonitor.transport.spool import is_transient

    with HTTPReceiver() as receiver:
        receiver.fail_next.append((429, {"Retry-After": "60"}, b""))
        sink = OTLPExporterConfig(endpoint=receiver.base).create_backend()
        for _ in range(2):
            with pytest.raises(ExportUnavailable) as info:
                sink.write_table(_table([span_row(0)]))
            assert is_transient(info.value)
        sink.close()
    assert receiver.answered == [429]


def test_encoding_is_per_column_and_handles_sparse_batches() -> None:
    """A batch mixing LLM spans, plain spans and nulls encodes each row with
    just its own attributes (no attribute for a null)."""
    rows = [
        span_row(0, provider="anthropic", model="claude", input_tokens=3),
        span_row(1, span_id="1" * 16, timestamp=T0 + timedelta(seconds=5), duration_ms=None),
    ]
    request = SpanEncoder().encode(_table(rows))
    (rs,) = request.resource_spans
    llm, plain = rs.scope_spans[0].spans
    names = {kv.key for kv in llm.attributes}
    assert {"gen_ai.provider.name", "gen_ai.usage.input_tokens"} <= names
    assert "gen_ai.usage.output_tokens" not in names
    assert plain.name == "op" and plain.kind == 1
    keys = {kv.key for kv in plain.attributes}
    assert keys.isdisjoint({"gen_ai.operation.name", "gen_ai.request.model"})
    assert plain.end_time_unix_nano == plain.start_time_unix_nano


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_sender_carries_metrics_too(protocol: str) -> None:
    """``OTLPSender.send("metrics", ...)`` delivers an OTLP metrics request over
    HTTP (``/v1/metrics``) and gRPC, with the same settings as the spans."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from llamonitor.export import OTLPSender

    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "gen_ai.client.token.usage"
    metric.gauge.data_points.add(as_int=7)
    peer = HTTPReceiver() if protocol == "http/protobuf" else GRPCReceiver()
    with peer as receiver:
        config = OTLPExporterConfig(endpoint=receiver.base, protocol=protocol, compression="gzip")
        sender = OTLPSender(config.resolve())
        sender.send("metrics", request)
        sender.close()
    (got,) = receiver.received.metrics
    assert got.resource_metrics[0].scope_metrics[0].metrics[0].name == "gen_ai.client.token.usage"


def test_without_the_extra_the_error_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without opentelemetry-proto, starting an OTLP exporter fails with an
    error naming ``pip install 'llamonitor[otlp]'``; importing llamonitor never needs it."""
    import sys

    dropped = ("opentelemetry.proto", "llamonitor.export._otlp_")
    kept = ("_config", "_ids", "_semconv")
    for name in [n for n in sys.modules if n.startswith(dropped) and not n.endswith(kept)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.proto", None)
    config = MonitorConfig.for_local_dev(tmp_path, exporters=["otlp"])
    with pytest.raises(ConfigurationError, match=r"pip install 'llamonitor\[otlp\]'"):
        llamonitor.initialize_monitoring(config)


def test_spans_are_grouped_by_resource() -> None:
    """Spans of two projects (or processes) in one batch go in one ResourceSpans
    each, named after their project; spans without a project get the default."""
    rows = [
        span_row(0, project_name="a"),
        span_row(1, span_id="1" * 16, project_name="b"),
        span_row(2, span_id="2" * 16, project_name="a"),
        span_row(3, span_id="3" * 16, process_id=7),
    ]
    encoder = SpanEncoder(default_service_name="fallback", resource_attributes={"team": "ml"})
    request = encoder.encode(_table(rows))
    groups = {}
    for rs in request.resource_spans:
        attrs = {kv.key: kv.value for kv in rs.resource.attributes}
        groups[(attrs["service.name"].string_value, attrs["process.pid"].int_value)] = len(
            rs.scope_spans[0].spans
        )
        assert attrs["team"].string_value == "ml"
    assert groups == {("a", 1): 2, ("b", 1): 1, ("fallback", 7): 1}


def test_every_registered_exporter_kind_builds_its_config() -> None:
    """Each kind name of the registry builds an ExporterConfig of that kind."""
    from llamonitor.schema.config import EXPORTER_KINDS

    config = MonitorConfig(exporters=list(EXPORTER_KINDS))
    assert [e.kind for e in config.exporters] == list(EXPORTER_KINDS)


def test_a_retry_after_an_outage_mid_table_does_not_resend_what_was_taken() -> None:
    """A table sent in several requests whose second one meets a 503: the retry
    sends only the requests not taken yet, so no span arrives twice."""
    from llamonitor.export import ExportUnavailable

    with HTTPReceiver() as receiver:
        receiver.fail_next.extend([None, (503, {}, b"")])
        sink = OTLPExporterConfig(endpoint=receiver.base).create_backend()
        sink.max_spans = 2
        rows = [
            span_row(i, span_id=f"{i + 1:016x}", event_id=f"{i + 1:032x}") for i in range(6)
        ]
        table = _table(rows)
        with pytest.raises(ExportUnavailable):
            sink.write_table(table)
        sink.write_table(table)
        sink.close()
    got = [s.span.span_id.hex() for s in receiver.received.spans()]
    assert sorted(got) == sorted(f"{i + 1:016x}" for i in range(6))
