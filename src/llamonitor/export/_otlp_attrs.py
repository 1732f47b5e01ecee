"""Span attributes from columns, one column at a time (see ``_otlp_spans``).

Attribute values repeat (a model, a provider, an operation name, the same
custom attributes on every call of a function): each distinct (key, value) is
built once, as protobuf's serialization of a span holding just that
attribute, and each span gets its repeated ones in one ``MergeFromString`` at
the end (protobuf merges a repeated field by appending, so the result is the
span with those attributes added). Columns of mostly distinct values are
added to each span directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llamonitor.schema._columns import INT64_MAX, INT64_MIN

NS = "llamonitor."
CUSTOM = "llamonitor.custom."
CUSTOM_JSON = "llamonitor.custom_json."


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def values_of(column: Any, n: int) -> list[Any]:
    return [None] * n if column is None else column.to_pylist()


def present(column: Any) -> list[tuple[int, Any]]:
    """(row, value) of the rows where ``column`` has a value."""
    if column.null_count == 0:
        return list(enumerate(column.to_pylist()))
    valid = pc.is_valid(column)
    idx = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).tolist()
    return list(zip(idx, column.filter(valid).to_pylist(), strict=True))


def set_str(span: Span, key: str, value: str) -> None:
    kv = span.attributes.add(key=key)
    kv.value.string_value = value


LOW_CARDINALITY = 8
"""A column is memoized when its rows hold at most 1/LOW_CARDINALITY distinct values."""

_FIELD_OF_TYPE: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
    (pa.types.is_string, "string_value"),
    (pa.types.is_large_string, "string_value"),
    (pa.types.is_boolean, "bool_value"),
    (pa.types.is_integer, "int_value"),
    (pa.types.is_floating, "double_value"),
)


class SpanList(list):  # type: ignore[type-arg]
    """The spans of a request, with their attribute lists (looked up once)
    and the serialized attributes still to merge into each."""

    def __init__(self, spans: list[Span]) -> None:
        super().__init__(spans)
        self.attributes: list[Any] = [s.attributes for s in spans]
        self.parts: list[list[bytes]] = [[] for _ in spans]


def _fragment(key: str, field: str, value: Any) -> bytes:
    """A span holding only attribute ``key`` = ``value``, serialized."""
    span = Span()
    setattr(span.attributes.add(key=key).value, field, value)
    return bytes(span.SerializeToString())


def merge_fragments(spans: SpanList) -> None:
    for span, parts in zip(spans, spans.parts, strict=True):
        if parts:
            span.MergeFromString(b"".join(parts))


def put(spans: SpanList, column: Any, key: str) -> None:
    """Attribute ``key`` on every span whose row has a value in ``column``."""
    n = len(spans)
    valid_count = n - column.null_count
    if valid_count == 0:
        return
    typ = column.type
    field = next((f for test, f in _FIELD_OF_TYPE if test(typ)), None)
    if field is None:  # a type no column has today: its text
        column, field = pc.cast(column, pa.string()), "string_value"
    if column.null_count == 0:
        rows: Sequence[int] = range(n)
        values = column.to_pylist()
    else:
        valid = pc.is_valid(column)
        rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).tolist()
        values = column.filter(valid).to_pylist()
    if pc.count_distinct(column).as_py() * LOW_CARDINALITY <= valid_count:
        parts = spans.parts
        memo: dict[Any, bytes] = {}
        for i, v in zip(rows, values, strict=True):
            frag = memo.get(v)
            if frag is None:
                frag = memo[v] = _fragment(key, field, v)
            parts[i].append(frag)
        return
    attrs = spans.attributes
    targets = attrs if column.null_count == 0 else [attrs[i] for i in rows]
    if field == "string_value":
        for a, v in zip(targets, values, strict=True):
            a.add(key=key).value.string_value = v
    elif field == "bool_value":
        for a, v in zip(targets, values, strict=True):
            a.add(key=key).value.bool_value = v
    elif field == "int_value":
        for a, v in zip(targets, values, strict=True):
            a.add(key=key).value.int_value = v
    else:
        for a, v in zip(targets, values, strict=True):
            a.add(key=key).value.double_value = v


def put_rows(spans: SpanList, values: list[Any], key: str) -> None:
    """A string attribute from a list (None: not on that span); values repeat."""
    memo: dict[Any, bytes] = {}
    for parts, v in zip(spans.parts, values, strict=True):
        if v is not None:
            frag = memo.get(v)
            if frag is None:
                frag = memo[v] = _fragment(key, "string_value", v)
            parts.append(frag)


def put_list(spans: SpanList, column: Any, key: str) -> None:
    """A comma-joined column (``finish_reason``) as a string array."""
    memo: dict[str, bytes] = {}
    for i, v in present(column):
        frag = memo.get(v)
        if frag is None:
            span = Span()
            array = span.attributes.add(key=key).value.array_value
            for part in v.split(","):
                array.values.add().string_value = part
            frag = memo[v] = bytes(span.SerializeToString())
        spans.parts[i].append(frag)


_SCALARS: dict[type, Callable[[Any, Any], None]] = {
    str: lambda av, v: setattr(av, "string_value", v),
    bool: lambda av, v: setattr(av, "bool_value", v),
    int: lambda av, v: setattr(av, "int_value", v),
    float: lambda av, v: setattr(av, "double_value", v),
}


def _scalar_ok(value: Any) -> bool:
    t = type(value)
    if t is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    return t in _SCALARS


def put_custom(spans: SpanList, column: Any) -> None:
    """``custom_attributes`` flattened: a scalar (or a list of scalars of one
    type) as ``llamonitor.custom.<key>``; anything else (an object, a null, a
    mixed list) as its JSON text under ``llamonitor.custom_json.<key>``. Text
    that is not a JSON object is kept as ``llamonitor.custom_attributes``."""
    memo: dict[str, bytes] = {}
    for i, text in present(column):
        frag = memo.get(text)
        if frag is None:
            frag = memo[text] = _custom_fragment(text)
        spans.parts[i].append(frag)


def _custom_fragment(text: str) -> bytes:
    span = Span()
    try:
        attrs = json.loads(text)
    except ValueError:
        attrs = None
    if not isinstance(attrs, dict):
        set_str(span, NS + "custom_attributes", text)
        return bytes(span.SerializeToString())
    for key, value in attrs.items():
        if _scalar_ok(value):
            _SCALARS[type(value)](span.attributes.add(key=CUSTOM + key).value, value)
            continue
        if (
            isinstance(value, list)
            and value
            and len({type(v) for v in value}) == 1
            and all(_scalar_ok(v) for v in value)
        ):
            setter = _SCALARS[type(value[0])]
            array = span.attributes.add(key=CUSTOM + key).value.array_value
            for v in value:
                setter(array.values.add(), v)
            continue
        set_str(span, CUSTOM_JSON + key, to_json(value))
    return bytes(span.SerializeToString())
