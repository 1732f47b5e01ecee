"""The span metrics' catalogue: families (names, units, kinds, buckets), labels
(Prometheus names and OpenTelemetry keys) and the span columns they read.

The one place the names are written: the aggregation (``_metric_state``), the
Prometheus exposition (``_collectors``, ``_exposition``) and the OTLP form
(``_otlp_metrics``) all read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AGENT",
    "COLUMNS",
    "COST",
    "DURATION",
    "DURATION_BUCKETS",
    "ERROR",
    "ERRORS",
    "ERROR_OTHER",
    "FAMILIES",
    "FIRST_CHUNK",
    "LABELS",
    "MODEL",
    "OP",
    "OPERATION",
    "OPERATION_NAMES",
    "OTHER",
    "PROVIDER",
    "TOKENS",
    "TOKEN_BUCKETS",
    "TOKEN_TYPE",
    "Family",
    "Label",
    "operation_names",
]

TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
"""``gen_ai.client.token.usage``'s boundaries in the GenAI semantic conventions."""

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
"""``gen_ai.client.operation.duration``'s (and ``time_to_first_chunk``'s) boundaries, seconds."""

OTHER = "other"
"""The value a label (or a label set) folds into past its cap."""

ERROR_OTHER = "_OTHER"
"""``error.type`` of a failed span without an exception type (the conventions' fallback)."""

OPERATION_NAMES: dict[str, str] = {
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
"""Our ``operation_type`` -> ``gen_ai.operation.name``, as the OTLP span
exporter maps it (``_otlp_spans.gen_ai_operation``; a test ties the two). A
name of the conventions is kept, so is any other value (they allow custom
ones; an ingested OTel span's ``gen_ai.operation.name`` is already theirs)."""


def operation_names(operation_type: str) -> str:
    """The ``gen_ai_operation_name`` label of an ``operation_type``."""
    got = OPERATION_NAMES.get(operation_type)
    if got is not None:
        return got
    return "invoke_agent" if operation_type.startswith("agent") else operation_type


@dataclass(frozen=True)
class Label:
    """A label: its Prometheus name and its OpenTelemetry attribute key."""

    name: str
    attribute: str


OP = Label("gen_ai_operation_name", "gen_ai.operation.name")
PROVIDER = Label("gen_ai_provider_name", "gen_ai.provider.name")
MODEL = Label("gen_ai_request_model", "gen_ai.request.model")
TOKEN_TYPE = Label("gen_ai_token_type", "gen_ai.token.type")
ERROR = Label("error_type", "error.type")
AGENT = Label("gen_ai_agent_name", "gen_ai.agent.name")
OPERATION = Label("llamonitor_operation_name", "llamonitor.operation.name")

LABELS = (OP, PROVIDER, MODEL, TOKEN_TYPE, ERROR, AGENT, OPERATION)
"""Every label a span metric has."""

COLUMNS = (
    "operation_type", "provider", "model", "error", "error_type", "agent_name",
    "operation_name", "duration_ms", "time_to_first_token_ms", "input_tokens",
    "output_tokens", "cost_usd",
)
"""The span columns the metrics read."""


@dataclass(frozen=True)
class Family:
    """A metric family: names, unit, kind and labels, for both expositions."""

    key: str
    otel_name: str
    otel_unit: str
    prom_name: str
    """The Prometheus name without the ``_total``/``_bucket`` suffixes."""
    prom_unit: str
    kind: str
    """``histogram`` or ``counter``."""
    labels: tuple[Label, ...]
    description: str
    bounds: tuple[float, ...] = ()


TOKENS = Family(
    "tokens", "gen_ai.client.token.usage", "{token}", "gen_ai_client_token_usage", "",
    "histogram", (OP, PROVIDER, MODEL, TOKEN_TYPE, AGENT, OPERATION),
    "Number of input and output tokens used.", TOKEN_BUCKETS,
)
DURATION = Family(
    "duration", "gen_ai.client.operation.duration", "s",
    "gen_ai_client_operation_duration_seconds", "seconds", "histogram",
    (OP, PROVIDER, MODEL, ERROR, AGENT, OPERATION), "GenAI operation duration.",
    DURATION_BUCKETS,
)
FIRST_CHUNK = Family(
    "first_chunk", "gen_ai.client.operation.time_to_first_chunk", "s",
    "gen_ai_client_operation_time_to_first_chunk_seconds", "seconds", "histogram",
    (OP, PROVIDER, MODEL, AGENT, OPERATION),
    "Time to receive the first chunk of a streamed response.", DURATION_BUCKETS,
)
COST = Family(
    "cost", "llamonitor.cost.usd", "{USD}", "llamonitor_cost_usd", "", "counter",
    (OP, PROVIDER, MODEL, AGENT, OPERATION), "Cost of the operations, US dollars.",
)
ERRORS = Family(
    "errors", "llamonitor.errors", "{error}", "llamonitor_errors", "", "counter",
    (OP, PROVIDER, MODEL, ERROR, AGENT, OPERATION), "Operations that ended in an error.",
)

FAMILIES = (TOKENS, DURATION, FIRST_CHUNK, COST, ERRORS)
