"""Span rows (``llamonitor.schema.SCHEMA``) as an OTLP ``ExportTraceServiceRequest``.

The mapping follows the OpenTelemetry GenAI semantic conventions (docs/otel.md
has the table): an LLM call is a ``CLIENT`` span named
``{gen_ai.operation.name} {gen_ai.request.model}``, a tool ``execute_tool
{name}``, an agent ``invoke_agent {name}``, anything else its operation name
(``INTERNAL``). What the conventions have no name for goes under
``llamonitor.*`` (``llamonitor.cost_usd``, ``llamonitor.text_char_count``,
``llamonitor.custom.<key>``...), so every column can be read back from the span.

The spans are built column by column (one pass per column over the rows that
have a value in it; repeated values built once, see ``_otlp_attrs``), which is
what makes this fast enough for the sink thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the OTLP span encoder needs opentelemetry-proto ({exc}): pip install 'llamonitor[otlp]'"
    ) from exc

from llamonitor.export._otlp_attrs import (
    NS,
    SpanList,
    merge_fragments,
    present,
    put,
    put_custom,
    put_list,
    put_rows,
    set_str,
    to_json,
    values_of,
)
from llamonitor.export._otlp_ids import SPAN_ID_BYTES, TRACE_ID_BYTES, IdColumn
from llamonitor.export._otlp_semconv import (
    SEMCONV_BOTH,
    SEMCONV_LATEST,
    SEMCONV_MODES,
    SEMCONV_V1_36,
)

OTHER_ERROR = "_OTHER"
"""``error.type`` of a failed span whose exception class is unknown (the conventions' fallback)."""

SCOPE_NAME = "llamonitor"

# The conventions' operation names, from our operation_type.
INFERENCE_OPERATIONS = frozenset(("chat", "text_completion", "generate_content", "embeddings"))
_OPERATIONS: dict[str, str] = {
    "llm_call": "chat",
    "llm": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "tool": "execute_tool",
    "tool_call": "execute_tool",
    "agent": "invoke_agent",
    "agent_workflow": "invoke_agent",
    "workflow": "invoke_workflow",
}
_WELL_KNOWN = frozenset(
    (
        *INFERENCE_OPERATIONS,
        "execute_tool",
        "invoke_agent",
        "invoke_workflow",
        "create_agent",
        "retrieval",
        "plan",
    )
)

# Columns the current conventions name, one attribute each (the ingest side's
# GEN_AI_ATTRIBUTES also knows older names; these are the ones we send). The
# columns with more to them (provider, session_id, operation_type,
# finish_reason, cost, content...) are handled one by one below.
GEN_AI_COLUMNS: dict[str, str] = {
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
}
"""Column -> the GenAI attribute it is exported as (both conventions)."""

# Columns that are not span attributes (or not only): ids, times, status, resource, content.
_NOT_ATTRIBUTES = frozenset(
    (
        "trace_id",
        "span_id",
        "parent_span_id",
        "timestamp",
        "error",
        "error_message",
        "error_type",
        "project_name",
        "process_id",
        "prompt_content",
        "completion_content",
        "custom_attributes",
        "provider",
        "session_id",
        "finish_reason",
        *GEN_AI_COLUMNS,
    )
)


def gen_ai_operation(operation_type: str) -> str | None:
    """The ``gen_ai.operation.name`` of an ``operation_type`` (None: not a GenAI operation)."""
    if operation_type in _WELL_KNOWN:
        return operation_type
    got = _OPERATIONS.get(operation_type)
    if got is None and operation_type.startswith("agent"):
        return "invoke_agent"
    return got


class SpanEncoder:
    """Encodes span tables as OTLP trace requests.

    Args:
        semconv: ``latest``, ``v1.36`` or ``both`` (see ``SEMCONV_MODES``).
        service_name: ``service.name`` of every span; ``None``: the row's
            ``project_name``, else ``default_service_name``.
        default_service_name: for rows without a project.
        resource_attributes: more resource attributes (``OTEL_RESOURCE_ATTRIBUTES``).
        scope_version: the instrumentation scope's version (llamonitor's).
    """

    def __init__(
        self,
        *,
        semconv: str = SEMCONV_LATEST,
        service_name: str | None = None,
        default_service_name: str = "llamonitor",
        resource_attributes: Mapping[str, str] | None = None,
        scope_version: str = "",
    ) -> None:
        if semconv not in SEMCONV_MODES:
            raise ValueError(f"semconv must be one of {', '.join(SEMCONV_MODES)}, not {semconv!r}")
        self.latest = semconv in (SEMCONV_LATEST, SEMCONV_BOTH)
        self.old = semconv in (SEMCONV_V1_36, SEMCONV_BOTH)
        self.service_name = service_name
        self.default_service_name = default_service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.scope_version = scope_version

    def encode(self, table: pa.Table) -> ExportTraceServiceRequest:
        """One request holding every row of ``table`` (one span each)."""
        request = ExportTraceServiceRequest()
        n = table.num_rows
        if n == 0:
            return request
        cols = {name: table.column(name) for name in table.column_names}
        spans = self._spans(request, cols, n)
        self._status(spans, cols)
        for name, column in cols.items():
            if name in GEN_AI_COLUMNS:
                put(spans, column, GEN_AI_COLUMNS[name])
            if name not in _NOT_ATTRIBUTES:
                put(spans, column, NS + name)
        if "provider" in cols:
            if self.latest:
                put(spans, cols["provider"], "gen_ai.provider.name")
            if self.old:
                put(spans, cols["provider"], "gen_ai.system")
        if "session_id" in cols:
            put(spans, cols["session_id"], "gen_ai.conversation.id")
        if "cost_usd" in cols:
            put(spans, cols["cost_usd"], "gen_ai.usage.cost")
        if self.latest and "time_to_first_token_ms" in cols:
            ttft = cols["time_to_first_token_ms"]
            put(spans, pc.divide(ttft, 1000.0), "gen_ai.response.time_to_first_chunk")
        if self.latest and "stream_item_count" in cols:
            streamed = pc.if_else(
                pc.is_valid(cols["stream_item_count"]), True, pa.scalar(None, pa.bool_())
            )
            put(spans, streamed, "gen_ai.request.stream")
        if "finish_reason" in cols:
            put_list(spans, cols["finish_reason"], "gen_ai.response.finish_reasons")
        self._content(spans, cols)
        if "custom_attributes" in cols:
            put_custom(spans, cols["custom_attributes"])
        merge_fragments(spans)
        return request

    # -- spans, ids, names, times ------------------------------------------------

    def _spans(
        self, request: ExportTraceServiceRequest, cols: dict[str, Any], n: int
    ) -> SpanList:
        trace = IdColumn(values_of(cols.get("trace_id"), n), TRACE_ID_BYTES)
        span = IdColumn(values_of(cols.get("span_id"), n), SPAN_ID_BYTES)
        parent = IdColumn(values_of(cols.get("parent_span_id"), n), SPAN_ID_BYTES)
        names, kinds, ops, tools = _names(cols, n)
        starts, ends = _times(cols, n)
        groups = self._groups(request, cols, n)
        made: list[Span] = []
        add = made.append
        client, internal = Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
        for i in range(n):
            add(
                groups[i].add(
                    trace_id=trace.ids[i],
                    span_id=span.ids[i],
                    parent_span_id=parent.ids[i],
                    name=names[i],
                    kind=client if kinds[i] else internal,
                    start_time_unix_nano=starts[i],
                    end_time_unix_nano=ends[i],
                )
            )
        spans = SpanList(made)
        put_rows(spans, ops, "gen_ai.operation.name")
        put_rows(spans, tools, "gen_ai.tool.name")
        # An id that is not ours in form (hashed above): its text, to read it back.
        for column, ids in (("trace_id", trace), ("span_id", span), ("parent_span_id", parent)):
            if ids.hashed:
                texts = values_of(cols[column], n)
                for i in ids.hashed:
                    set_str(spans[i], NS + column, texts[i])
        return spans

    def _groups(
        self, request: ExportTraceServiceRequest, cols: dict[str, Any], n: int
    ) -> list[Any]:
        """The span list (a ``ScopeSpans``) of each row: one ``ResourceSpans``
        per service name, project and process."""
        projects = values_of(cols.get("project_name"), n)
        pids = values_of(cols.get("process_id"), n)
        containers: dict[tuple[Any, Any], Any] = {}
        out = []
        for project, pid in zip(projects, pids, strict=True):
            key = (project, pid)
            spans = containers.get(key)
            if spans is None:
                spans = containers[key] = self._resource(request, project, pid)
            out.append(spans)
        return out

    def _resource(self, request: ExportTraceServiceRequest, project: Any, pid: Any) -> Any:
        resource_spans: ResourceSpans = request.resource_spans.add()
        attrs: dict[str, Any] = dict(self.resource_attributes)
        attrs["service.name"] = self.service_name or project or self.default_service_name
        if project is not None:
            attrs["llamonitor.project_name"] = project
        if pid is not None:
            attrs["process.pid"] = int(pid)
        attrs.update(
            {
                "telemetry.sdk.name": "llamonitor",
                "telemetry.sdk.language": "python",
                "telemetry.sdk.version": self.scope_version,
            }
        )
        target = resource_spans.resource.attributes
        for key, value in attrs.items():
            kv = target.add(key=key)
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = str(value)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE_NAME
        scope_spans.scope.version = self.scope_version
        return scope_spans.spans

    def _status(self, spans: SpanList, cols: dict[str, Any]) -> None:
        """Failed spans: status ERROR with the message, and ``error.type``."""
        n = len(spans)
        error = cols.get("error")
        failed = pa.chunked_array([pa.array([False] * n)]) if error is None else pc.fill_null(
            error, False
        )
        idx = np.flatnonzero(failed.to_numpy(zero_copy_only=False)).tolist()
        if idx:
            types = values_of(cols.get("error_type"), n)
            messages = values_of(cols.get("error_message"), n)
            code = Status.STATUS_CODE_ERROR
            for i in idx:
                s = spans[i]
                s.status.code = code
                if messages[i]:
                    s.status.message = messages[i]
                set_str(s, "error.type", types[i] or OTHER_ERROR)
        rest = pc.invert(failed)
        for column, key in (("error_type", "error.type"), ("error_message", NS + "error_message")):
            if column in cols:  # a type or message on a span that did not fail: kept as is
                values = cols[column] if not idx else pc.if_else(
                    rest, cols[column], pa.scalar(None, cols[column].type)
                )
                put(spans, values, key)

    # -- content ------------------------------------------------------------------

    def _content(self, spans: SpanList, cols: dict[str, Any]) -> None:
        n = len(spans)
        prompts = cols.get("prompt_content")
        completions = cols.get("completion_content")
        has_prompt = prompts is not None and prompts.null_count < n
        has_completion = completions is not None and completions.null_count < n
        if not (has_prompt or has_completion):
            return
        providers = values_of(cols.get("provider"), n)
        reasons = values_of(cols.get("finish_reason"), n)
        failed = values_of(cols.get("error"), n)
        ends = [s.end_time_unix_nano for s in spans] if self.old else []
        if has_prompt:
            for i, text in present(prompts):
                if self.latest:
                    message = {"role": "user", "parts": [{"type": "text", "content": text}]}
                    set_str(spans[i], "gen_ai.input.messages", to_json([message]))
                if self.old:
                    event = spans[i].events.add(
                        name="gen_ai.user.message", time_unix_nano=spans[i].start_time_unix_nano
                    )
                    _event_attrs(event, providers[i], {"content": text})
        if has_completion:
            for i, text in present(completions):
                reason = (reasons[i] or "").split(",")[0] or ("error" if failed[i] else "stop")
                if self.latest:
                    message = {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": text}],
                        "finish_reason": reason,
                    }
                    set_str(spans[i], "gen_ai.output.messages", to_json([message]))
                if self.old:
                    event = spans[i].events.add(name="gen_ai.choice", time_unix_nano=ends[i])
                    _event_attrs(
                        event,
                        providers[i],
                        {
                            "index": 0,
                            "finish_reason": reason,
                            "message": to_json({"role": "assistant", "content": text}),
                        },
                    )


def _event_attrs(event: Any, provider: str | None, values: dict[str, Any]) -> None:
    if provider is not None:
        kv = event.attributes.add(key="gen_ai.system")
        kv.value.string_value = provider
    for key, value in values.items():
        kv = event.attributes.add(key=key)
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value


def _names(cols: dict[str, Any], n: int) -> tuple[list[str], list[bool], list[Any], list[Any]]:
    """Each row's span name, whether it is a CLIENT span, its
    ``gen_ai.operation.name`` and its ``gen_ai.tool.name`` (None where not applicable)."""
    op_names = values_of(cols.get("operation_name"), n)
    op_types = values_of(cols.get("operation_type"), n)
    models = values_of(cols.get("model"), n)
    providers = values_of(cols.get("provider"), n)
    agents = values_of(cols.get("agent_name"), n)
    memo: dict[Any, str | None] = {}
    names: list[str] = []
    kinds: list[bool] = []
    ops: list[Any] = []
    tools: list[Any] = []
    for i in range(n):
        op_type = op_types[i]
        op = memo.get(op_type, "")
        if op == "":
            op = memo[op_type] = gen_ai_operation(op_type) if op_type else None
        name = op_names[i] or op_type or "span"
        client = False
        tool = None
        if op in INFERENCE_OPERATIONS:
            model = models[i]
            if model is not None or providers[i] is not None:
                client = True
                name = f"{op} {model}" if model else str(op)
            else:
                op = None  # a plain function with the default operation type
        elif op == "execute_tool":
            tool = op_names[i]
            name = f"execute_tool {tool}" if tool else "execute_tool"
        elif op == "invoke_agent":
            agent = agents[i] or op_names[i]
            name = f"invoke_agent {agent}" if agent else "invoke_agent"
        names.append(name)
        kinds.append(client)
        ops.append(op)
        tools.append(tool)
    return names, kinds, ops, tools


def _times(cols: dict[str, Any], n: int) -> tuple[list[int], list[int]]:
    """Start and end of each span, in nanoseconds since the epoch."""
    ts = cols.get("timestamp")
    if ts is None:
        start = np.zeros(n, dtype=np.int64)
    else:
        micros = pc.cast(pc.cast(ts, pa.timestamp("us", tz="UTC")), pa.int64())
        start = np.clip(pc.fill_null(micros, 0).to_numpy(zero_copy_only=False), 0, None) * 1000
    dur = cols.get("duration_ms")
    if dur is None:
        length = np.zeros(n, dtype=np.int64)
    else:
        ms = pc.fill_null(pc.cast(dur, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        length = np.rint(np.clip(np.nan_to_num(ms), 0.0, 1e12) * 1e6).astype(np.int64)
    return start.tolist(), (start + length).tolist()
