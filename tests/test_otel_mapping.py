"""llamonitor.otel.rows_from_request: OTLP spans to stored rows, per convention family.

Requests are built two ways: by the OpenTelemetry SDK itself (spans from a real
``TracerProvider``, encoded by ``opentelemetry-exporter-otlp-proto-common``'s
``encode_spans``, the path the in-process bridge takes), and by hand with
``opentelemetry-proto`` messages, for the attributes each convention family
emits and for the malformed spans a network peer can send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llamonitor.otel import MappedSpans, rows_from_request
from llamonitor.otel._mapping import MAX_CLOCK_SKEW_NS
from llamonitor.otel._values import MAX_ATTRIBUTES, MAX_VALUE_CHARS
from llamonitor.schema import SCHEMA
from llamonitor.schema._extensions import rows_table

TRACE = bytes(range(1, 17))
NOW = time.time_ns()


def _any(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(_any(x) for x in v)
        return out
    return AnyValue(string_value=str(v))


def _kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def _span(
    attrs: dict[str, Any] | None = None,
    *,
    span_id: bytes = b"\x00\x00\x00\x00\x00\x00\x00\x07",
    trace_id: bytes = TRACE,
    parent: bytes = b"",
    name: str = "op",
    start: int = NOW - 5_000_000,
    end: int = NOW,
    status: int = 0,
    message: str = "",
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=_kvs(attrs or {}),
        status=Status(code=status, message=message),  # type: ignore[arg-type]
    )


def _request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(_kvs(resource or {"service.name": "shop"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return req


def _one(attrs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    mapped = rows_from_request(_request(_span(attrs, **kw)), now_ns=NOW)
    assert mapped.rejected == 0, mapped.errors
    (row,) = mapped.rows
    return row


def _custom(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row.get("custom_attributes") or "{}")


def _table(mapped: MappedSpans) -> pa.Table:
    """The rows as the writer stores them (the row-record path's table builder)."""
    return rows_table(mapped.rows)


@pytest.fixture
def sdk() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests.sdk"), exporter
    provider.shutdown()


def test_sdk_spans_encoded_by_encode_spans_map_with_hierarchy(
    sdk: tuple[Any, InMemorySpanExporter],
) -> None:
    """Spans from the real OTel SDK, encoded by encode_spans, become rows with
    their ids, parent links, times, status and GenAI columns, and fit SCHEMA."""
    tracer, exporter = sdk
    with tracer.start_as_current_span("agent run") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "planner")
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            llm.set_attribute("gen_ai.usage.input_tokens", 120)
            llm.set_attribute("gen_ai.usage.output_tokens", 30)
            llm.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            llm.set_attribute("gen_ai.conversation.id", "conv-1")
            llm.set_attribute("shop.cart_size", 3)
            try:
                raise TimeoutError("upstream slow")
            except TimeoutError as exc:
                llm.record_exception(exc)
                llm.set_status(StatusCode.ERROR, "upstream slow")
    finished = exporter.get_finished_spans()
    mapped = rows_from_request(encode_spans(finished))
    assert mapped.rejected == 0
    by_name = {r["operation_name"]: r for r in mapped.rows}
    root_row, llm_row = by_name["agent run"], by_name["chat gpt-4o-mini"]
    sdk_root = next(s for s in finished if s.name == "agent run")
    assert root_row["trace_id"] == f"{sdk_root.context.trace_id:032x}"
    assert root_row["span_id"] == f"{sdk_root.context.span_id:016x}"
    assert "parent_span_id" not in root_row
    assert llm_row["parent_span_id"] == root_row["span_id"]
    assert llm_row["trace_id"] == root_row["trace_id"]
    assert root_row["operation_type"] == "agent_workflow"
    assert root_row["agent_name"] == "planner"
    assert root_row["session_id"] == root_row["trace_id"]  # no conversation id: the trace
    assert llm_row["session_id"] == "conv-1"
    assert llm_row["operation_type"] == "llm_call"
    assert (llm_row["provider"], llm_row["model"]) == ("openai", "gpt-4o-mini")
    assert (llm_row["input_tokens"], llm_row["output_tokens"], llm_row["total_tokens"]) == (
        120,
        30,
        150,
    )
    assert llm_row["finish_reason"] == "stop"
    assert llm_row["error"] is True
    assert llm_row["error_type"] == "TimeoutError"
    assert llm_row["error_message"] == "upstream slow"
    assert llm_row["project_name"] == "checkout"
    sdk_llm = next(s for s in finished if s.name == "chat gpt-4o-mini")
    assert sdk_llm.start_time is not None and sdk_llm.end_time is not None
    assert llm_row["duration_ms"] == pytest.approx((sdk_llm.end_time - sdk_llm.start_time) / 1e6)
    # microseconds, truncated from nanoseconds: under 1 µs apart, plus float rounding
    assert llm_row["timestamp"].timestamp() == pytest.approx(sdk_llm.start_time / 1e9, abs=2e-6)
    custom = _custom(llm_row)
    assert custom["shop.cart_size"] == 3
    assert custom["otel.span_kind"] == "client"
    assert custom["otel.scope"] == {"name": "tests.sdk"}
    assert custom["otel.resource"]["telemetry.sdk.name"] == "opentelemetry"
    assert "gen_ai.request.model" not in custom  # the column holds it
    table = _table(mapped)
    assert table.num_rows == 2
    assert table.schema.field("timestamp").type == SCHEMA.field("timestamp").type


