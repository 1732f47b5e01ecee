"""A second reading of an OTLP trace request's bytes, made for the mapping's speed.

Reading a span attribute through the ``opentelemetry-proto`` classes costs a
Python wrapper for the ``KeyValue``, another for its ``AnyValue``, a
``WhichOneof`` and the value: about 0.7 µs an attribute, a third of the time
a span took to ingest. The view here is a protobuf message of the same wire
layout (``ExportTraceServiceRequest`` -> ``ResourceSpans`` -> ``ScopeSpans``
-> ``Span``) whose ``Span.attributes`` is ``repeated bytes``: each attribute
comes out as the bytes of its ``KeyValue``, and the same bytes (the same key
with the same value: a provider, a model, a server address...) are decoded
once, then found in :data:`_DECODED`. The rest of the span (events, links,
status) keeps the official message types.

What an attribute decodes to is exactly what :func:`llamonitor.otel._values.attributes`
makes of it (the same caps, the same counts of cut values; the JSON the columns are
read out of, ``_attributes.PARSED_WHOLE``, comes whole up to ``MAX_JSON_PARSE_CHARS``
and is cut once read): a miss reads a short
attribute of one string, int, double or bool by hand (:func:`_simple`, too short to
need a cut), and any other with the official ``KeyValue`` class and that function.
Each entry also carries its *role* (what the mapping's plans depend on:
``llamonitor.otel._plans``) and, for an attribute that names no column, its JSON.

The view reads bytes that the official class has parsed already (the
receiver's request, or one serialized from such a message), so every check
the official parser makes (UTF-8 strings, well-formed fields) was made.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from llamonitor.otel import _conventions as conv
from llamonitor.otel._attributes import _COLUMN_OF, _OWN_PREFIXED, PARSED_WHOLE, Fill, _fit, fill_of
from llamonitor.otel._values import (
    MAX_ATTRIBUTES,
    MAX_JSON_PARSE_CHARS,
    MAX_KEY_CHARS,
    Budget,
    attributes,
)

MAX_CACHED_BYTES = 512
"""Attributes longer than this (in bytes) are decoded every time, not kept."""

MAX_CACHED = 65_536
"""Decoded attributes kept; past it the cache starts again (bounded memory)."""

_SCALARS = (str, int, float, bool, type(None))

Entry = tuple[str, Any, int, bool, Fill | None, int, str | None]
"""What one attribute decodes to: ``(key, value, values cut, value is a list
kept as a tuple, fill_of, role, JSON fragment or None)``."""
_DECODED: dict[bytes, Entry] = {}  # raw KeyValue bytes -> its entry

SLOW = -1
"""The role of an attribute that sends its span down the general path."""

_ROLES: dict[tuple[Any, ...], int] = {}
_NEXT_ROLE = itertools.count()
"""Role ids never start again (not even when the caches are emptied): an id means
one role for the process's life, so a plan keyed by ids that straddle an emptying
(a span decoded across it, another thread) is never taken for another span's."""
_KEYS: dict[str, tuple[Any, ...]] = {}  # key -> _key_info(key)
_GENERAL: tuple[Any, ...] = ()
PLANS: dict[tuple[int, ...], Any] = {}
"""A span's roles -> its plan (``llamonitor.otel._plans``); emptied with :data:`_ROLES`."""
_DOUBLE = struct.Struct("<d")
_string: Callable[[str], str] = json.encoder.encode_basestring
_SLOW_KEYS = frozenset((conv.INVOCATION_PARAMETERS, conv.LOGFIRE_REQUEST, conv.LOGFIRE_RESPONSE,
                        "content_truncated"))
_SLOW_PREFIXES = (conv.LLAMONITOR_PREFIX, "otel.")
_SLOW_COLUMNS = frozenset(("prompt_content", "completion_content"))
_VALUE_KEYS = frozenset(("openinference.span.kind", "gen_ai.operation.name",
                         "traceloop.span.kind", "traceloop.entity.name", "llm.request.type"))
"""Attributes whose value decides the operation type (it is part of their role)."""

_view: Any = None


