"""The public, validated span model, and the seed's nested metric models.

``MetricEvent`` is the seed's event: it takes ``text_metrics=TextMetrics(...)``
and ``image_metrics=ImageMetrics(...)`` (stored flattened, in the columns
``text_char_count``..., ``image_count``...), ``error="message"`` (a failed
span: ``error=True``, the message in ``error_message``), a ``UUID`` as
``event_id``, and defaults for ``event_id`` and ``timestamp``. Metric groups
(see :mod:`._extensions`) extend it: a subclass field ``audio_metrics:
AudioMetrics | None`` registers the group, and a registered group's value is
accepted (and read back) on any ``MetricEvent``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from llamonitor._records import safe_json
from llamonitor.schema import _extensions
from llamonitor.schema._columns import COLUMN_NAMES, INT64_MAX, INT64_MIN, SCHEMA, SCHEMA_VERSION

_INT_COLUMNS = tuple(f.name for f in SCHEMA if pa.types.is_integer(f.type))


class TextMetrics(BaseModel):
    """Size of a text output (the seed's model). Stored in ``text_char_count``,
    ``text_word_count``, ``text_byte_size``, ``text_line_count``; the token
    counts in ``input_tokens``, ``output_tokens``, ``total_tokens``;
    ``custom_metrics`` as JSON in ``text_custom_metrics``."""

    char_count: int | None = None
    word_count: int | None = None
    byte_size: int | None = None
    line_count: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    custom_metrics: dict[str, Any] = Field(default_factory=dict)


class ImageMetrics(BaseModel):
    """Images of an output (the seed's model). Stored in ``image_count``,
    ``image_total_pixels``, ``image_file_size_bytes``, ``image_width``,
    ``image_height``, ``image_format``; ``custom_metrics`` as JSON in
    ``image_custom_metrics``."""

    count: int | None = None
    total_pixels: int | None = None
    file_size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    custom_metrics: dict[str, Any] = Field(default_factory=dict)


_TEXT = _extensions.register_metrics(
    "text",
    TextMetrics,
    columns={
        **{n: f"text_{n}" for n in ("char_count", "word_count", "byte_size", "line_count")},
        **{n: n for n in ("input_tokens", "output_tokens", "total_tokens")},
        "custom_metrics": "text_custom_metrics",
    },
)
_IMAGE = _extensions.register_metrics(
    "image",
    ImageMetrics,
    columns={n: f"image_{n}" for n in ImageMetrics.model_fields}
    | {"custom_metrics": "image_custom_metrics"},
)
_BUILTIN = {"text_metrics": _TEXT, "image_metrics": _IMAGE}
_CUSTOM_METRICS = ("text_custom_metrics", "image_custom_metrics")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _new_id() -> str:
    return uuid4().hex


class MetricEvent(BaseModel):
    """One span, as users and custom storage backends see it.

    The decorator does not build this model on the hot path; the worker builds
    it only for backends that ask for events rather than Arrow tables.
    ``error`` is a bool here; stored, it is TRUE or NULL (see ``SCHEMA_VERSION``).
    """

    # "allow" only for registered metric groups (audio_metrics=...): any other
    # unknown field is refused by _inputs, as "forbid" would.
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    event_id: str = Field(default_factory=_new_id)
    schema_version: str = str(SCHEMA_VERSION)
    session_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    operation_name: str
    operation_type: str = "llm_call"
    timestamp: datetime = Field(default_factory=_now)
    duration_ms: float | None = Field(default=None, ge=0)
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
    text_custom_metrics: dict[str, Any] | None = None
    image_custom_metrics: dict[str, Any] | None = None

    # Declared <prefix>_metrics fields of this class (registered groups).
    _group_fields: ClassVar[dict[str, _extensions.MetricGroup]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's ``<prefix>_metrics: Model | None`` field registers the group."""
        super().__pydantic_init_subclass__(**kwargs)
        found: dict[str, _extensions.MetricGroup] = {}
        for name, info in cls.model_fields.items():
            if name in _BUILTIN or not name.endswith("_metrics"):
                continue
            model = _model_of(info.annotation)
            if model is not None:
                found[name] = _extensions.register_metrics(name[: -len("_metrics")], model)
        cls._group_fields = found

    @model_validator(mode="before")
    @classmethod
    def _inputs(cls, data: Any) -> Any:
        """The seed's forms: nested metrics, ``error`` as a message, metric groups."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        unknown = [k for k in data if k not in fields]
        error = data.get("error")
        if not unknown and (error.__class__ is bool or "error" not in data):
            return data
        data = dict(data)
        if isinstance(error, str):  # the seed's error: the message of a failed span
            data["error"] = True
            if data.get("error_message") is None:
                data["error_message"] = error
        elif error is None and "error" in data:
            data["error"] = False  # stored NULL: the span did not fail
        if not unknown:
            return data
        for key in ("text_metrics", "image_metrics"):
            if key in unknown:
                _merge_flat(data, _BUILTIN[key], data.pop(key), key)
        groups = {g.prefix: g for g in _extensions.groups() if g.prefix not in ("text", "image")}
        for g in groups.values():
            key = f"{g.prefix}_metrics"
            flat = {c: data.pop(c) for c in g.columns.values() if c in data and c not in fields}
            if key not in data and any(v is not None for v in flat.values()):
                values = _extensions.unflatten(g, flat)
                data[key] = values
            value = data.get(key)
            if key not in fields and value is not None and not isinstance(value, g.model):
                data[key] = g.model.model_validate(value)
        bad = [k for k in data if k not in fields and not _is_group_key(k, data[k], groups)]
        if bad:
            raise ValueError(f"unknown field(s) {', '.join(sorted(bad))} for MetricEvent")
        return data

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, v: Any) -> Any:
        return str(v) if isinstance(v, UUID) else v

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

    @field_validator("text_custom_metrics", "image_custom_metrics", mode="before")
    @classmethod
    def _decode_metrics(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text_metrics(self) -> TextMetrics | None:
        """The text columns as the seed's :class:`TextMetrics` (``None`` if none is set)."""
        return _nested(self, _TEXT)  # type: ignore[return-value]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_metrics(self) -> ImageMetrics | None:
        """The image columns as the seed's :class:`ImageMetrics` (``None`` if none is set)."""
        return _nested(self, _IMAGE)  # type: ignore[return-value]

    def _group_values(self) -> list[tuple[_extensions.MetricGroup, Any]]:
        out = [(g, getattr(self, name)) for name, g in self._group_fields.items()]
        for key, value in (self.__pydantic_extra__ or {}).items():
            g = _extensions.group(key[: -len("_metrics")])
            if g is not None:
                out.append((g, value))
        return out

    def to_row(self) -> dict[str, Any]:
        """The row as stored: ``custom_attributes`` (and JSON metric columns)
        encoded as JSON text, ``error`` TRUE or NULL, metric groups flattened
        into their columns."""
        row = {name: getattr(self, name) for name in COLUMN_NAMES}
        row["error"] = True if self.error else None
        attrs = self.custom_attributes
        for name in _INT_COLUMNS:
            value = row.get(name)
            if value is not None and not INT64_MIN <= value <= INT64_MAX:
                # Does not fit its int64 column: the column stays null and the
                # value is kept, as given, in custom_attributes.
                row[name] = None
                attrs = {**attrs, name: value}
        for name in _CUSTOM_METRICS:
            row[name] = _extensions.json_text(getattr(self, name))
        for g, value in self._group_values():
            if value is None:
                continue
            columns, leftovers = _extensions.flatten(g, value)
            for column, v in columns.items():
                if row.get(column) is None:
                    row[column] = v
            if leftovers:
                attrs = {**attrs, **leftovers}
        row["custom_attributes"] = safe_json(attrs)
        return row

    def to_dict(self) -> dict[str, Any]:
        """The seed's ``to_dict()``: every field (``text_metrics``,
        ``image_metrics`` nested), ``event_id`` a string, ``timestamp`` ISO 8601."""
        data = self.model_dump()
        data["event_id"] = str(self.event_id)
        data["timestamp"] = self.timestamp.isoformat()
        return data

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MetricEvent:
        """Build from a stored row (unknown columns are ignored; registered
        metric groups' columns fill their ``<prefix>_metrics``)."""
        data = {k: row[k] for k in COLUMN_NAMES if k in row}
        for name in (*_CUSTOM_METRICS, *_extensions.extension_fields()):
            if row.get(name) is not None:
                data[name] = row[name]
        return cls.model_validate(data)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of ``Model`` or ``Model | None``, else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def _is_group_key(key: str, value: Any, groups: dict[str, _extensions.MetricGroup]) -> bool:
    if not key.endswith("_metrics"):
        return False
    g = groups.get(key[: -len("_metrics")])
    return g is not None and (value is None or isinstance(value, g.model))


def _merge_flat(data: dict[str, Any], g: _extensions.MetricGroup, value: Any, key: str) -> None:
    """Put a built-in group's values (a model or a dict) in their flat fields.

    Raises:
        ValueError: a flat field was also given, with another value.
    """
    if value is None:
        return
    if isinstance(value, BaseModel):
        items = {n: getattr(value, n, None) for n in g.columns}
    elif isinstance(value, dict):
        items = dict(value)
    else:
        raise ValueError(f"{key}: expected {g.model.__name__} or a dict, got {value!r}")
    for name, v in items.items():
        column = g.columns.get(name)
        if column is None:
            raise ValueError(f"{key}: {g.model.__name__} has no field {name!r}")
        if v is None or (name == "custom_metrics" and not v):
            continue
        given = data.get(column)
        if given is not None and given != v:
            raise ValueError(f"{key}.{name}={v!r} but {column}={given!r}: give one of them")
        data[column] = v


def _nested(event: MetricEvent, g: _extensions.MetricGroup) -> BaseModel | None:
    values = {n: getattr(event, c) for n, c in g.columns.items()}
    if all(v is None for v in values.values()):
        return None
    if values.get("custom_metrics") is None:
        values.pop("custom_metrics", None)
    return g.model.model_validate(values)