def test_same_span_sent_twice_has_the_same_event_id() -> None:
    """A retried export maps to the same event_id (ids derive from trace and span id)."""
    a = _one({})
    b = _one({})
    assert a["event_id"] == b["event_id"] and len(a["event_id"]) == 32


def test_genai_current_conventions() -> None:
    """OTel GenAI semconv (current, gen_ai_attributes.py): provider.name, request/response
    model and id, usage incl. cache_read/cache_creation/reasoning, request params."""
    row = _one(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.response.model": "claude-sonnet-4-20250514",
            "gen_ai.response.id": "msg_1",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.cache_read.input_tokens": 600,
            "gen_ai.usage.cache_creation.input_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 512,
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text"}]}]',
            "gen_ai.output.messages": '[{"role": "assistant"}]',
        }
    )
    assert row["provider"] == "anthropic"
    assert row["model"] == "claude-sonnet-4"
    assert row["response_model"] == "claude-sonnet-4-20250514"
    assert row["response_id"] == "msg_1"
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (600, 100)
    assert row["reasoning_tokens"] == 50
    assert (row["temperature"], row["max_tokens"]) == (0.2, 512)
    assert row["prompt_content"].startswith('[{"role": "user"')
    assert row["completion_content"] == '[{"role": "assistant"}]'
    assert len(row["prompt_hash"]) == 32
    assert row["token_source"] == "otel"


def test_genai_v1_36_and_older_names() -> None:
    """GenAI semconv <= v1.36: gen_ai.system, usage.prompt_tokens/completion_tokens,
    gen_ai.prompt/gen_ai.completion."""
    row = _one(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 11,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.prompt": "hi",
            "gen_ai.completion": "hello",
        }
    )
    assert row["provider"] == "openai"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert (row["prompt_content"], row["completion_content"]) == ("hi", "hello")
    assert row["operation_type"] == "llm_call"  # tokens and a model, no kind attribute


