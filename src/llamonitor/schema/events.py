"""The public, validated span model."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamonitor._records import safe_json
from llamonitor.schema._columns import COLUMN_NAMES, INT64_MAX, INT64_MIN, SCHEMA

_INT_COLUMNS = tuple(f.name for f in SCHEMA if pa.types.is_integer(f.type))


class MetricEvent(BaseModel):
    """One span, as users and custom storage backends see it.

    The decorator does not build this model on the hot path; the worker builds
    it only for backends that ask for events rather than Arrow tables.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    event_id: str
    session_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    operation_name: str
    operation_type: str = "llm_call"
    timestamp: datetime
    duration_ms: float = Field(ge=0)
    error: bool = False
    error_type: str | None = None
    error_message: str | None = None
    text_char_count: int | None = Field(default=None, ge=0)
    text_word_count: int | None = Field(default=None, ge=0)
    text_byte_size: int | None = Field(default=None, ge=0)
    text_line_count: int | None = Field(default=None, ge=0)
    image_count: int | None = Field(default=None, ge=0)
    image_total_pixels: int | None = Field(default=None, ge=0)
    image_file_size_bytes: int | None = Field(default=None, ge=0)
    image_width: int | None = Field(default=None, ge=0)
    image_height: int | None = Field(default=None, ge=0)
    image_format: str | None = None
    time_to_first_token_ms: float | None = Field(default=None, ge=0)
    stream_item_count: int | None = Field(default=None, ge=0)
    project_name: str | None = None
    agent_name: str | None = None
    provider: str | None = None
    model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)
    cache_read_tokens: int | None = Field(default=None, ge=0)
    cache_write_tokens: int | None = Field(default=None, ge=0)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    token_source: str | None = None
    input_cost_usd: float | None = Field(default=None, ge=0)
    output_cost_usd: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    cost_source: str | None = None
    finish_reason: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    prompt_hash: str | None = None
    prompt_content: str | None = None
    completion_content: str | None = None
    process_id: int = 0
    custom_attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @field_validator("custom_attributes", mode="before")
    @classmethod
    def _decode(cls, v: Any) -> Any:
        if v is None:
            return {}
        if isinstance(v, str):
            return json.loads(v)
        return v

    def to_row(self) -> dict[str, Any]:
        """The row as stored: ``custom_attributes`` encoded as JSON text."""
        row = self.model_dump()
        attrs = self.custom_attributes
        for name in _INT_COLUMNS:
            value = row.get(name)
            if value is not None and not INT64_MIN <= value <= INT64_MAX:
                # Does not fit its int64 column: the column stays null and the
                # value is kept, as given, in custom_attributes.
                row[name] = None
                attrs = {**attrs, name: value}
        row["custom_attributes"] = safe_json(attrs)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MetricEvent:
        """Build from a stored row (unknown columns are ignored)."""
        return cls.model_validate({k: row[k] for k in COLUMN_NAMES if k in row})
