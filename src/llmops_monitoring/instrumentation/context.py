"""``llmops_monitoring.instrumentation.context``: sessions, traces and spans.

The context is llamonitor's (spans made here and by ``llamonitor`` link to each
other); :class:`SpanContext` only keeps the original's argument order.
"""

from __future__ import annotations

import llamonitor
from llamonitor import current_session_id, current_span, current_trace_id
from llamonitor.instrument import (
    clear_context,
    monitoring_session,
    monitoring_trace,
    set_session_id,
    set_trace_id,
)


class SpanContext(llamonitor.SpanContext):
    """llamonitor's span context with seed 000's positional order
    ``(session_id, trace_id, span_id, operation_name)``."""

    __slots__ = ()

    def __init__(
        self,
        session_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        operation_name: str | None = None,
    ) -> None:
        super().__init__(session_id, trace_id, operation_name, span_id=span_id)


def get_current_session_id() -> str | None:
    """The session id of the current context, or ``None``."""
    return current_session_id()


def get_current_trace_id() -> str | None:
    """The trace id of the current context, or ``None``."""
    return current_trace_id()


def get_current_span_id() -> str | None:
    """The id of the span around the caller, or ``None``."""
    span = current_span()
    return None if span is None else span.span_id


def get_current_parent_span_id() -> str | None:
    """The parent id of the span around the caller, or ``None``."""
    span = current_span()
    return None if span is None else span.parent_span_id


__all__ = [
    "SpanContext",
    "clear_context",
    "get_current_parent_span_id",
    "get_current_session_id",
    "get_current_span_id",
    "get_current_trace_id",
    "monitoring_session",
    "monitoring_trace",
    "set_session_id",
    "set_trace_id",
]