def test_current_name_wins_over_older_spelling() -> None:
    """When both spellings are present, the current convention's value fills the column
    and the other stays an attribute."""
    row = _one({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.prompt_tokens": 6})
    assert row["input_tokens"] == 5
    assert _custom(row)["gen_ai.usage.prompt_tokens"] == 6


def test_openinference_llm_span() -> None:
    """OpenInference (openinference/semconv/trace): span.kind LLM, llm.model_name,
    llm.provider, llm.token_count.*, llm.cost.*, input/output.value, session.id,
    user.id, llm.invocation_parameters."""
    row = _one(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.provider": "openai",
            "llm.system": "openai",
            "llm.token_count.prompt": 40,
            "llm.token_count.completion": 10,
            "llm.token_count.total": 50,
            "llm.token_count.prompt_details.cache_read": 8,
            "llm.token_count.prompt_details.cache_write": 2,
            "llm.token_count.completion_details.reasoning": 3,
            "llm.cost.prompt": 0.0004,
            "llm.cost.completion": 0.0006,
            "llm.cost.total": 0.001,
            "input.value": "What is 2+2?",
            "output.value": "4",
            "session.id": "sess-42",
            "user.id": "u-7",
            "llm.invocation_parameters": '{"temperature": 0.5, "max_completion_tokens": 64}',
            "llm.finish_reason": "stop",
        }
    )
    assert row["operation_type"] == "llm_call"
    assert (row["model"], row["provider"]) == ("gpt-4o-mini", "openai")
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (40, 10, 50)
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (8, 2)
    assert row["reasoning_tokens"] == 3
    assert (row["input_cost_usd"], row["output_cost_usd"], row["cost_usd"]) == (
        0.0004,
        0.0006,
        0.001,
    )
    assert row["cost_source"] == "user"
    assert (row["prompt_content"], row["completion_content"]) == ("What is 2+2?", "4")
    assert row["session_id"] == "sess-42"
    assert (row["temperature"], row["max_tokens"]) == (0.5, 64)
    assert row["finish_reason"] == "stop"
    custom = _custom(row)
    assert custom["user.id"] == "u-7"
    assert custom["llm.system"] == "openai"  # llm.provider won the column
    assert custom["openinference.span.kind"] == "LLM"


@pytest.mark.parametrize(
    ("kind", "operation_type"),
    [
        ("CHAIN", "chain"),
        ("TOOL", "tool"),
        ("AGENT", "agent_workflow"),
        ("RETRIEVER", "retrieval"),
        ("EMBEDDING", "embedding"),
        ("RERANKER", "reranker"),
        ("GUARDRAIL", "guardrail"),
        ("EVALUATOR", "evaluator"),
        ("UNKNOWN", "span"),
    ],
)
def test_openinference_span_kinds(kind: str, operation_type: str) -> None:
    """Each openinference.span.kind value maps to an operation_type."""
    assert _one({"openinference.span.kind": kind})["operation_type"] == operation_type


def test_openllmetry_traceloop_attributes() -> None:
    """OpenLLMetry (semconv_ai): traceloop.span.kind/entity.name/workflow.name,
    association properties, llm.usage.total_tokens, gen_ai.usage.cache_*_input_tokens,
    llm.request.type."""
    agent = _one(
        {
            "traceloop.span.kind": "agent",
            "traceloop.entity.name": "researcher",
            "traceloop.workflow.name": "report",
            "traceloop.association.properties.session_id": "chat-9",
            "traceloop.association.properties.user_id": "u-1",
            "traceloop.entity.input": '{"q": "x"}',
        }
    )
    assert agent["operation_type"] == "agent_workflow"
    assert agent["agent_name"] == "researcher"
    assert agent["session_id"] == "chat-9"
    assert agent["prompt_content"] == '{"q": "x"}'
    custom = _custom(agent)
    assert custom["traceloop.workflow.name"] == "report"
    assert custom["traceloop.association.properties.user_id"] == "u-1"
    llm = _one(
        {
            "llm.request.type": "chat",
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-3-5-haiku",
            "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 20,
            "llm.usage.total_tokens": 120,
            "gen_ai.usage.cache_read_input_tokens": 30,
            "gen_ai.usage.cache_creation_input_tokens": 5,
        }
    )
    assert llm["operation_type"] == "llm_call"
    assert llm["total_tokens"] == 120
    assert (llm["cache_read_tokens"], llm["cache_write_tokens"]) == (30, 5)
    assert _one({"traceloop.span.kind": "workflow"})["operation_type"] == "workflow"
    assert _one({"traceloop.span.kind": "tool"})["operation_type"] == "tool"


def test_logfire_attributes() -> None:
    """Logfire's LLM integrations: gen_ai.* names plus operation.cost, and the older
    request_data/response_data JSON of its OpenAI instrumentation."""
    current = _one(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 5,
            "operation.cost": 0.01039005,
            "logfire.msg": "chat claude-sonnet-4",
        }
    )
    assert current["cost_usd"] == 0.01039005 and current["cost_source"] == "user"
    assert _custom(current)["logfire.msg"] == "chat claude-sonnet-4"
    older = _one(
        {
            "gen_ai.system": "openai",
            "request_data": json.dumps({"model": "gpt-4", "messages": []}),
            "response_data": json.dumps(
                {"usage": {"prompt_tokens": 9, "completion_tokens": 4}, "model": "gpt-4-0613"}
            ),
        }
    )
    assert (older["model"], older["response_model"]) == ("gpt-4", "gpt-4-0613")
    assert (older["input_tokens"], older["output_tokens"]) == (9, 4)


def test_llamonitor_own_attribute_names_fill_their_columns() -> None:
    """llamonitor.<column> attributes (our exporter's) fill those columns."""
    row = _one(
        {
            "llamonitor.operation_type": "tool",
            "llamonitor.cost_usd": 0.5,
            "llamonitor.text_char_count": 12,
            "llamonitor.session_id": "s-1",
        }
    )
    assert row["operation_type"] == "tool"
    assert row["cost_usd"] == 0.5 and row["text_char_count"] == 12
    assert row["session_id"] == "s-1"


