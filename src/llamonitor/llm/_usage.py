"""Token usage and response facts of OpenAI and Anthropic responses and streams.

:func:`response_facts` turns a response into column values (``provider``,
``response_model``, ``response_id``, token counts, ``finish_reason``,
``token_source``); :func:`request_facts` does the same for the request's
keyword arguments. The stream accumulators (:class:`ChatStreamUsage`,
:class:`ResponsesStreamUsage`, :class:`MessagesStreamUsage`) are fed every
chunk or event of a stream and give the same facts, and the completion text,
at its end.

Token counts follow the OpenTelemetry GenAI convention: ``input_tokens``
includes cached input tokens (OpenAI's ``prompt_tokens`` already does;
Anthropic's ``input_tokens`` does not, so its cache reads and writes are
added), ``output_tokens`` includes reasoning tokens.

Everything here runs on the application thread: dispatch is on
``type(obj)`` through a cache, and neither SDK is imported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llamonitor.instrument._extract import _attr

Facts = dict[str, Any]

TOKEN_SOURCE_PROVIDER = "provider"
TOKEN_SOURCE_ESTIMATE = "estimate:chars/4"
"""Counts estimated as one token per 4 characters, rounded up (OpenAI's rule of
thumb for English text): output from the completion text (and tool-call
arguments, refusals and thinking text seen in a stream), input from the text
of the prompt (system prompt or instructions and every message's text parts;
images and other parts count nothing). Used when the provider reported no
usage (a stream without ``stream_options={"include_usage": True}``, a stream
abandoned before its usage arrived, a response with ``usage: null``); when only
some counts are estimated, ``token_source`` is still this value."""

CHARS_PER_TOKEN = 4
MAX_CACHED_CLASSES = 4096

_clock = time.perf_counter_ns


def estimate_tokens(chars: int) -> int:
    """Tokens for ``chars`` characters of text (see :data:`TOKEN_SOURCE_ESTIMATE`)."""
    return -(-chars // CHARS_PER_TOKEN)


def _int(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def _str(value: Any) -> str | None:
    if value.__class__ is str:
        return value
    return str.__str__(value) if isinstance(value, str) else None


def _put(out: Facts, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


class _View:
    """Attribute access to a dict (missing keys read as ``None``), so one code
    path reads SDK objects and plain dicts of the same shape."""

    __slots__ = ("_llamonitor_d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self._llamonitor_d = d

    def __getattr__(self, name: str) -> Any:
        return _view(self._llamonitor_d.get(name))


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return _View(value)
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


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


def request_facts(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model``, ``temperature`` and ``max_tokens`` (from ``max_tokens``,
    ``max_completion_tokens`` or ``max_output_tokens``) of a request's keyword
    arguments, or of its ``extra_body`` (parameters an SDK has no argument
    for); arguments not given (or the SDKs' ``omit`` markers) are left out."""
    out = _request_facts(kwargs)
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, dict) and len(out) < 3:
        for key, value in _request_facts(extra_body).items():
            out.setdefault(key, value)
    return out


def _request_facts(kwargs: dict[str, Any]) -> Facts:
    out: Facts = {}
    get = kwargs.get
    model = get("model")
    if model.__class__ is str:
        out["model"] = model
    elif isinstance(model, str):
        out["model"] = str.__str__(model)
    temperature = get("temperature")
    if temperature is not None:
        if temperature.__class__ is float:
            out["temperature"] = temperature
        elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
            out["temperature"] = float(temperature)
    for key in _LIMITS:
        limit = get(key)
        if limit is not None:
            limit = _int(limit)
            if limit is not None:
                out["max_tokens"] = limit
                break
    return out


_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


# -- estimates -------------------------------------------------------------------------


