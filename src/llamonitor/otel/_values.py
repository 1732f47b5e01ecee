"""OTLP ``AnyValue`` / ``KeyValue`` lists to Python values, within limits.

Everything here reads a protobuf message that came from the network, so each
step is bounded: how many attributes of a span are read (the rest are counted,
never materialized), how long a string is kept, how many items and how deep an
array or key-value list goes. A 1M-attribute span costs the reading of
:data:`MAX_ATTRIBUTES` of them, not a million Python objects.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

MAX_ATTRIBUTES = 1024
"""Attributes read per span (span, event and link attributes share it); the
rest are dropped and counted (``otel.dropped_attributes_count``). The
OpenTelemetry SDK's own default limit is 128."""

MAX_VALUE_CHARS = 16 * 1024
"""Characters kept of a string attribute value (``otel.truncated_values`` counts cuts)."""

MAX_JSON_PARSE_CHARS = 64 * 1024
"""Characters of a JSON attribute the mapping reads columns out of
(``llm.invocation_parameters``, Logfire's ``request_data`` / ``response_data``)
that are parsed whole; its stored value is cut to :data:`MAX_VALUE_CHARS` after."""

MAX_KEY_CHARS = 256
"""Characters kept of an attribute key."""

MAX_ITEMS = 128
"""Items kept of an array or key-value list value."""

MAX_DEPTH = 4
"""Nesting kept of array / key-value list values; deeper ones become ``"<nested>"``."""


@dataclass(slots=True)
class Budget:
    """What is left to read of one span, and what was cut."""

    left: int = MAX_ATTRIBUTES
    dropped: int = 0
    truncated: int = 0


def attributes(kvs: Any, budget: Budget) -> dict[str, Any]:
    """A ``repeated KeyValue`` as a dict, reading at most ``budget.left`` of it."""
    n = len(kvs)
    if n == 0:
        return {}
    take = min(n, budget.left)
    budget.left -= take
    budget.dropped += n - take
    out: dict[str, Any] = {}
    for kv in kvs[:take] if take < n else kvs:
        key = kv.key
        if len(key) > MAX_KEY_CHARS:
            key = key[:MAX_KEY_CHARS]
            budget.truncated += 1
        v = kv.value
        kind = v.WhichOneof("value")
        # the common kinds inline: this loop runs for every attribute received
        if kind == "string_value":
            s: str = v.string_value
            if len(s) > MAX_VALUE_CHARS:
                budget.truncated += 1
                s = s[:MAX_VALUE_CHARS]
            out[key] = s
        elif kind == "int_value":
            out[key] = v.int_value
        else:
            out[key] = value(v, budget, 0)
    return out


def value(v: Any, budget: Budget, depth: int) -> Any:
    """One ``AnyValue`` as a str, int, float, bool, list, dict or None."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        s: str = v.string_value
        if len(s) > MAX_VALUE_CHARS:
            budget.truncated += 1
            return s[:MAX_VALUE_CHARS]
        return s
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        d: float = v.double_value
        return d if math.isfinite(d) else repr(d)
    if kind == "bool_value":
        return v.bool_value
    if kind is None:
        return None
    if depth >= MAX_DEPTH:
        budget.truncated += 1
        return "<nested>"
    if kind == "array_value":
        items = v.array_value.values
        if len(items) > MAX_ITEMS:
            budget.truncated += 1
            items = items[:MAX_ITEMS]
        return [value(x, budget, depth + 1) for x in items]
    if kind == "kvlist_value":
        kvs = v.kvlist_value.values
        if len(kvs) > MAX_ITEMS:
            budget.truncated += 1
            kvs = kvs[:MAX_ITEMS]
        return {kv.key[:MAX_KEY_CHARS]: value(kv.value, budget, depth + 1) for kv in kvs}
    if kind == "bytes_value":
        raw: bytes = v.bytes_value
        if len(raw) > MAX_VALUE_CHARS:
            budget.truncated += 1
            raw = raw[:MAX_VALUE_CHARS]
        return base64.b64encode(raw).decode("ascii")  # as OTLP/JSON spells bytes
    return None
