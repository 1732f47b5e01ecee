"""Seed 001's event API, for frameworks with a message bus.

::

    from llamonitor.observability import ObservabilityManager, SpanHandler

    manager = ObservabilityManager()          # LLMOPS_OBSERVABILITY_* settings
    manager.register_handler(SpanHandler())   # events -> spans in llamonitor's store
    bus = MessageBus(observability=manager)   # the bus calls manager.observe_event(event)

Events (:class:`SessionStartEvent`, :class:`CommandStartedEvent`,
:class:`LLMCallEvent`...) carry LLMgine's names and fields; ``observe_event``
only queues them, each handler on its own thread. See docs/events.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.observability._config import ObservabilityConfig
    from llamonitor.observability._events import (
        Command,
        CommandResult,
        CommandResultEvent,
        CommandStartedEvent,
        Event,
        EventHandlerFailedEvent,
        LLMCallEvent,
        LLMResponseEvent,
        SessionEndEvent,
        SessionStartEvent,
        ToolExecuteResultEvent,
    )
    from llamonitor.observability._handlers import (
        ConsoleEventHandler,
        JSONLFileEventHandler,
        SyncConsoleEventHandler,
        SyncFileEventHandler,
    )
    from llamonitor.observability._manager import ObservabilityManager
    from llamonitor.observability._runner import ObservabilityHandler
    from llamonitor.observability._spans import SAMPLE_RATE_KEY, SpanHandler

_EVENTS = "llamonitor.observability._events"
_HANDLERS = "llamonitor.observability._handlers"

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "Command": _EVENTS,
    "CommandResult": _EVENTS,
    "CommandResultEvent": _EVENTS,
    "CommandStartedEvent": _EVENTS,
    "ConsoleEventHandler": _HANDLERS,
    "Event": _EVENTS,
    "EventHandlerFailedEvent": _EVENTS,
    "JSONLFileEventHandler": _HANDLERS,
    "LLMCallEvent": _EVENTS,
    "LLMResponseEvent": _EVENTS,
    "ObservabilityConfig": "llamonitor.observability._config",
    "ObservabilityHandler": "llamonitor.observability._runner",
    "ObservabilityManager": "llamonitor.observability._manager",
    "SAMPLE_RATE_KEY": "llamonitor.observability._spans",
    "SessionEndEvent": _EVENTS,
    "SessionStartEvent": _EVENTS,
    "SpanHandler": "llamonitor.observability._spans",
    "SyncConsoleEventHandler": _HANDLERS,
    "SyncFileEventHandler": _HANDLERS,
    "ToolExecuteResultEvent": _EVENTS,
}

__all__ = [
    "SAMPLE_RATE_KEY",
    "Command",
    "CommandResult",
    "CommandResultEvent",
    "CommandStartedEvent",
    "ConsoleEventHandler",
    "Event",
    "EventHandlerFailedEvent",
    "JSONLFileEventHandler",
    "LLMCallEvent",
    "LLMResponseEvent",
    "ObservabilityConfig",
    "ObservabilityHandler",
    "ObservabilityManager",
    "SessionEndEvent",
    "SessionStartEvent",
    "SpanHandler",
    "SyncConsoleEventHandler",
    "SyncFileEventHandler",
    "ToolExecuteResultEvent",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
