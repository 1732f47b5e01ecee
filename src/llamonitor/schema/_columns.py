"""The one columnar schema of a span row.

Every backend derives its table definition from :data:`SCHEMA` (the Arrow
schema). Adding a column is one edit here plus a migration step; nothing else
lists the columns.
"""

from __future__ import annotations

import numbers
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3
"""Bumped whenever a column is added, removed or changes type or meaning.

History: 1 = core span columns; 2 = LLM columns (project, agent, provider,
model, tokens, cost, request parameters, prompt hash, captured content);
3 = ``error`` is TRUE on a failed span and NULL otherwise (it was FALSE), so
the seed's ``error IS NOT NULL`` selects the failures, and ``duration_ms`` may
be null (a hand-made seed-style event need not have one). A store written at
an older version is read with the new columns as nulls and ``error`` FALSE as
NULL (Parquet), or migrated in place (SQL: ``ALTER TABLE ... ADD COLUMN``,
``UPDATE ... SET error = NULL WHERE error = FALSE``).
"""

_TS = pa.timestamp("us", tz="UTC")

# (name, arrow type, nullable, description). Names follow the seed's flattened
# metric columns; time is UTC microseconds, durations are milliseconds.
_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("event_id", pa.string(), False, "Unique id of this row (primary key)."),
    ("session_id", pa.string(), False, "User/session grouping of traces."),
    ("trace_id", pa.string(), False, "One end-to-end request or workflow."),
    ("span_id", pa.string(), False, "This span (16 hex characters)."),
    ("parent_span_id", pa.string(), True, "The enclosing span, null for a root span."),
    ("operation_name", pa.string(), False, "What ran (decorator operation_name)."),
    ("operation_type", pa.string(), False, "Kind of step: llm_call, tool, agent_workflow..."),
    ("timestamp", _TS, False, "Start of the span, UTC."),
    ("duration_ms", pa.float64(), True, "Wall time of the span, monotonic clock."),
    ("error", pa.bool_(), True, "TRUE when the span failed, NULL otherwise."),
    ("error_type", pa.string(), True, "Qualified name of the exception class."),
    ("error_message", pa.string(), True, "str() of the exception, capped."),
    ("text_char_count", pa.int64(), True, "Characters of the output text."),
    ("text_word_count", pa.int64(), True, "Whitespace-separated words of the output text."),
    ("text_byte_size", pa.int64(), True, "UTF-8 bytes of the output text."),
    ("text_line_count", pa.int64(), True, "Lines of the output text."),
    ("image_count", pa.int64(), True, "Images found in the output."),
    ("image_total_pixels", pa.int64(), True, "Sum of width*height over the images."),
    ("image_file_size_bytes", pa.int64(), True, "Sum of encoded sizes of the images."),
    ("image_width", pa.int64(), True, "Width of the first image."),
    ("image_height", pa.int64(), True, "Height of the first image."),
    ("image_format", pa.string(), True, "Format of the first image (PNG, JPEG, ...)."),
    ("time_to_first_token_ms", pa.float64(), True, "Streams: time from start to first item."),
    ("stream_item_count", pa.int64(), True, "Streams: items yielded."),
    # -- LLM facts (schema version 2); OTel GenAI names in GEN_AI_ATTRIBUTES --
    ("project_name", pa.string(), True, "Project (Observatory/config project_name)."),
    ("agent_name", pa.string(), True, "Agent that made the call."),
    ("provider", pa.string(), True, "LLM provider: openai, anthropic, ..."),
    ("model", pa.string(), True, "Model the request asked for."),
    ("response_model", pa.string(), True, "Model the response reports (may be a dated version)."),
    ("response_id", pa.string(), True, "Provider's id of the response."),
    ("input_tokens", pa.int64(), True, "Input tokens, cached ones included (OTel convention)."),
    ("output_tokens", pa.int64(), True, "Output tokens, reasoning ones included."),
    ("total_tokens", pa.int64(), True, "Input plus output tokens."),
    ("cache_read_tokens", pa.int64(), True, "Input tokens served from the provider's cache."),
    ("cache_write_tokens", pa.int64(), True, "Input tokens written to the provider's cache."),
    ("reasoning_tokens", pa.int64(), True, "Output tokens spent on reasoning."),
    ("token_source", pa.string(), True, "Where the counts come from: provider, user, estimate:..."),
    ("input_cost_usd", pa.float64(), True, "Price of the input tokens, USD."),
    ("output_cost_usd", pa.float64(), True, "Price of the output tokens, USD."),
    ("cost_usd", pa.float64(), True, "Total price, USD; null when the price is unknown."),
    ("cost_source", pa.string(), True, "Where the price comes from: genai-prices, override, user."),
    ("finish_reason", pa.string(), True, "Why generation stopped (stop, length, tool_calls...)."),
    ("temperature", pa.float64(), True, "Requested sampling temperature."),
    ("max_tokens", pa.int64(), True, "Requested output token limit."),
    ("prompt_hash", pa.string(), True, "Hash of the prompt (kept even when content is not)."),
    ("prompt_content", pa.string(), True, "Prompt text, redacted; only with content capture on."),
    ("completion_content", pa.string(), True, "Completion text, redacted; only with capture on."),
    ("process_id", pa.int64(), False, "OS process that recorded the span."),
    ("custom_attributes", pa.string(), True, "JSON object of free-form attributes."),
)

