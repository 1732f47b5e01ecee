"""Reading events by duck typing: ours, LLMgine's own classes, or look-alikes.

An event's kind is found from the class names in its MRO (so a subclass of
``CommandResultEvent``, or LLMgine's ``llmgine.messages.events.CommandResultEvent``,
is one); its facts are read with ``getattr``, from the event or from the
command/result objects LLMgine's events carry.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from llamonitor._records import error_facts

KINDS: dict[str, str] = {
    "SessionStartEvent": "session_start",
    "SessionEndEvent": "session_end",
    "CommandStartedEvent": "command_started",
    "CommandResultEvent": "command_result",
    "LLMCallEvent": "llm_call",
    "LLMResponseEvent": "llm_response",
    "ToolExecuteResultEvent": "tool",
    "EventHandlerFailedEvent": "handler_failed",
}

_kind_cache: dict[type, str | None] = {}

# "ValueError: message" (LLMgine's CommandResult.error for an exception)
_TYPED_ERROR = re.compile(r"^([A-Za-z_][\w.]{0,200}): (.*)$", re.DOTALL)


def kind(event: Any) -> str | None:
    """The event's kind (a value of :data:`KINDS`), or ``None``."""
    cls = type(event)
    try:
        return _kind_cache[cls]
    except KeyError:
        pass
    found = next((KINDS[b.__name__] for b in cls.__mro__ if b.__name__ in KINDS), None)
    if len(_kind_cache) < 1024:
        _kind_cache[cls] = found
    return found


def text(value: Any) -> str | None:
    """A str of ``value`` (an enum's value), ``None`` for None or empty."""
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    s = str(value)
    return s or None


def command_id(event: Any) -> str | None:
    """The command id of a command started/result event."""
    value = getattr(event, "command_id", None)
    if value:
        return str(value)
    for owner in ("command", "command_result"):
        obj = getattr(event, owner, None)
        if obj is not None and getattr(obj, "command_id", None):
            return str(obj.command_id)
    return None


def command_type(event: Any) -> str:
    """The span name of a command: ``command_type``, else the command's class name."""
    value = getattr(event, "command_type", None)
    if value:
        return str(value)
    command = getattr(event, "command", None)
    if command is not None:
        return type(command).__name__
    return "command"


def command_outcome(event: Any) -> tuple[bool, str | None]:
    """``(success, error message)`` of a command result event."""
    result = getattr(event, "command_result", None)
    success = getattr(event, "success", None)
    error = getattr(event, "error", None)
    if result is not None:
        if success is None:
            success = getattr(result, "success", None)
        if error is None:
            error = getattr(result, "error", None)
    if success is None:
        success = error is None
    return bool(success), None if error is None else str(error)


def error_of(value: Any, default_type: str) -> tuple[str, str] | None:
    """``(error_type, error_message)`` of an exception or a message (``None``: none)."""
    if value is None or value is False:
        return None
    if isinstance(value, BaseException):
        return error_facts(value)
    message = str(value)
    m = _TYPED_ERROR.match(message)
    if m is not None:
        return m.group(1), m.group(2)[:2000]
    return default_type, message[:2000]


def wall_us(event: Any) -> int:
    """The event's time, UTC epoch microseconds (now if it has none readable).

    An ISO string (a naive one is local time, as LLMgine writes it), a
    ``datetime`` or epoch seconds.
    """
    ts = getattr(event, "timestamp", None)
    try:
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        if isinstance(ts, datetime):
            if ts.tzinfo is None:
                ts = ts.astimezone()  # local time -> aware
            delta = ts.astimezone(timezone.utc) - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            return int(ts * 1_000_000)
    except (ValueError, OverflowError, OSError):
        pass
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def perf_ns(event: Any) -> int | None:
    value = getattr(event, "perf_ns", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any) -> Any:
    """``value`` if it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value
