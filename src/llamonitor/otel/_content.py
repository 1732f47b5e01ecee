"""Content capture and redaction for the in-process processor's rows: the
same ``MonitorConfig.capture_content`` and redaction rules as decorated code
(``llamonitor.llm.content``), applied on the processor's thread.

- capture off (the default): ``prompt_content`` / ``completion_content`` are
  dropped (``prompt_hash`` stays, as for decorated code), and so are the
  content attributes instrumentations put beside them (OpenInference's
  ``llm.input_messages.*``, OpenLLMetry's ``gen_ai.prompt.*``...);
- capture on: both columns, and those attributes' text, pass through the
  configured redactor (built-in rules, ``redact_patterns``, ``redactor``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from llamonitor.llm import _settings as llm_settings

CONTENT_PREFIXES: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "llm.prompt_template",
    "input.value",
    "output.value",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "retrieval.documents",
    "embedding.embeddings",
)
"""Attribute names (and prefixes of flattened ones) that carry prompt or
completion text."""

CONTENT_KEYS: frozenset[str] = frozenset(("request_data", "response_data"))
"""Attributes that carry content under this exact name: Logfire's JSON of the
request (its messages) and of the response (its choices). The receiver still
reads the model and the token counts out of them before they are dropped."""

_COLUMNS = ("prompt_content", "completion_content")


def is_content(key: str) -> bool:
    return key.startswith(CONTENT_PREFIXES) or key in CONTENT_KEYS


def _redacted(value: Any, redact: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    return value


def apply_content_policy(
    row: dict[str, Any], *, capture: bool | None = None, redact: Any = None,
    redacted: bool = False,
) -> None:
    """Drop or redact the content of one stored-form row, in place.

    Args:
        capture, redact: the policy (default: the active ``MonitorConfig``'s).
        redacted: the text was redacted already, before the mapping cut it
            (``llamonitor.otel._redact.redact_request``): only drop it when
            capture is off.
    """
    if capture is None:
        settings = llm_settings.SETTINGS
        capture, redact = settings.capture_content, settings.redact
    if redacted:
        redact = None
    for column in _COLUMNS:
        text = row.get(column)
        if text is None:
            continue
        if not capture:
            del row[column]
        elif redact is not None:
            row[column] = redact(text)
    custom = row.get("custom_attributes")
    if custom:
        row["custom_attributes"] = custom_content_policy(custom, capture, redact)


_MAY_HOLD_CONTENT = re.compile(
    '"(?:' + "|".join(map(re.escape, CONTENT_PREFIXES)) + ')|"otel\\.events"'
    + "".join(f'|"{re.escape(k)}"' for k in sorted(CONTENT_KEYS))
)


def has_content(custom: str) -> bool:
    """``custom_attributes`` JSON that may hold content (one regex search for
    a content key or span events)."""
    return _MAY_HOLD_CONTENT.search(custom) is not None


def custom_content_policy(custom: str, capture: bool, redact: Any) -> str:
    """``custom_attributes`` JSON with its content attributes (and those of
    its span events) dropped (capture off) or passed through ``redact``."""
    if (capture and redact is None) or not has_content(custom):
        return custom
    attrs = json.loads(custom)
    if not isinstance(attrs, dict):
        return custom
    changed = False
    for key in [k for k in attrs if is_content(k)]:
        changed = True
        if capture:
            attrs[key] = _redacted(attrs[key], redact)
        else:
            del attrs[key]
    for event in attrs.get("otel.events") or ():
        changed = _event_content(event, capture, redact) or changed
    if not capture and "content_truncated" in attrs:
        del attrs["content_truncated"]
        changed = True
    return json.dumps(attrs, ensure_ascii=False, default=repr) if changed else custom


def is_content_event(name: Any) -> bool:
    """Events that carry a prompt or a completion (``gen_ai.content.prompt``,
    ``gen_ai.user.message``, ``gen_ai.choice``...): every attribute is content."""
    return isinstance(name, str) and name.startswith("gen_ai.") and (
        name.startswith("gen_ai.content.")
        or name.endswith((".message", ".details"))
        or name == "gen_ai.choice"
    )


def _event_content(event: Any, capture: bool, redact: Any) -> bool:
    """Drop or redact the content attributes of one stored span event, in place."""
    if not isinstance(event, dict) or not isinstance(event.get("attributes"), dict):
        return False
    attributes: dict[str, Any] = event["attributes"]
    whole = is_content_event(event.get("name"))
    keys = [k for k in attributes if whole or is_content(k)]
    for key in keys:
        if capture:
            attributes[key] = _redacted(attributes[key], redact)
        else:
            del attributes[key]
    return bool(keys)
