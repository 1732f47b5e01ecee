"""Request facts (model, temperature, token limit) and the chars/4 estimates
of token counts a provider did not report (from the prompt's size and the
completion's)."""

from __future__ import annotations

from typing import Any

from llamonitor.llm._read import Facts, _attr, _int

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


def estimate_tokens(chars: int) -> int:
    """Tokens for ``chars`` characters of text (see :data:`TOKEN_SOURCE_ESTIMATE`)."""
    return -(-chars // CHARS_PER_TOKEN)


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
