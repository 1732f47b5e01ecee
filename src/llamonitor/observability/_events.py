"""Seed 001's events (LLMgine's names and fields), for frameworks with a message bus.

Plain dataclasses, cheap to make on a bus's hot path; every field has a
default and is keyword-only. The field names are LLMgine's
(``llmgine.messages.events``, ``llmgine.bus.session``,
``llmgine.llm.tools.tool_events``, ``llmgine.llm.providers.events``), so code
that publishes LLMgine's events publishes these unchanged; the span handler
(:class:`~llamonitor.observability.SpanHandler`) also reads LLMgine's own
classes, by their names. What LLMgine's events lack for a span tree is added
under names of llamonitor's own: ``parent_id`` (the id of the command or LLM
call an event belongs to), ``duration_ms``, token counts and cost on
:class:`LLMCallEvent`.

``timestamp`` is an ISO 8601 string, as LLMgine's (but in UTC, with its
offset; LLMgine's local, naive times are read as local time).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any

DEFAULT_SESSION_ID = "BUS"
"""LLMgine's session of events published outside a session."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _new_id() -> str:
    return str(uuid.uuid4())


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it: dataclasses and objects as dicts, enums by
    value, exceptions as ``"Type: message"``, anything else by ``str``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Enum):
        return to_jsonable(value.value, depth + 1)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if depth >= 8:
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {
            f.name: to_jsonable(getattr(value, f.name, None), depth + 1)
            for f in fields(value)
            if f.repr
        }
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return to_jsonable(dump(), depth + 1)
        except Exception:
            pass
    return str(value)


@dataclass(kw_only=True)
class Event:
    """Base of every event (LLMgine's ``Event``).

    Args:
        event_id: unique id (a UUID string).
        timestamp: when it happened (ISO 8601, UTC).
        metadata: free-form facts, kept in the span's ``custom_attributes``.
        session_id: the session it belongs to (LLMgine's ``"BUS"`` outside one).
        parent_id: llamonitor's: the ``command_id`` or ``call_id`` this event
            belongs to (its span's parent); the session's innermost open
            command when not given.
    """

    event_id: str = field(default_factory=_new_id)
    timestamp: str = field(default_factory=_now_iso)
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = DEFAULT_SESSION_ID
    parent_id: str | None = None
    # A monotonic reading, for exact durations between two events of this process.
    perf_ns: int = field(default_factory=time.perf_counter_ns, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready, plus ``event_type`` (the class name)."""
        out: dict[str, Any] = to_jsonable(self)
        out["event_type"] = type(self).__name__
        return out

    @classmethod
    def from_dict(cls, event_dict: dict[str, Any]) -> Event:
        """An event of this class from :meth:`to_dict`'s fields (others ignored)."""
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in event_dict.items() if k in names})


@dataclass(kw_only=True)
class Command:
    """LLMgine's ``Command``: an action for one handler (subclass it)."""

    command_id: str = field(default_factory=_new_id)
    timestamp: str = field(default_factory=_now_iso)
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = DEFAULT_SESSION_ID


@dataclass(kw_only=True)
class CommandResult:
    """LLMgine's ``CommandResult``."""

    success: bool = True
    command_id: str = field(default_factory=_new_id)
    timestamp: str = field(default_factory=_now_iso)
    result: Any = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = DEFAULT_SESSION_ID


@dataclass(kw_only=True)
class SessionStartEvent(Event):
    """A session started: a new trace, its root span opened."""


@dataclass(kw_only=True)
class SessionEndEvent(Event):
    """A session ended: its root span closes (failed when ``error`` is set)."""

    error: BaseException | str | None = None


@dataclass(kw_only=True)
class CommandStartedEvent(Event):
    """A command started: a span opens.

    Args:
        command: the command (its ``command_id`` and class name are read).
        command_id: the command's id, when no ``command`` is given.
        command_type: the span's name (default: the command's class name).
    """

    command: Any = None
    command_id: str | None = None
    command_type: str | None = None


@dataclass(kw_only=True)
class CommandResultEvent(Event):
    """A command finished: its span closes, failed unless ``success``.

    Args:
        command_result: the result (``success``, ``command_id``, ``error``).
        command_id, success, error: when no ``command_result`` is given.
    """

    command_result: Any = None
    command_id: str | None = None
    success: bool | None = None
    error: str | None = None
    result: Any = None


@dataclass(kw_only=True)
class LLMCallEvent(Event):
    """An LLM call: an ``llm_call`` span.

    Published when the call has finished (with ``duration_ms``, counts or a
    completion), the span ends at ``timestamp``; published before it (none of
    those), the span stays open until the :class:`LLMResponseEvent` with the
    same ``call_id``. Cost is priced from the model and counts when not given.

    Args:
        model: the model asked for (LLMgine's ``model_id`` is read too).
        provider: ``openai``, ``anthropic``... (an enum: its value).
        payload: the request (``messages``/``prompt``, ``temperature``,
            ``max_tokens`` are read from it).
        prompt, completion: stored only with ``MonitorConfig(capture_content=True)``,
            redacted like the decorator's.
    """

    model: str | None = None
    model_id: str | None = None
    call_id: str = field(default_factory=_new_id)
    provider: Any = None
    payload: dict[str, Any] = field(default_factory=dict)
    operation_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    duration_ms: float | None = None
    time_to_first_token_ms: float | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    prompt: Any = None
    completion: str | None = None
    error: BaseException | str | None = None


@dataclass(kw_only=True)
class LLMResponseEvent(Event):
    """LLMgine's response to an :class:`LLMCallEvent` (same ``call_id``): closes
    its span; counts, model and completion are read from ``raw_response`` (an
    OpenAI or Anthropic response, or a dict of one) unless given."""

    call_id: str = ""
    raw_response: Any = None
    error: BaseException | str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    completion: str | None = None


@dataclass(kw_only=True)
class ToolExecuteResultEvent(Event):
    """A tool ran: a ``tool`` span (failed when ``execution_succeed`` is False
    or ``error`` is set), ending at ``timestamp``."""

    tool_manager_id: str = ""
    engine_id: str = ""
    execution_succeed: bool | None = None
    tool_info: dict[str, Any] = field(default_factory=dict)
    tool_args: dict[str, Any] = field(default_factory=dict)
    tool_result: Any = ""
    tool_name: str = ""
    tool_call_id: str = ""
    duration_ms: float | None = None
    error: BaseException | str | None = None


@dataclass(kw_only=True)
class EventHandlerFailedEvent(Event):
    """A handler failed on ``event``: a failed span (its ``error_type`` and
    ``error_message``) under the span the event belongs to. The manager makes
    one for every handler failure, for the other handlers."""

    event: Any = None
    handler: str | None = None
    exception: BaseException | None = None

    @property
    def handler_name(self) -> str | None:
        """LLMgine's OpenTelemetry handler's name for ``handler``."""
        return self.handler


EVENT_TYPES: tuple[type[Event], ...] = (
    SessionStartEvent,
    SessionEndEvent,
    CommandStartedEvent,
    CommandResultEvent,
    LLMCallEvent,
    LLMResponseEvent,
    ToolExecuteResultEvent,
    EventHandlerFailedEvent,
)
