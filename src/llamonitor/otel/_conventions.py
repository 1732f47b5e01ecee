"""Which span attribute fills which column, per convention family.

One table per family, each name checked against the family's own source:

- OTel GenAI semantic conventions, current (``gen_ai.provider.name``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.usage.cache_read.input_tokens``...)
  and older, v1.36 and before (``gen_ai.system``,
  ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``, ``gen_ai.prompt`` /
  ``gen_ai.completion``): opentelemetry-python's
  ``semconv/_incubating/attributes/gen_ai_attributes.py``;
- OpenInference (``openinference.span.kind``, ``llm.model_name``,
  ``llm.token_count.*``, ``llm.cost.*``, ``input.value``...): Arize-ai/openinference
  ``openinference/semconv/trace/__init__.py``;
- OpenLLMetry (``traceloop.span.kind``, ``traceloop.entity.name``,
  ``traceloop.association.properties.*``, ``llm.usage.total_tokens``,
  ``gen_ai.usage.cache_read_input_tokens``...): traceloop/openllmetry
  ``opentelemetry-semantic-conventions-ai/opentelemetry/semconv_ai/__init__.py``
  (and its older ``llm.request.model`` / ``llm.usage.prompt_tokens`` names);
- Logfire (``operation.cost``; ``request_data`` / ``response_data`` JSON of its
  OpenAI and Anthropic integrations): pydantic/logfire
  ``_internal/integrations/llm_providers``;
- llamonitor's own exporter: ``llamonitor.<column>`` for any column.

The first name of a column's list that a span carries wins, so the current
convention comes before its older spellings.
"""

from __future__ import annotations

COLUMN_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "provider": (
        "gen_ai.provider.name",
        "gen_ai.system",  # GenAI <= v1.36, Logfire, OpenLLMetry
        "llm.provider",  # OpenInference
        "llm.system",  # OpenInference
        "llm.vendor",  # OpenLLMetry, older
    ),
    "model": (
        "gen_ai.request.model",
        "llm.request.model",  # OpenLLMetry, older
        "llm.request.model_name",  # OpenInference
        "llm.model_name",  # OpenInference
        "embedding.model_name",  # OpenInference EMBEDDING spans
        "reranker.model_name",  # OpenInference RERANKER spans
    ),
    "response_model": (
        "gen_ai.response.model",
        "llm.response.model",  # OpenLLMetry, older
        "llm.response.model_name",  # OpenInference
    ),
    "response_id": ("gen_ai.response.id",),
    "agent_name": ("gen_ai.agent.name", "agent.name"),  # GenAI, OpenInference
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",  # GenAI <= v1.36, OpenLLMetry
        "llm.usage.prompt_tokens",  # OpenLLMetry, older
        "llm.token_count.prompt",  # OpenInference
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",  # GenAI <= v1.36, OpenLLMetry
        "llm.usage.completion_tokens",  # OpenLLMetry, older
        "llm.token_count.completion",  # OpenInference
    ),
    "total_tokens": (
        "gen_ai.usage.total_tokens",  # de facto (not in the conventions)
        "llm.usage.total_tokens",  # OpenLLMetry
        "llm.token_count.total",  # OpenInference
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_read",  # OpenInference
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_write",  # OpenInference
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "llm.token_count.completion_details.reasoning",  # OpenInference
    ),
    "cost_usd": (
        "gen_ai.usage.cost",  # de facto (OpenLIT, llamonitor's exporter)
        "llm.cost.total",  # OpenInference
        "operation.cost",  # Logfire
    ),
    "input_cost_usd": ("llm.cost.prompt",),  # OpenInference
    "output_cost_usd": ("llm.cost.completion",),  # OpenInference
    "finish_reason": (
        "gen_ai.response.finish_reasons",
        "llm.response.finish_reason",  # OpenLLMetry
        "llm.finish_reason",  # OpenInference
    ),
    "temperature": ("gen_ai.request.temperature", "llm.temperature"),
    "max_tokens": ("gen_ai.request.max_tokens", "llm.request.max_tokens"),
    "prompt_content": (
        "gen_ai.input.messages",
        "gen_ai.prompt",  # GenAI <= v1.36
        "input.value",  # OpenInference
        "traceloop.entity.input",  # OpenLLMetry
    ),
    "completion_content": (
        "gen_ai.output.messages",
        "gen_ai.completion",  # GenAI <= v1.36
        "output.value",  # OpenInference
        "traceloop.entity.output",  # OpenLLMetry
    ),
}
"""Column -> the attributes that fill it, in order of preference."""

SESSION_ATTRIBUTES: tuple[str, ...] = (
    "gen_ai.conversation.id",
    "session.id",  # OpenInference
    "traceloop.association.properties.session_id",  # OpenLLMetry
    "traceloop.association.properties.thread_id",
    "llamonitor.session_id",
)
"""Attributes naming the session, in order; without one, the trace id is the session."""

OPENINFERENCE_KINDS: dict[str, str] = {
    "LLM": "llm_call",
    "EMBEDDING": "embedding",
    "CHAIN": "chain",
    "TOOL": "tool",
    "AGENT": "agent_workflow",
    "RETRIEVER": "retrieval",
    "RERANKER": "reranker",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
    "PROMPT": "prompt",
}
"""``openinference.span.kind`` -> ``operation_type`` (UNKNOWN falls through)."""

GEN_AI_OPERATIONS: dict[str, str] = {
    "chat": "llm_call",
    "text_completion": "llm_call",
    "generate_content": "llm_call",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent_workflow",
    "create_agent": "agent_workflow",
    "invoke_workflow": "agent_workflow",
    "retrieval": "retrieval",
}
"""``gen_ai.operation.name`` -> ``operation_type``; another value is kept as given."""

TRACELOOP_KINDS: dict[str, str] = {
    "workflow": "workflow",
    "task": "task",
    "agent": "agent_workflow",
    "tool": "tool",
}
"""``traceloop.span.kind`` -> ``operation_type``."""

TRACELOOP_REQUEST_TYPES: dict[str, str] = {
    "chat": "llm_call",
    "completion": "llm_call",
    "embedding": "embedding",
    "rerank": "reranker",
}
"""OpenLLMetry's ``llm.request.type`` -> ``operation_type``."""

OPERATION_TYPE_ATTRIBUTES: tuple[str, ...] = ("llamonitor.operation_type",)
"""Set by llamonitor's own exporter: our operation type, as recorded."""

INVOCATION_PARAMETERS = "llm.invocation_parameters"  # OpenInference: JSON of the request
LOGFIRE_REQUEST = "request_data"  # Logfire: JSON of the request (model, messages...)
LOGFIRE_RESPONSE = "response_data"  # Logfire: JSON of the response (usage...)

ERROR_TYPE = "error.type"
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"

SERVICE_NAME = "service.name"
PROCESS_PID = "process.pid"
LLAMONITOR_PREFIX = "llamonitor."

LLM_OPERATION_TYPE = "llm_call"
DEFAULT_OPERATION_TYPE = "span"
"""``operation_type`` of a span no convention describes (and that has no tokens or model)."""