SCHEMA: pa.Schema = pa.schema(
    [pa.field(name, typ, nullable=nullable) for name, typ, nullable, _ in _COLUMNS],
    metadata={b"llamonitor.schema_version": str(SCHEMA_VERSION).encode()},
)
"""The Arrow schema of the span table."""

COLUMNS_V1: tuple[str, ...] = (
    *(name for name, *_ in _COLUMNS[:24]),
    "process_id",
    "custom_attributes",
)
"""Columns of a schema-version-1 store (for migrations and tests)."""

# OpenTelemetry GenAI semantic conventions -> our column. The one place the
# mapping is written: span attributes set with these names land in the
# column, and exporters use it the other way round.
GEN_AI_ATTRIBUTES: dict[str, str] = {
    "gen_ai.provider.name": "provider",
    "gen_ai.system": "provider",  # the older name of gen_ai.provider.name
    "gen_ai.request.model": "model",
    "gen_ai.response.model": "response_model",
    "gen_ai.response.id": "response_id",
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.usage.cache_read.input_tokens": "cache_read_tokens",
    "gen_ai.usage.cache_creation.input_tokens": "cache_write_tokens",
    "gen_ai.usage.reasoning.output_tokens": "reasoning_tokens",
    "gen_ai.response.finish_reasons": "finish_reason",
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.agent.name": "agent_name",
    "gen_ai.conversation.id": "session_id",
    "gen_ai.operation.name": "operation_type",
}

LLM_COLUMNS: tuple[str, ...] = tuple(name for name, *_ in _COLUMNS if name not in COLUMNS_V1)

def _python_types(t: pa.DataType) -> Any:
    if pa.types.is_integer(t):
        return numbers.Integral
    if pa.types.is_floating(t):
        return numbers.Real
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_string(t):
        return str
    return None


# Columns a collector or attribute may set, with the Python values that fit each.
SETTABLE: dict[str, Any] = {
    f.name: _python_types(f.type)
    for f in SCHEMA
    if _python_types(f.type) is not None
    and f.name
    not in ("event_id", "span_id", "trace_id", "session_id", "parent_span_id", "operation_type")
}


def column_value(name: str, value: Any) -> Any:
    """``value`` as it fits column ``name``, or ``None`` if it does not fit."""
    if name == "finish_reason" and isinstance(value, (list, tuple)):
        value = ",".join(map(str, value)) if value else None  # OTel: an array
    kind = SETTABLE.get(name)
    if value is None or kind is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        return None
    if kind is numbers.Integral:
        # An int64 column: a larger int (2**63) does not fit and stays an attribute only.
        return int(value) if INT64_MIN <= value <= INT64_MAX else None
    if kind is numbers.Real and not isinstance(value, float):
        try:
            return float(value)  # Arrow refuses ints past int64 for a float64 column
        except (OverflowError, ValueError, TypeError):
            return None
    return value


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1



ATTRIBUTE_COLUMNS: dict[str, str] = {
    **{name: name for name in LLM_COLUMNS},
    **{k: v for k, v in GEN_AI_ATTRIBUTES.items() if v in LLM_COLUMNS},
}
"""Attribute keys (``custom_attributes``, span attributes) that also fill a
column: the LLM column names and their OTel GenAI names. The attribute is
kept in ``custom_attributes`` as given."""

COLUMN_NAMES: tuple[str, ...] = tuple(name for name, *_ in _COLUMNS)
COLUMN_DOCS: dict[str, str] = {name: doc for name, _, _, doc in _COLUMNS}

TEXT_METRICS: tuple[str, ...] = ("char_count", "word_count", "byte_size", "line_count")
"""Metric names accepted by ``measure_text=[...]`` (column = ``text_`` + name)."""

IMAGE_METRICS: tuple[str, ...] = (
    "count",
    "total_pixels",
    "file_size_bytes",
    "width",
    "height",
    "format",
)
"""Metric names of the image collector (column = ``image_`` + name)."""

# Python's str.split() whitespace, spelled so RE2 (Arrow) and ``re`` agree.
WORD_REGEX = (
    r"[^\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]+"
)
