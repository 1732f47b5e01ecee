"""Finding the text in what an LLM function returns (or streams)."""

from __future__ import annotations

from typing import Any

from llamonitor.llm._read import _attr

TEXT_KEYS = (
    "text",
    "content",
    "output",
    "output_text",
    "response",
    "completion",
    "answer",
    "message",
)
_MAX_DEPTH = 4


def _join(parts: list[str]) -> str | None:
    return "".join(parts) if parts else None


def as_str(value: Any) -> str:
    """``value`` as an exact ``str``; a ``str`` subclass's own methods are not called."""
    if isinstance(value, str):
        return str.__str__(value)
    return str(value)


def extract_text(result: Any, _depth: int = 0) -> str | None:
    """The text of ``result``, or ``None`` when it has none.

    Handles: ``str``; dicts with a text/content/output/... key; lists of
    content blocks (``[{"type": "text", "text": ...}]``); OpenAI Chat
    Completions (``choices[0].message.content``) and Responses
    (``output_text``); Anthropic Messages (``content[*].text``); stream chunks
    (``choices[0].delta.content``, ``delta.text``); objects with ``.text`` or
    ``.content``. An attribute that raises counts as absent; may still raise
    for stranger objects (callers guard it).
    """
    if result.__class__ is str:
        return result
    if result is None or _depth > _MAX_DEPTH:
        return None
    if isinstance(result, str):
        return str.__str__(result)
    if isinstance(result, dict):
        for key in TEXT_KEYS:
            if key in result:
                found = extract_text(result[key], _depth + 1)
                if found is not None:
                    return found
        choices = result.get("choices")
        if isinstance(choices, list) and choices:
            return _from_choices(choices, _depth)
        delta = result.get("delta")
        if delta is not None:
            return extract_text(delta, _depth + 1)
        return None
    if isinstance(result, (list, tuple)):
        parts = []
        for item in result[:1000]:
            if (
                isinstance(item, (str, dict))
                or _attr(item, "text") is not None
                or _attr(item, "content") is not None
            ):
                t = extract_text(item, _depth + 1)
                if t is not None:
                    parts.append(t)
        return _join(parts)
    if isinstance(result, (bytes, bytearray, memoryview, int, float, bool)):
        return None
    # Objects: SDK responses, pydantic models, user classes.
    choices = _attr(result, "choices")
    if isinstance(choices, list) and choices:
        return _from_choices(choices, _depth)
    output_text = _attr(result, "output_text")
    if isinstance(output_text, str):
        return str.__str__(output_text)
    for attr in ("text", "content", "delta", "output"):
        value = _attr(result, attr)
        if value is not None and not callable(value):
            found = extract_text(value, _depth + 1)
            if found is not None:
                return found
    return None


def _from_choices(choices: list[Any], depth: int) -> str | None:
    parts = []
    for choice in choices:
        if isinstance(choice, dict):
            msg = choice.get("message")
            if msg is None:
                msg = choice.get("delta")
        else:
            msg = _attr(choice, "message")
            if msg is None:
                msg = _attr(choice, "delta")
        if msg is None:
            text = choice.get("text") if isinstance(choice, dict) else _attr(choice, "text")
        else:
            text = msg.get("content") if isinstance(msg, dict) else _attr(msg, "content")
        found = extract_text(text, depth + 1) if text is not None else None
        if found is not None:
            parts.append(found)
    return _join(parts)