def test_values_that_do_not_fit_stay_attributes() -> None:
    """A token count sent as a string does not fill the int column; it is kept."""
    row = _one({"gen_ai.usage.input_tokens": "twelve", "gen_ai.usage.output_tokens": 4.0})
    assert "input_tokens" not in row
    assert row["output_tokens"] == 4  # an integral double is a count
    assert _custom(row)["gen_ai.usage.input_tokens"] == "twelve"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("trace_id", b"", "invalid_trace_id"),
        ("trace_id", bytes(16), "invalid_trace_id"),
        ("trace_id", b"\x01" * 15, "invalid_trace_id"),
        ("span_id", bytes(8), "invalid_span_id"),
        ("span_id", b"\x01" * 9, "invalid_span_id"),
    ],
)
def test_invalid_ids_reject_the_span_alone(field: str, value: bytes, reason: str) -> None:
    """A span with an invalid trace or span id is rejected, counted and explained;
    the good span of the same request is kept."""
    bad = _span(**{field: value})
    good = _span(span_id=b"\x00" * 7 + b"\x09")
    mapped = rows_from_request(_request(bad, good), now_ns=NOW)
    assert mapped.rejected == 1
    assert mapped.reasons == {reason: 1}
    assert "resource_spans[0].scope_spans[0].spans[0]" in mapped.errors[0]
    assert [r["span_id"] for r in mapped.rows] == ["0000000000000009"]
    assert reason in mapped.error_message()


@pytest.mark.parametrize("parent", [bytes(8), b"\x01\x02\x03"])
def test_invalid_parent_makes_a_root(parent: bytes) -> None:
    """A span whose parent id is invalid is kept as a root, the bad id kept as an attribute."""
    row = _one({}, parent=parent)
    assert "parent_span_id" not in row
    assert _custom(row)["otel.invalid_parent_span_id"] == parent.hex()


def test_clock_far_in_the_future_is_rejected_and_missing_start_too() -> None:
    """A start more than 24 h after the receiver's clock, or none, rejects the span
    (no time a store cannot place ever reaches it); 23 h ahead is kept."""
    far = _span(start=2**64 - 1, end=2**64 - 1)
    unset = _span(start=0, end=0, span_id=b"\x00" * 7 + b"\x02")
    near = _span(
        start=NOW + MAX_CLOCK_SKEW_NS - 10**9, end=NOW + MAX_CLOCK_SKEW_NS, span_id=b"\x03" * 8
    )
    mapped = rows_from_request(_request(far, unset, near), now_ns=NOW)
    assert mapped.reasons == {"clock_future": 1, "missing_start_time": 1}
    assert [r["span_id"] for r in mapped.rows] == ["03" * 8]
    _table(mapped)  # and the kept one fits the schema


def test_end_before_start_keeps_the_span_without_duration() -> None:
    """An end time before the start leaves duration_ms null instead of negative."""
    row = _one({}, start=NOW, end=NOW - 1000)
    assert "duration_ms" not in row


def test_a_huge_span_is_capped_and_counted() -> None:
    """A span with far more attributes than the cap keeps MAX_ATTRIBUTES of them, counts
    the rest, and cuts an oversized value."""
    attrs = {f"k{i}": i for i in range(MAX_ATTRIBUTES + 500)}
    attrs["k0"] = "x" * (MAX_VALUE_CHARS + 10)
    mapped = rows_from_request(_request(_span(attrs)), now_ns=NOW)
    (row,) = mapped.rows
    custom = _custom(row)
    assert custom["otel.dropped_attributes_count"] == 500
    assert mapped.dropped_attributes == 500
    assert len(custom["k0"]) == MAX_VALUE_CHARS
    assert custom["otel.truncated_values"] == 1
    assert sum(1 for k in custom if k.startswith("k")) == MAX_ATTRIBUTES


def test_content_is_cut_to_content_max_chars() -> None:
    """Content longer than content_max_chars is cut; its length is recorded."""
    row = _one({"input.value": "y" * 10_000})
    assert len(row["prompt_content"]) == 4096
    assert _custom(row)["content_truncated"] == {"prompt_content": 10_000}


def test_unknown_service_is_no_project_and_resource_attributes_are_kept() -> None:
    """The SDK's unknown_service placeholder leaves project_name null; resource
    attributes land under otel.resource."""
    req = _request(_span(), resource={"service.name": "unknown_service:python", "host.name": "h1"})
    (row,) = rows_from_request(req, now_ns=NOW).rows
    assert "project_name" not in row
    assert _custom(row)["otel.resource"] == {
        "service.name": "unknown_service:python",
        "host.name": "h1",
    }


def test_status_error_without_exception_event() -> None:
    """STATUS_CODE_ERROR alone sets error TRUE with the status message; error.type names it."""
    row = _one({"error.type": "RateLimitError"}, status=2, message="429 from upstream")
    assert row["error"] is True
    assert (row["error_type"], row["error_message"]) == ("RateLimitError", "429 from upstream")
    ok = _one({}, status=1)
    assert "error" not in ok
