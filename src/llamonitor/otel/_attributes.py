"""Which columns a span's attributes fill (the conventions' names are in
:mod:`llamonitor.otel._conventions`), its session and its operation type.

Each function works on the span's attribute dict and the row's column dict
(``row``): an attribute that fills a column leaves ``attrs`` (so it is not
repeated in ``custom_attributes``), the others stay.
"""

from __future__ import annotations

import json
import numbers
from typing import Any

from llamonitor.llm import _settings as llm_settings
from llamonitor.llm.content import prompt_hash
from llamonitor.otel import _conventions as conv
from llamonitor.otel._values import MAX_JSON_PARSE_CHARS, MAX_VALUE_CHARS
from llamonitor.schema._columns import INT64_MAX, INT64_MIN, SETTABLE, column_value

MAX_NAME_CHARS = 1024
MAX_SESSION_CHARS = 256
PARSED_WHOLE = frozenset((conv.INVOCATION_PARAMETERS, conv.LOGFIRE_REQUEST, conv.LOGFIRE_RESPONSE))
"""JSON attributes the columns are read out of (the model, the tokens...): they
arrive whole up to ``MAX_JSON_PARSE_CHARS`` (``_wire.decode``), so a long prompt
before the model or a long answer before the usage loses neither, and are cut
to ``MAX_VALUE_CHARS`` here, once read (the cut is counted when decoded)."""

TOKEN_SOURCE_OTEL = "otel"
COST_SOURCE_USER = "user"

_CONTENT = ("prompt_content", "completion_content")
_INT_COLUMNS = frozenset(c for c, t in SETTABLE.items() if t is numbers.Integral)
# The exact Python class a plain value of each column has (the fast path of _fit).
_KIND: dict[str, type] = {
    c: {numbers.Integral: int, numbers.Real: float, str: str}[t]
    for c, t in SETTABLE.items()
    if t in (numbers.Integral, numbers.Real, str) and c not in ("finish_reason",)
}

# attribute -> (column, rank): the lower rank wins when a span has several.
_COLUMN_OF: dict[str, tuple[str, int]] = {
    name: (column, rank)
    for column, names in conv.COLUMN_ATTRIBUTES.items()
    for rank, name in enumerate(names, start=1)
}
_COLUMN_KEYS = frozenset(_COLUMN_OF)
_OWN_PREFIXED = frozenset(conv.LLAMONITOR_PREFIX + c for c in SETTABLE)
"""``llamonitor.<column>``: they win over every convention's name."""


def session(attrs: dict[str, Any]) -> str | None:
    """The session the attributes name (those naming it leave ``attrs``), or ``None``."""
    for key in conv.SESSION_ATTRIBUTES:
        value = attrs.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        text = str(value)[:MAX_SESSION_CHARS]
        if text:
            for other in conv.SESSION_ATTRIBUTES:  # the column holds it (and its aliases)
                if other in attrs and str(attrs[other])[:MAX_SESSION_CHARS] == text:
                    del attrs[other]
            return text
    return None


Fill = tuple[str, int, Any, bool]
"""What an attribute does to the columns: ``(column, rank, fitted value or
None, is llamonitor's own name)`` (:func:`fill_of`)."""


def fill_of(key: str, value: Any) -> Fill | None:
    """The column attribute ``key`` names, with ``value`` fitted to it; ``None``
    for an attribute that names no column. Depends on the key and value alone,
    so it is worked out once per distinct attribute (``_wire``)."""
    spec = _COLUMN_OF.get(key)
    if spec is not None:
        return (spec[0], spec[1], _fit(spec[0], value), False)
    if key in _OWN_PREFIXED:
        return (key[11:], 0, _fit(key[11:], value), True)
    return None


def columns(attrs: dict[str, Any], row: dict[str, Any], fills: dict[str, Fill]) -> None:
    """Fill the columns the attributes name (``fills``: :func:`fill_of` of
    each attribute of ``attrs`` that names one); the ones used leave ``attrs``."""
    ranks: dict[str, tuple[int, str]] = {}
    own: list[tuple[str, str, Any]] = []
    for key, (column, rank, fitted, mine) in fills.items():
        if fitted is None:
            continue  # e.g. a token count given as a string: kept as an attribute
        if mine:
            own.append((key, column, fitted))
            continue
        have = ranks.get(column)
        if have is not None and have[0] < rank:
            continue
        row[column] = fitted
        ranks[column] = (rank, key)
    if ranks:
        for _, key in ranks.values():
            del attrs[key]
    for key, column, fitted in own:  # llamonitor's own exporter: llamonitor.<column> wins
        row[column] = fitted
        del attrs[key]
    if "temperature" not in row or "max_tokens" not in row or "model" not in row:
        _invocation_parameters(attrs, row)
    if "input_tokens" not in row and "output_tokens" not in row:
        _logfire(attrs, row)
    for key in PARSED_WHOLE:  # read: now the stored value's bound
        value = attrs.get(key)
        if value.__class__ is str and len(value) > MAX_VALUE_CHARS:
            attrs[key] = value[:MAX_VALUE_CHARS]
    _content(attrs, row)
    if "input_tokens" in row or "output_tokens" in row:
        if "total_tokens" not in row:
            row["total_tokens"] = row.get("input_tokens", 0) + row.get("output_tokens", 0)
        row.setdefault("token_source", TOKEN_SOURCE_OTEL)
    if "cost_usd" not in row and ("input_cost_usd" in row or "output_cost_usd" in row):
        row["cost_usd"] = row.get("input_cost_usd", 0.0) + row.get("output_cost_usd", 0.0)
    if "cost_usd" in row:
        row.setdefault("cost_source", COST_SOURCE_USER)


