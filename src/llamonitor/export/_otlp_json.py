"""OTLP/JSON (``protocol="http/json"``): export requests as the OTLP
specification's JSON Protobuf Encoding, and the receiver's JSON answers.

The encoding is protobuf's JSON mapping (lowerCamelCase keys, 64-bit integers
as decimal strings) with the OTLP deviations: ``traceId`` / ``spanId`` /
``parentSpanId`` are hex strings, not base64, in every message (spans, links,
exemplars), and enum values are integers, never names.
"""

from __future__ import annotations

import base64
import json
from typing import Any

CONTENT_TYPE = "application/json"

_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId"))


def _hex_ids(node: Any) -> None:
    """Turn protobuf JSON's base64 ids into OTLP/JSON's hex, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            elif isinstance(value, (dict, list)):
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids(item)


def encode(message: Any) -> bytes:
    """The OTLP/JSON body of an export request (a protobuf message)."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(body: bytes, out: Any) -> Any:
    """Fill ``out`` (a response message) from a JSON answer; unknown fields are
    ignored, as the specification asks. Returns ``out``."""
    from google.protobuf import json_format

    json_format.Parse(body.decode("utf-8"), out, ignore_unknown_fields=True)
    return out


def status_message(body: bytes) -> str:
    """The ``message`` of a JSON ``google.rpc.Status`` error body ('' if none)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    message = doc.get("message") if isinstance(doc, dict) else None
    return message if isinstance(message, str) else ""
