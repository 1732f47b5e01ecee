"""Stream accumulators: fed every chunk or event of a stream, they give the
stream's facts (the same as :func:`~llamonitor.llm._responses.response_facts`
of a complete response) and its completion text at its end."""

from __future__ import annotations

import time
from typing import Any

from llamonitor.llm._read import Facts, _put, _str
from llamonitor.llm._request import add_estimates
from llamonitor.llm._responses import _anthropic_usage, _chat, _response_text, _responses, _sourced

_clock = time.perf_counter_ns


class StreamUsage:
    """Fed every chunk of a stream (``feed``), gives the stream's facts at its end.

    ``items`` counts the chunks; ``first_ns`` is ``time.perf_counter_ns()`` at
    the first one. ``text()`` is the completion text so far (``None`` when the
    stream carried none) and ``facts(prompt)`` the column values, estimated
    (see :data:`~llamonitor.llm._request.TOKEN_SOURCE_ESTIMATE`) when the
    stream had no usage. ``feed`` costs a few attribute reads per chunk.
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
            return {"provider": self.provider}
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
            return {"provider": self.provider}
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
        out: Facts = {"provider": self.provider}
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
