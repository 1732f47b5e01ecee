"""OTLP/JSON's ids: hex in the JSON, base64 for protobuf's JSON mapping."""

from __future__ import annotations

import base64
from typing import Any

_ID_FIELDS = (("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8),
              ("parentSpanId", 8), ("parent_span_id", 8))


def hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP/JSON spells ids in hex; protobuf's JSON mapping reads bytes as base64.
    An id that is not hex of the right length becomes empty bytes, so the span
    is rejected alone (``invalid_trace_id``...) instead of failing the request."""
    for rs in _items(doc, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                _fix_ids(span)
                for link in _items(span, "links"):
                    _fix_ids(link)


def _items(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def _fix_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key, size in _ID_FIELDS:
        value = obj.get(key)
        if not isinstance(value, str):
            continue
        try:
            raw = bytes.fromhex(value) if len(value) == 2 * size else b""
        except ValueError:
            raw = b""
        obj[key] = base64.b64encode(raw).decode("ascii")
