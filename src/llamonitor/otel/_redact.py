"""The content policy of decorated code, applied to spans that arrive as OTLP
(the receiver of ``llamonitor serve`` / ``collect``) or through the in-process
``SpanProcessor``.

Two steps, so that no text is cut before it is redacted:

1. :func:`redact_request`, *before* the mapping, when capture is on and there
   are redaction rules: every content attribute (``gen_ai.input.messages``,
   ``input.value``, ``llm.input_messages.*``..., see
   :data:`~llamonitor.otel._content.CONTENT_PREFIXES`, and every attribute of
   a content event such as ``gen_ai.content.prompt``) of the decoded
   ``ExportTraceServiceRequest`` is redacted in place, whole. Only then does
   the mapping cut it (to ``MAX_VALUE_CHARS``, the prompt and completion
   columns to ``content_max_chars``): a secret that straddles a cut is still
   found. A value longer than what the mapping keeps is redacted on its first
   ``MAX_VALUE_CHARS`` + a margin, and the margin's image is dropped, so the
   cost is bounded by what is stored, not by what was sent. Logfire's
   ``request_data`` / ``response_data`` JSON (up to ``MAX_JSON_PARSE_CHARS``)
   is redacted value by value instead, its ``model`` excepted: the mapping
   reads the model and the token counts out of the whole JSON, and a dated
   model name (``gpt-4o-mini-2024-07-18``) looks like a phone number to the
   built-in rules.
2. :func:`apply_to_columns` (the receiver) / ``_content.apply_content_policy``
   (the processor), *after* the mapping, when capture is off: the
   ``prompt_content`` / ``completion_content`` columns and the content
   attributes are dropped; ``prompt_hash`` stays, as for decorated code.

With capture on and no rules (``redact_builtin=False``, no patterns, no
``redactor``) content is stored as sent, cut to the limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamonitor._internal import report_internal_error
from llamonitor.llm import _settings as llm_settings
from llamonitor.otel._content import (
    CONTENT_KEYS,
    custom_content_policy,
    has_content,
    is_content,
    is_content_event,
)
from llamonitor.otel._values import (
    MAX_ATTRIBUTES,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_JSON_PARSE_CHARS,
    MAX_VALUE_CHARS,
)

MARGIN_CHARS = 256
"""Text redacted past a cut (and dropped after), so a secret that straddles
the cut is still recognized."""

REDACTION_FAILED = "[REDACTION FAILED]"
"""What is stored instead of a text the user's ``redactor`` raised on."""


@dataclass(frozen=True)
class ContentPolicy:
    """Whether content is stored (``capture``), and the rules it passes through."""

    capture: bool = False
    redact: Callable[[str], str] | None = None

    @classmethod
    def of(cls, config: Any) -> ContentPolicy:
        """The policy of a ``MonitorConfig`` (``capture_content``, ``redact_*``)."""
        from llamonitor.llm.content import make_redactor

        return cls(
            bool(config.capture_content),
            make_redactor(config.redact_builtin, config.redact_patterns, config.redactor),
        )

    @classmethod
    def current(cls) -> ContentPolicy:
        """The policy of the running monitoring (``initialize_monitoring``)."""
        settings = llm_settings.SETTINGS
        return cls(settings.capture_content, settings.redact)

    @property
    def redacts(self) -> bool:
        """Content is stored, through rules: :func:`redact_request` has work."""
        return self.capture and self.redact is not None


def redact_text(text: str, redact: Callable[[str], str]) -> str:
    """``redact(text)``, on at most what the mapping keeps of it (plus a cut
    mark beyond that, so the cut is still counted). Never raises."""
    try:
        limit = MAX_VALUE_CHARS + 2 * MARGIN_CHARS
        if len(text) <= limit:
            return redact(text)
        # The margin's image may hold half a secret: drop it. What is left is
        # still longer than the mapping keeps, so it is cut (and counted) there.
        return redact(text[: limit + 1])[: -2 * MARGIN_CHARS]
    except Exception as exc:  # the user's redactor: fail closed, never raise
        report_internal_error("otel_redact", exc)
        return REDACTION_FAILED