_PROMPT_FIELDS = ("system", "instructions", "messages", "input", "prompt")
_NON_TEXT_PARTS = frozenset({"image", "image_url", "input_image", "input_audio", "file"})


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of a message, a content part, or a list of them: a dict's
    ``content`` (else its ``text``), an SDK object's the same."""
    if value.__class__ is str:
        return len(value)
    if depth > 6 or value is None:
        return 0
    if isinstance(value, (list, tuple)):
        total = 0
        for item in value[:10_000]:
            total += len(item) if item.__class__ is str else _text_chars(item, depth + 1)
        return total
    if isinstance(value, dict):
        if value.get("type") in _NON_TEXT_PARTS:
            return 0
        inner = value.get("content")
        if inner is None:
            inner = value.get("text")
    elif isinstance(value, str):
        return len(value)
    elif isinstance(value, (bytes, bytearray, int, float)):
        return 0
    else:  # SDK objects (pydantic models) in a message list
        inner = _attr(value, "content")
        if inner is None:
            inner = _attr(value, "text")
    return 0 if inner is None else _text_chars(inner, depth + 1)


def prompt_chars(prompt: Any) -> int:
    """Characters of text in a prompt: a string, a list of messages (text
    content or text parts), or a dict of request arguments (``system``,
    ``instructions``, ``messages``, ``input``, ``prompt``)."""
    try:
        if isinstance(prompt, dict) and "content" not in prompt and "text" not in prompt:
            return sum(_text_chars(prompt.get(key)) for key in _PROMPT_FIELDS)
        return _text_chars(prompt)
    except Exception:
        return 0


def add_estimates(facts: Facts, prompt: Any, completion_chars: int) -> None:
    """Fill missing ``input_tokens``/``output_tokens`` (and ``total_tokens``) by
    the chars/4 estimate and mark ``token_source`` as estimated."""
    estimated = False
    if "input_tokens" not in facts and prompt is not None:
        facts["input_tokens"] = estimate_tokens(prompt_chars(prompt))
        estimated = True
    if "output_tokens" not in facts:
        facts["output_tokens"] = estimate_tokens(completion_chars)
        estimated = True
    if estimated:
        facts["total_tokens"] = facts.get("input_tokens", 0) + facts["output_tokens"]
        facts["token_source"] = TOKEN_SOURCE_ESTIMATE


# -- streams -----------------------------------------------------------------------------


class StreamUsage:
    """Fed every chunk of a stream (``feed``), gives the stream's facts at its end.

    ``items`` counts the chunks; ``first_ns`` is ``time.perf_counter_ns()`` at
    the first one. ``text()`` is the completion text so far (``None`` when the
    stream carried none) and ``facts(prompt)`` the column values, estimated
    (see :data:`TOKEN_SOURCE_ESTIMATE`) when the stream had no usage.
    ``feed`` costs a few attribute reads per chunk.
    """

    __slots__ = ("extra_chars", "first_ns", "items", "parts")

    provider = ""

    def __init__(self) -> None:
        self.items = 0
        self.first_ns = 0
        self.parts: list[str] = []
        self.extra_chars = 0  # non-text output (tool arguments, thinking): estimates only

    def feed(self, chunk: Any) -> None:
        raise NotImplementedError

    def text(self) -> str | None:
        return "".join(self.parts) if self.parts else None

    def _facts(self) -> Facts:
        raise NotImplementedError

    def facts(self, prompt: Any = None, text: str | None = None) -> Facts:
        """The stream's column values; ``text`` is ``self.text()`` if already joined."""
        out = self._facts()
        if "input_tokens" not in out or "output_tokens" not in out:
            if text is None:
                text = self.text()
            add_estimates(out, prompt, (len(text) if text else 0) + self.extra_chars)
        return out


