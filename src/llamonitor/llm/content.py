"""Prompt hashing and prompt/completion capture with redaction.

Content is not stored unless ``MonitorConfig.capture_content`` is on (seed 002:
no sensitive data stored by default). A hash of the prompt is always stored
(``prompt_hash``): it reveals nothing, and it lets a report find identical
prompts that a cache would have answered.

When capture is on, the application thread only snapshots the text (a later
change to the user's message list must not change what is stored); the
worker redacts and caps it:

1. built-in rules (``redact_builtin``): API keys and secrets, e-mail
   addresses, credit-card numbers (Luhn-checked), phone numbers;
2. the user's ``redact_patterns`` (each match becomes ``[REDACTED]``);
3. the user's ``redactor`` callable, last;

then each field is cut to ``content_max_chars``; a cut field's original
length is recorded in ``custom_attributes["content_truncated"]``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from llamonitor._records import Deferred
from llamonitor.llm import _settings

_SECRET_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # key = value / key: value -- keep the key, hide the value.
    (
        re.compile(
            r"(?i)\b((?:api[_-]?key|secret|password|passwd|token|access[_-]?key)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{4,}"
        ),
        r"\1[SECRET]",
    ),
    (re.compile(r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}"), "[SECRET]"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[SECRET]"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "[SECRET]"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "[SECRET]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "[SECRET]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[SECRET]"),
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/-]{16,}=*"), "Bearer [SECRET]"),
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?!\w)"
    r"|(?<![\w+])\+\d{7,15}(?!\w)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group()


def _phone(m: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in m.group())
    return "[PHONE]" if 7 <= digits <= 15 else m.group()


def redact_builtin(text: str) -> str:
    """Apply the built-in rules: secrets, e-mail addresses, cards, phones."""
    for pattern, repl in _SECRET_RULES:
        text = pattern.sub(repl, text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def make_redactor(
    builtin: bool, patterns: Iterable[str], callback: Callable[[str], str] | None
) -> Callable[[str], str] | None:
    """One function applying the configured rules in order (``None``: no rules)."""
    compiled = [re.compile(p) for p in patterns]
    if not builtin and not compiled and callback is None:
        return None

    def redact(text: str) -> str:
        if builtin:
            text = redact_builtin(text)
        for pattern in compiled:
            text = pattern.sub("[REDACTED]", text)
        if callback is not None:
            text = callback(text)
            if not isinstance(text, str):
                raise TypeError(f"redactor returned {type(text).__name__}, not str")
        return text

    return redact


# -- prompt text ---------------------------------------------------------------

_PROMPT_KEYS = ("system", "instructions", "messages", "input", "prompt", "contents")


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    get = part.get if isinstance(part, dict) else lambda k, d=None: getattr(part, k, d)
    text = get("text")
    if isinstance(text, str):
        return text
    content = get("content")
    if isinstance(content, (str, list)):
        return prompt_text(content)
    kind = get("type")
    return f"[{kind}]" if isinstance(kind, str) else ""


def prompt_text(prompt: Any) -> str:
    """A canonical text of a prompt: a string, a list of chat messages (dicts
    or SDK objects, text or multi-part content), or a dict of request
    arguments (``system``/``instructions``/``messages``/``input``...)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict) and "role" not in prompt and "content" not in prompt:
        return "\n".join(
            f"{k}: {prompt_text(prompt[k])}" for k in _PROMPT_KEYS if prompt.get(k) is not None
        )
    if isinstance(prompt, (list, tuple)):
        out = []
        for message in prompt:
            if isinstance(message, str):
                out.append(message)
                continue
            if isinstance(message, dict):
                role, content = message.get("role"), message.get("content")
            else:
                role, content = getattr(message, "role", None), getattr(message, "content", None)
            if isinstance(content, str):
                text = content
            elif isinstance(content, (list, tuple)):
                text = "".join(_part_text(p) for p in content)
            else:
                text = _part_text(message)
            out.append(f"{role}: {text}" if role else text)
        return "\n".join(out)
    return _part_text(prompt)


def prompt_hash(prompt: Any) -> str | None:
    """32 hex characters identifying the prompt's text (``None`` when empty)."""
    try:
        text = prompt_text(prompt)
    except Exception:
        return None
    if not text:
        return None
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# -- capture -------------------------------------------------------------------

_MARGIN = 256  # redact a little past the cap, so a secret cut in two is still found


def _store(prompt: str | None, completion: str | None) -> dict[str, Any]:
    settings = _settings.SETTINGS
    cap = settings.content_max_chars
    redact = settings.redact
    out: dict[str, Any] = {}
    cut: dict[str, int] = {}
    for name, text in (("prompt", prompt), ("completion", completion)):
        if text is None:
            continue
        if redact is not None:
            text = redact(text[: cap + _MARGIN])[:cap] if len(text) > cap else redact(text)[:cap]
        if len(text) > cap:
            text = text[:cap]
        original = prompt if name == "prompt" else completion
        if original is not None and len(original) > cap:
            cut[name] = len(original)
        out[f"{name}_content"] = text
    if cut:
        out["custom_attributes"] = {"content_truncated": {**cut, "max_chars": cap}}
    return out


def capture(prompt: Any, completion: str | None) -> dict[str, Any] | None:
    """The ``extra`` entries storing prompt and completion, or ``None`` when
    content capture is off. Cheap on the calling thread: it snapshots the text;
    redaction runs on the worker."""
    if not _settings.SETTINGS.capture_content:
        return None
    text = None if prompt is None else prompt_text(prompt)
    return {"_content": Deferred(_store, text, completion)}