def _view_class() -> Any:
    """The view's request class, built once (in the default descriptor pool,
    beside the official OTLP messages it refers to)."""
    global _view
    if _view is not None:
        return _view
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    from opentelemetry.proto.common.v1 import common_pb2  # noqa: F401
    from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: F401
    from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    name = "llamonitor.otlp_view.Request"
    try:
        return _set_view(message_factory.GetMessageClass(pool.FindMessageTypeByName(name)))
    except KeyError:
        pass
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="llamonitor/otlp_view.proto",
        package="llamonitor.otlp_view",
        syntax="proto3",
        dependency=[
            "opentelemetry/proto/trace/v1/trace.proto",
            "opentelemetry/proto/resource/v1/resource.proto",
            "opentelemetry/proto/common/v1/common.proto",
        ],
    )
    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    msg, by = f.TYPE_MESSAGE, ".llamonitor.otlp_view."
    otel = ".opentelemetry.proto."
    layout: dict[str, tuple[tuple[str, int, int, int, str], ...]] = {
        "Request": (("resource_spans", 1, msg, many, by + "ResourceSpans"),),
        "ResourceSpans": (
            ("resource", 1, msg, one, otel + "resource.v1.Resource"),
            ("scope_spans", 2, msg, many, by + "ScopeSpans"),
        ),
        "ScopeSpans": (
            ("scope", 1, msg, one, otel + "common.v1.InstrumentationScope"),
            ("spans", 2, msg, many, by + "Span"),
        ),
        "Span": (  # the field numbers of opentelemetry/proto/trace/v1/trace.proto
            ("trace_id", 1, f.TYPE_BYTES, one, ""),
            ("span_id", 2, f.TYPE_BYTES, one, ""),
            ("parent_span_id", 4, f.TYPE_BYTES, one, ""),
            ("name", 5, f.TYPE_STRING, one, ""),
            ("kind", 6, f.TYPE_INT32, one, ""),  # an open enum: the same varint
            ("start_time_unix_nano", 7, f.TYPE_FIXED64, one, ""),
            ("end_time_unix_nano", 8, f.TYPE_FIXED64, one, ""),
            ("attributes", 9, f.TYPE_BYTES, many, ""),  # KeyValue, still encoded
            ("dropped_attributes_count", 10, f.TYPE_UINT32, one, ""),
            ("events", 11, msg, many, otel + "trace.v1.Span.Event"),
            ("links", 13, msg, many, otel + "trace.v1.Span.Link"),
            ("status", 15, msg, one, otel + "trace.v1.Status"),
        ),
    }
    for message, fields in layout.items():
        m = file.message_type.add(name=message)
        for field_name, number, kind, label, type_name in fields:
            fd = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                fd.type_name = type_name
    pool.Add(file)
    return _set_view(message_factory.GetMessageClass(pool.FindMessageTypeByName(name)))


def _set_view(cls: Any) -> Any:
    global _view
    _view = cls
    return cls


def view(wire: bytes) -> Any:
    """The view of a serialized ``ExportTraceServiceRequest`` (parsed already
    by the official class: see the module's docstring)."""
    return _view_class().FromString(wire)


def span_attributes(raws: Any, budget: Budget) -> tuple[dict[str, Any], dict[str, Fill]]:
    """``attributes()`` of a view span's ``repeated bytes`` attributes (the same
    dict, the same budget counts), and the :func:`~llamonitor.otel._attributes.fill_of`
    of those that name a column."""
    n = len(raws)
    fills: dict[str, Fill] = {}
    if n == 0:
        return {}, fills
    take = min(n, budget.left)
    budget.left -= take
    budget.dropped += n - take
    out: dict[str, Any] = {}
    cache = _DECODED
    for raw in raws[:take] if take < n else raws:
        hit = cache.get(raw)
        if hit is None:
            hit = decode(raw)
        key, value, cut, is_list, fill = hit[:5]
        if cut:
            budget.truncated += cut
        out[key] = list(value) if is_list else value
        if fill is not None:
            fills[key] = fill
    return out, fills


def decode(raw: bytes) -> Entry:
    """The :data:`Entry` of one attribute's ``KeyValue`` bytes (kept in
    :data:`_DECODED` when small and made of plain values)."""
    simple = _simple(raw)
    if simple is None:
        from opentelemetry.proto.common.v1.common_pb2 import KeyValue

        kv = KeyValue.FromString(raw)
        budget = Budget(left=MAX_ATTRIBUTES)
        ((key, value),) = attributes([kv], budget).items()
        if budget.truncated and key in PARSED_WHOLE and kv.value.HasField("string_value"):
            whole = kv.value.string_value
            if len(whole) <= MAX_JSON_PARSE_CHARS:  # the cut (counted) is made once it is read
                value = whole
        return _entry(raw, key, value, budget.truncated)
    key, value = simple
    info = _KEYS.get(key)
    if info is None:
        info = _key_info(key)
    if info is _GENERAL:
        return _entry(raw, key, value, 0)
    column, rank, role, role_unfit = info
    if column is None:
        entry: Entry = (key, value, 0, False, None, role, fragment(key, value))
    else:
        fitted = _fit(column, value)
        entry = (key, value, 0, False, (column, rank, fitted, False),
                 role if fitted is not None else role_unfit, None)
        if column == "response_id":
            return entry  # one of a kind: not kept
    if len(_DECODED) >= MAX_CACHED:
        _DECODED.clear()
    _DECODED[raw] = entry
    return entry


