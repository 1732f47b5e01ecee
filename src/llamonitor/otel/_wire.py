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
makes of it (the same caps, the same counts of cut values): a miss decodes the
bytes with the official ``KeyValue`` class and that function.

The view reads bytes that the official class has parsed already (the
receiver's request, or one serialized from such a message), so every check
the official parser makes (UTF-8 strings, well-formed fields) was made.
"""

from __future__ import annotations

from typing import Any

from llamonitor.otel._attributes import Fill, fill_of
from llamonitor.otel._values import MAX_ATTRIBUTES, Budget, attributes

MAX_CACHED_BYTES = 512
"""Attributes longer than this (in bytes) are decoded every time, not kept."""

MAX_CACHED = 65_536
"""Decoded attributes kept; past it the cache starts again (bounded memory)."""

_SCALARS = (str, int, float, bool, type(None))

# raw KeyValue bytes -> (key, value, values cut, value is a list kept as a tuple, fill_of)
_Entry = tuple[str, Any, int, bool, Fill | None]
_DECODED: dict[bytes, _Entry] = {}

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
            hit = _decode(raw)
        key, value, cut, is_list, fill = hit
        if cut:
            budget.truncated += cut
        out[key] = list(value) if is_list else value
        if fill is not None:
            fills[key] = fill
    return out, fills


def _decode(raw: bytes) -> _Entry:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    budget = Budget(left=MAX_ATTRIBUTES)
    ((key, value),) = attributes([KeyValue.FromString(raw)], budget).items()
    fill = fill_of(key, value)
    entry: _Entry = (key, value, budget.truncated, False, fill)
    if len(raw) > MAX_CACHED_BYTES:
        return entry
    if value.__class__ is list:
        if not all(v.__class__ in _SCALARS for v in value):
            return entry  # nested values: decoded each time (a dict in them could be changed)
        entry = (key, tuple(value), budget.truncated, True, fill)
    elif value.__class__ not in _SCALARS:
        return entry
    if len(_DECODED) >= MAX_CACHED:
        _DECODED.clear()
    _DECODED[raw] = entry
    return entry