def redact_request(request: Any, policy: ContentPolicy) -> bool:
    """Redact the content attributes of a decoded ``ExportTraceServiceRequest``
    in place (spans and their events; what the mapping reads of them).

    Returns:
        True if a value changed (the request's original bytes are stale).
    """
    redact = policy.redact
    if not policy.capture or redact is None:
        return False
    changed = False
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs = span.attributes
                for kv in attrs[:MAX_ATTRIBUTES] if len(attrs) > MAX_ATTRIBUTES else attrs:
                    if kv.key in CONTENT_KEYS and kv.value.WhichOneof("value") == "string_value":
                        changed = _redact_logfire(kv.value, redact) or changed
                    elif is_content(kv.key):
                        changed = _redact_value(kv.value, redact, 0) or changed
                for event in span.events:
                    whole = is_content_event(event.name)
                    for kv in event.attributes[:MAX_ATTRIBUTES]:
                        if whole or is_content(kv.key):
                            changed = _redact_value(kv.value, redact, 0) or changed
    return changed


def _redact_logfire(value: Any, redact: Callable[[str], str]) -> bool:
    """Redact Logfire's ``request_data`` / ``response_data`` (an ``AnyValue``
    string of JSON) value by value, whole, its top-level ``model`` kept: the
    mapping parses the whole JSON (up to ``MAX_JSON_PARSE_CHARS``) for the
    model and the tokens before it cuts the stored value. Text that is no such
    JSON is redacted as any content."""
    text: str = value.string_value
    parsed: Any = None
    if len(text) <= MAX_JSON_PARSE_CHARS and text.startswith("{"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
    if not isinstance(parsed, dict):
        return _redact_value(value, redact, 0)
    try:
        kept = {
            k: v if k == "model" and isinstance(v, str) else _redact_leaves(v, redact)
            for k, v in parsed.items()
        }
        new = json.dumps(kept, ensure_ascii=False)
    except RecursionError:  # nested deeper than json.loads minded: as any content
        return _redact_value(value, redact, 0)
    if new != text:
        value.string_value = new
        return True
    return False


def _redact_leaves(obj: Any, redact: Callable[[str], str]) -> Any:
    """A parsed JSON value with every string in it redacted (keys kept)."""
    if isinstance(obj, str):
        return redact_text(obj, redact)
    if isinstance(obj, list):
        return [_redact_leaves(v, redact) for v in obj]
    if isinstance(obj, dict):
        return {k: _redact_leaves(v, redact) for k, v in obj.items()}
    return obj


def _redact_value(value: Any, redact: Callable[[str], str], depth: int) -> bool:
    """Redact the strings of one ``AnyValue`` (within the mapping's limits)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        new = redact_text(text, redact)
        if new != text:
            value.string_value = new
            return True
        return False
    if depth >= MAX_DEPTH:
        return False
    changed = False
    if kind == "array_value":
        for item in value.array_value.values[:MAX_ITEMS]:
            changed = _redact_value(item, redact, depth + 1) or changed
    elif kind == "kvlist_value":
        for kv in value.kvlist_value.values[:MAX_ITEMS]:
            changed = _redact_value(kv.value, redact, depth + 1) or changed
    return changed


def apply_to_columns(columns: dict[str, list[Any]], policy: ContentPolicy) -> None:
    """The receiver's second step, on a request's mapped columns
    (``MappedSpans.columns``), in place: with capture off, drop the prompt and
    completion columns and the content attributes. (With capture on the text
    was redacted by :func:`redact_request` already.) Costs one regex search a
    distinct ``custom_attributes`` text of the request (most repeat)."""
    if policy.capture:
        return
    columns.pop("prompt_content", None)
    columns.pop("completion_content", None)
    custom = columns.get("custom_attributes")
    if not custom:
        return
    seen: dict[str, str | None] = {}
    for i, text in enumerate(custom):
        if not text:
            continue
        if text in seen:
            kept = seen[text]
        else:
            kept = seen[text] = _without_content(text) if has_content(text) else text
        if kept is not text:
            custom[i] = kept


def _without_content(text: str) -> str | None:
    try:
        return custom_content_policy(text, False, None)
    except Exception as exc:  # JSON we wrote: a failure here is a bug
        report_internal_error("otel_content", exc)
        return None