def _fit(column: str, raw: Any) -> Any:
    kind = _KIND.get(column)
    cls = raw.__class__
    if kind is str:
        if cls is str:
            return raw
    elif kind is int:
        if cls is int:
            return raw if INT64_MIN <= raw <= INT64_MAX else None
    elif kind is float and (cls is float or cls is int):
        return float(raw)
    if column in _CONTENT:
        if isinstance(raw, str):
            return raw
        return json.dumps(raw, ensure_ascii=False) if isinstance(raw, (list, dict)) else None
    if column in _INT_COLUMNS and isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # some SDKs send counts as doubles
    return column_value(column, raw)


def _invocation_parameters(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """OpenInference's ``llm.invocation_parameters`` (JSON of the request)."""
    params = _json_object(attrs.get(conv.INVOCATION_PARAMETERS))
    if params is None:
        return
    if "temperature" not in row:
        t = column_value("temperature", params.get("temperature"))
        if t is not None:
            row["temperature"] = t
    if "max_tokens" not in row:
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens"):
            m = column_value("max_tokens", params.get(key))
            if m is not None:
                row["max_tokens"] = m
                break
    if "model" not in row:
        model = column_value("model", params.get("model"))
        if model:
            row["model"] = model


def _logfire(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """Logfire's OpenAI / Anthropic spans: ``request_data`` and ``response_data`` JSON."""
    request = _json_object(attrs.get(conv.LOGFIRE_REQUEST))
    if request is not None and "model" not in row:
        model = column_value("model", request.get("model"))
        if model:
            row["model"] = model
    response = _json_object(attrs.get(conv.LOGFIRE_RESPONSE))
    if response is None:
        return
    usage = response.get("usage")
    if isinstance(usage, dict):
        pairs = (
            ("input_tokens", ("input_tokens", "prompt_tokens")),
            ("output_tokens", ("output_tokens", "completion_tokens")),
        )
        for column, keys in pairs:
            for key in keys:
                v = column_value(column, usage.get(key))
                if v is not None:
                    row[column] = v
                    break
    if "response_model" not in row:
        model = column_value("response_model", response.get("model"))
        if model:
            row["response_model"] = model


def _json_object(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_JSON_PARSE_CHARS or not raw.startswith("{"):
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _content(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    if "prompt_content" not in row and "completion_content" not in row:
        return
    cap = llm_settings.SETTINGS.content_max_chars
    prompt = row.get("prompt_content")
    if prompt:
        h = prompt_hash(prompt)
        if h is not None:
            row.setdefault("prompt_hash", h)
    cut: dict[str, int] = {}
    for column in _CONTENT:
        text = row.get(column)
        if text is not None and len(text) > cap:
            cut[column] = len(text)
            row[column] = text[:cap]
    if cut:
        attrs["content_truncated"] = cut


def operation_type(attrs: dict[str, Any], row: dict[str, Any]) -> str:
    """``operation_type``: llamonitor's own, else the conventions' kind attributes."""
    own = attrs.pop(conv.OPERATION_TYPE_ATTRIBUTES[0], None)
    if isinstance(own, str) and own:
        return own[:MAX_NAME_CHARS]
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in conv.OPENINFERENCE_KINDS:
        return conv.OPENINFERENCE_KINDS[kind.upper()]
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return conv.GEN_AI_OPERATIONS.get(op, op[:MAX_NAME_CHARS])
    kind = attrs.get("traceloop.span.kind")
    if isinstance(kind, str) and kind in conv.TRACELOOP_KINDS:
        name = attrs.get("traceloop.entity.name")
        if kind == "agent" and isinstance(name, str) and "agent_name" not in row:
            row["agent_name"] = name[:MAX_NAME_CHARS]
        return conv.TRACELOOP_KINDS[kind]
    request_type = attrs.get("llm.request.type")
    if isinstance(request_type, str) and request_type in conv.TRACELOOP_REQUEST_TYPES:
        return conv.TRACELOOP_REQUEST_TYPES[request_type]
    if "input_tokens" in row or "output_tokens" in row or "model" in row:
        return conv.LLM_OPERATION_TYPE
    return conv.DEFAULT_OPERATION_TYPE