def _key_info(key: str) -> tuple[Any, ...]:
    """What a key's attributes share (:func:`decode`'s short cut): the column
    it names, its rank, its role (and its role when the value does not fit);
    :data:`_GENERAL` for the keys whose role depends on the value."""
    if key in _VALUE_KEYS or key in _OWN_PREFIXED or len(key) > MAX_KEY_CHARS:
        info: tuple[Any, ...] = _GENERAL
    else:
        spec = _COLUMN_OF.get(key)
        if spec is None:
            info = (None, 0, _role(key, None, 0, None), SLOW)
        else:
            column, rank = spec
            info = (column, rank, _role(key, 0, 0, (column, rank, 0, False)),
                    _role(key, None, 0, (column, rank, None, False)))
    if len(_KEYS) >= MAX_CACHED:
        _KEYS.clear()
    _KEYS[key] = info
    return info


def _entry(raw: bytes, key: str, value: Any, cut: int) -> Entry:
    fill = fill_of(key, value)
    is_list = False
    keep = len(raw) <= MAX_CACHED_BYTES
    if value.__class__ is list:
        if all(v.__class__ in _SCALARS for v in value):
            value, is_list = tuple(value), True
        else:
            keep = False  # nested values: decoded each time (a dict in them could be changed)
    elif value.__class__ not in _SCALARS:
        keep = False
    entry: Entry = (key, value, cut, is_list, fill, _role(key, value, cut, fill),
                    fragment(key, value) if fill is None else None)
    if keep:
        if len(_DECODED) >= MAX_CACHED:
            _DECODED.clear()
        _DECODED[raw] = entry
    return entry


def _simple(raw: bytes) -> tuple[str, Any] | None:
    """``(key, value)`` of a ``KeyValue`` in its plain layout (short key, one
    string / int / double / bool value), read by hand; ``None`` for any other
    layout (then the official class reads it). A short key and value need no
    cut, so the result is what :func:`~llamonitor.otel._values.attributes` makes."""
    n = len(raw)
    if n < 6 or raw[0] != 0x0A:
        return None
    klen = raw[1]
    at = 2 + klen
    if klen >= 0x80 or n < at + 3 or raw[at] != 0x12 or raw[at + 1] != n - at - 2 or n > 0x80:
        return None
    try:
        key = raw[2:at].decode()
    except UnicodeDecodeError:
        return None
    tag = raw[at + 2]
    at += 3
    if tag == 0x0A:  # string_value
        if raw[at] != n - at - 1:
            return None  # (also a length of two bytes)
        try:
            return key, raw[at + 1 :].decode()
        except UnicodeDecodeError:
            return None
    if tag == 0x18:  # int_value: a varint, int64 as two's complement
        value = shift = 0
        for i in range(at, n):
            b = raw[i]
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                if i != n - 1 or value >> 64:
                    return None
                return key, value - (1 << 64) if value >= 1 << 63 else value
        return None
    if tag == 0x21 and n - at == 8:  # double_value
        (d,) = _DOUBLE.unpack_from(raw, at)
        return key, d if math.isfinite(d) else repr(d)
    if tag == 0x10 and n - at == 1 and raw[at] < 2:  # bool_value
        return key, raw[at] == 1
    return None


def fragment(key: str, value: Any) -> str | None:
    """``"key": value`` as ``safe_json`` spells it in a dict (``None``: not plain)."""
    cls = value.__class__
    if cls is str:
        return _string(key) + ": " + _string(value)
    if cls is int:
        return _string(key) + ": " + int.__repr__(value)
    try:
        text = json.dumps({key: value}, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return None
    return text[1:-1]


def _role(key: str, value: Any, cut: int, fill: Fill | None) -> int:
    """The attribute's part in its span's plan (``_plans``): what the mapping
    does with it depends on this alone; ``SLOW`` for the rare attributes the
    general path handles."""
    if cut or key in _SLOW_KEYS or key.startswith(_SLOW_PREFIXES):
        return SLOW
    if fill is not None:
        if fill[3] or fill[0] in _SLOW_COLUMNS:
            return SLOW
        what: tuple[Any, ...] = (key, fill[0], fill[1], fill[2] is None)
    elif key in _VALUE_KEYS:
        if value.__class__ not in _SCALARS:
            return SLOW
        what = (key, "=", value.__class__, value)
    else:
        what = (key,)
    role = _ROLES.get(what)
    if role is None:
        if len(_ROLES) >= MAX_CACHED:  # entries and plans name roles: all start again
            _ROLES.clear()
            _DECODED.clear()
            _KEYS.clear()
            PLANS.clear()
        role = _ROLES[what] = next(_NEXT_ROLE)
    return role
