"""Facts of complete responses: OpenAI Chat Completions, OpenAI Responses,
Anthropic Messages, plain dicts of those shapes, other objects with a ``usage``.

Token counts follow the OpenTelemetry GenAI convention: ``input_tokens``
includes cached input tokens (OpenAI's ``prompt_tokens`` already does;
Anthropic's ``input_tokens`` does not, so its cache reads and writes are
added), ``output_tokens`` includes reasoning tokens.

This runs on the application thread for every response: dispatch is on
``type(obj)`` through a cache, and neither SDK is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamonitor.llm._read import Facts, _attr, _int, _put, _str, _View

TOKEN_SOURCE_PROVIDER = "provider"
MAX_CACHED_CLASSES = 4096


# -- usage blocks -----------------------------------------------------------------
# The SDKs build responses without validation, so every value is type-checked
# (``__class__ is int`` also keeps bools out); inline, as this runs per call.


def _chat_usage(u: Any, out: Facts) -> None:
    """OpenAI Chat Completions ``usage`` (``prompt_tokens`` include cached ones)."""
    value = getattr(u, "prompt_tokens", None)
    if value.__class__ is int:
        out["input_tokens"] = value
    value = getattr(u, "completion_tokens", None)
    if value.__class__ is int:
        out["output_tokens"] = value
    value = getattr(u, "total_tokens", None)
    if value.__class__ is int:
        out["total_tokens"] = value
    _details(u, "prompt_tokens_details", "completion_tokens_details", out)


def _responses_usage(u: Any, out: Facts) -> None:
    """OpenAI Responses ``usage`` (``input_tokens`` include cached ones)."""
    value = getattr(u, "input_tokens", None)
    if value.__class__ is int:
        out["input_tokens"] = value
    value = getattr(u, "output_tokens", None)
    if value.__class__ is int:
        out["output_tokens"] = value
    value = getattr(u, "total_tokens", None)
    if value.__class__ is int:
        out["total_tokens"] = value
    _details(u, "input_tokens_details", "output_tokens_details", out)


def _details(u: Any, input_details: str, output_details: str, out: Facts) -> None:
    details = getattr(u, input_details, None)
    if details is not None:
        value = getattr(details, "cached_tokens", None)
        if value.__class__ is int:
            out["cache_read_tokens"] = value
        value = getattr(details, "cache_write_tokens", None)
        if value.__class__ is int:
            out["cache_write_tokens"] = value
    details = getattr(u, output_details, None)
    if details is not None:
        value = getattr(details, "reasoning_tokens", None)
        if value.__class__ is int:
            out["reasoning_tokens"] = value


def _anthropic_usage(u: Any, out: Facts, late: Any = None) -> None:
    """Anthropic ``usage``: its ``input_tokens`` exclude cache reads and writes,
    which are added. ``late`` is a stream's ``message_delta`` usage, whose
    non-null counts are the final (cumulative) ones."""

    def get(name: str) -> int | None:
        if late is not None:
            value = _int(getattr(late, name, None))
            if value is not None:
                return value
        return None if u is None else _int(getattr(u, name, None))

    fresh = get("input_tokens")
    read = get("cache_read_input_tokens")
    write = get("cache_creation_input_tokens")
    # The output count of message_start is a placeholder: only a final one counts.
    output = _int(getattr(late if late is not None else u, "output_tokens", None))
    _put(out, "cache_read_tokens", read)
    _put(out, "cache_write_tokens", write)
    if fresh is not None:
        out["input_tokens"] = fresh + (read or 0) + (write or 0)
    if output is not None:
        out["output_tokens"] = output
        if fresh is not None:
            out["total_tokens"] = out["input_tokens"] + output
    details = getattr(late if late is not None else u, "output_tokens_details", None)
    if details is not None:
        _put(out, "reasoning_tokens", _int(getattr(details, "thinking_tokens", None)))


def _generic_usage(u: Any, out: Facts) -> None:
    if getattr(u, "prompt_tokens", None) is not None:
        _chat_usage(u, out)
    elif (
        getattr(u, "cache_read_input_tokens", None) is not None
        or getattr(u, "cache_creation_input_tokens", None) is not None
    ):
        _anthropic_usage(u, out)
    else:
        _responses_usage(u, out)


def _sourced(out: Facts) -> Facts:
    if "input_tokens" in out or "output_tokens" in out:
        out["token_source"] = TOKEN_SOURCE_PROVIDER
    return out


# -- responses: (facts, completion text) per shape ----------------------------------

Handler = Callable[[Any, bool, Facts], "tuple[Facts, str | None] | None"]


def _ids(obj: Any, out: Facts) -> None:
    value = getattr(obj, "model", None)
    if value.__class__ is str:
        out["response_model"] = value
    value = getattr(obj, "id", None)
    if value.__class__ is str:
        out["response_id"] = value


def _chat(obj: Any, text: bool, out: Facts) -> tuple[Facts, str | None]:
    out["provider"] = "openai"
    _ids(obj, out)
    content = None
    choices = getattr(obj, "choices", None)
    if choices:
        first = choices[0]
        finish = getattr(first, "finish_reason", None)
        if finish.__class__ is str:
            out["finish_reason"] = finish
        if text:
            msg = getattr(first, "message", None)
            if msg is None:
                msg = getattr(first, "delta", None)
            content = _str(getattr(msg, "content", None)) if msg is not None else None
            if content is None:
                content = _str(getattr(first, "text", None))  # legacy completions
    usage = getattr(obj, "usage", None)
    if usage is not None:
        _chat_usage(usage, out)
    return _sourced(out), content


def _response_status(obj: Any) -> str | None:
    details = getattr(obj, "incomplete_details", None)
    reason = _str(getattr(details, "reason", None)) if details is not None else None
    return reason or _str(getattr(obj, "status", None))


def _response_text(obj: Any) -> str | None:
    parts = []
    for item in getattr(obj, "output", None) or ():
        if getattr(item, "type", None) == "message":
            for part in getattr(item, "content", None) or ():
                if getattr(part, "type", None) == "output_text":
                    t = _str(getattr(part, "text", None))
                    if t is not None:
                        parts.append(t)
    return "".join(parts) if parts else None


def _responses(obj: Any, text: bool, out: Facts) -> tuple[Facts, str | None]:
    out["provider"] = "openai"
    _ids(obj, out)
    _put(out, "finish_reason", _response_status(obj))
    usage = getattr(obj, "usage", None)
    if usage is not None:
        _responses_usage(usage, out)
    return _sourced(out), _response_text(obj) if text else None


def _message_text(obj: Any) -> str | None:
    parts = []
    for block in getattr(obj, "content", None) or ():
        if getattr(block, "type", None) == "text":
            t = _str(getattr(block, "text", None))
            if t is not None:
                parts.append(t)
    return "".join(parts) if parts else None


def _message(obj: Any, text: bool, out: Facts) -> tuple[Facts, str | None]:
    out["provider"] = "anthropic"
    _ids(obj, out)
    _put(out, "finish_reason", _str(getattr(obj, "stop_reason", None)))
    usage = getattr(obj, "usage", None)
    if usage is not None:
        _anthropic_usage(usage, out)
    return _sourced(out), _message_text(obj) if text else None


def _dict(obj: Any, text: bool, out: Facts) -> tuple[Facts, str | None] | None:
    """A plain dict: the API is inferred from its shape."""
    usage = obj.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    kind = obj.get("object")
    view = _View(obj)
    if "choices" in obj or "prompt_tokens" in usage or kind in _CHAT_OBJECTS:
        return _chat(view, text, out)
    if kind == "response" or "output" in obj:
        return _responses(view, text, out)
    if (
        obj.get("type") == "message"
        or "stop_reason" in obj
        or "cache_creation_input_tokens" in usage
        or "cache_read_input_tokens" in usage
    ):
        return _message(view, text, out)
    if "input_tokens" in usage or "output_tokens" in usage:
        _responses_usage(_View(usage), out)
        _put(out, "response_model", _str(obj.get("model")))
        _put(out, "response_id", _str(obj.get("id")))
        return _sourced(out), None
    return None


_CHAT_OBJECTS = frozenset({"chat.completion", "chat.completion.chunk", "text_completion"})


def _generic(obj: Any, text: bool, out: Facts) -> tuple[Facts, str | None] | None:
    """Any other object with a plain ``usage`` attribute (provider unknown)."""
    usage = _attr(obj, "usage")
    if usage is None or isinstance(usage, (str, bytes, int, float)):
        return None
    if isinstance(usage, dict):
        usage = _View(usage)
    found: Facts = {}
    _generic_usage(usage, found)
    if not found:
        return None
    _put(found, "response_model", _str(_attr(obj, "model")))
    _put(found, "response_id", _str(_attr(obj, "id")))
    _put(found, "finish_reason", _str(_attr(obj, "finish_reason") or _attr(obj, "stop_reason")))
    out.update(found)
    return _sourced(out), None


def _nothing(obj: Any, text: bool, out: Facts) -> None:
    return None


_PLAIN_TYPES = (str, bytes, bytearray, int, float, bool, list, tuple, set, type(None))
_handlers: dict[type, Handler] = {}


def _handler_for(cls: type) -> Handler:
    if issubclass(cls, dict):
        return _dict
    if issubclass(cls, _PLAIN_TYPES):
        return _nothing
    root = cls.__module__.partition(".")[0]
    names = {k.__name__ for k in cls.__mro__}
    if root == "openai":
        if names & {"ChatCompletion", "ChatCompletionChunk", "Completion"}:
            return _chat
        if "Response" in names and cls.__module__.startswith("openai.types.responses"):
            return _responses
    elif root == "anthropic" and names & {"Message", "BetaMessage"}:
        return _message
    return _generic


def facts_and_text(
    obj: Any, text: bool = True, out: Facts | None = None
) -> tuple[Facts, str | None] | None:
    """``(response_facts(obj), completion text)``, or ``None`` for an object that is
    not an LLM response. The facts are added to ``out`` when given (and it is
    returned). Never raises (an attribute that raises: ``None``)."""
    cls = type(obj)  # not obj.__class__, which an object may make raise
    handler = _handlers.get(cls)
    try:
        if handler is None:
            handler = _handler_for(cls)
            if len(_handlers) < MAX_CACHED_CLASSES:
                _handlers[cls] = handler
        return handler(obj, text, {} if out is None else out)
    except Exception:
        return None


def response_facts(obj: Any) -> dict[str, Any] | None:
    """Column values of an LLM response, or ``None`` when ``obj`` is not one.

    Reads OpenAI ``ChatCompletion`` (and chunks, legacy ``Completion``), OpenAI
    Responses ``Response``, Anthropic ``Message``, plain dicts of those shapes
    (the provider is inferred from the shape), and other objects with a
    compatible ``usage`` (provider left out). Keys: ``provider``,
    ``response_model``, ``response_id``, ``input_tokens`` (cached tokens
    included), ``output_tokens``, ``total_tokens``, ``cache_read_tokens``,
    ``cache_write_tokens``, ``reasoning_tokens``, ``finish_reason`` (the first
    choice's; Anthropic ``stop_reason``; Responses ``incomplete_details.reason``
    or else ``status``) and ``token_source="provider"`` when there are counts.
    A null usage or a missing field leaves its keys out. Never raises.
    """
    found = facts_and_text(obj, False)
    return None if found is None else found[0]


def response_text(obj: Any) -> str | None:
    """The completion text of an OpenAI or Anthropic response (or dict of one)."""
    found = facts_and_text(obj, True)
    return None if found is None else found[1]