class ChatStreamUsage(StreamUsage):
    """OpenAI Chat Completions chunks (``ChatCompletionChunk``); the usage comes
    in the last chunk with ``stream_options={"include_usage": True}``."""

    __slots__ = ("finish", "last")
    provider = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.last: Any = None
        self.finish: Any = None

    def feed(self, chunk: Any) -> None:
        if not self.items:
            self.first_ns = _clock()
        self.items += 1
        self.last = chunk
        choices = chunk.choices
        if choices:
            choice = choices[0]
            if choice.index:
                return  # n > 1: the first choice is the one measured
            delta = choice.delta
            if delta is not None:
                content = delta.content
                if content:
                    self.parts.append(content)
                elif delta.tool_calls:
                    for call in delta.tool_calls:
                        fn = call.function
                        if fn is not None:
                            self.extra_chars += len(fn.arguments or "") + len(fn.name or "")
            finish = choice.finish_reason
            if finish is not None:
                self.finish = finish

    def _facts(self) -> Facts:
        last = self.last
        if last is None:
            return {"provider": "openai"}
        out, _ = _chat(last, False, {})
        out.pop("finish_reason", None)
        _put(out, "finish_reason", _str(self.finish))
        return out


_RESPONSE_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_MORE = frozenset(
    {
        "response.function_call_arguments.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.custom_tool_call_input.delta",
    }
)


class ResponsesStreamUsage(StreamUsage):
    """OpenAI Responses stream events; the usage comes with ``response.completed``
    (or ``response.incomplete`` / ``response.failed``)."""

    __slots__ = ("final", "started")
    provider = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.final: Any = None
        self.started: Any = None

    def feed(self, event: Any) -> None:
        if not self.items:
            self.first_ns = _clock()
        self.items += 1
        kind = event.type
        if kind == "response.output_text.delta":
            self.parts.append(event.delta)
        elif kind in _RESPONSE_FINAL:
            self.final = event.response
        elif kind == "response.created":
            self.started = event.response
        elif kind in _RESPONSE_MORE:
            delta = event.delta
            if delta.__class__ is str:
                self.extra_chars += len(delta)

    def text(self) -> str | None:
        if self.parts:
            return "".join(self.parts)
        return None if self.final is None else _response_text(self.final)

    def _facts(self) -> Facts:
        response = self.final if self.final is not None else self.started
        if response is None:
            return {"provider": "openai"}
        out, _ = _responses(response, False, {})
        if self.final is None:
            out.pop("finish_reason", None)  # "in_progress": the stream did not end
            for key in ("input_tokens", "output_tokens", "total_tokens", "token_source"):
                out.pop(key, None)
        return out


_MESSAGE_MORE = {"input_json_delta": "partial_json", "thinking_delta": "thinking"}


class MessagesStreamUsage(StreamUsage):
    """Anthropic Messages stream events: ``message_start`` (model, id, input
    usage), ``content_block_delta`` (text), ``message_delta`` (stop reason,
    final output usage)."""

    __slots__ = ("late", "start", "stop")
    provider = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self.start: Any = None
        self.late: Any = None
        self.stop: Any = None

    def feed(self, event: Any) -> None:
        if not self.items:
            self.first_ns = _clock()
        self.items += 1
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            kind = delta.type
            if kind == "text_delta":
                self.parts.append(delta.text)
            elif kind in _MESSAGE_MORE:  # output tokens, not completion text
                more = getattr(delta, _MESSAGE_MORE[kind], None)
                if more.__class__ is str:
                    self.extra_chars += len(more)
        elif kind == "message_start":
            self.start = event.message
        elif kind == "message_delta":
            self.late = event.usage
            self.stop = event.delta.stop_reason

    def _facts(self) -> Facts:
        out: Facts = {"provider": "anthropic"}
        start = self.start
        if start is not None:
            _put(out, "response_model", _str(getattr(start, "model", None)))
            _put(out, "response_id", _str(getattr(start, "id", None)))
        usage = None if start is None else getattr(start, "usage", None)
        if usage is not None or self.late is not None:
            if self.late is None:
                # No final usage: the input counts hold, the output one is a placeholder.
                _anthropic_usage(usage, out, _NO_OUTPUT)
            else:
                _anthropic_usage(usage, out, self.late)
        _put(out, "finish_reason", _str(self.stop))
        return _sourced(out)


class _NoOutput:
    output_tokens = None
    output_tokens_details = None


_NO_OUTPUT = _NoOutput()
