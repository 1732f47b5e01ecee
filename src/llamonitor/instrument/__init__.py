"""Instrumentation: the decorator, the span context and the collectors."""

from llamonitor.instrument._context import (
    ContextThreadPoolExecutor,
    SpanContext,
    current_session_id,
    current_span,
    current_trace_id,
    monitoring_session,
    monitoring_trace,
    propagate_context,
)
from llamonitor.instrument._decorator import monitor_llm
from llamonitor.instrument.collectors import (
    CollectorRegistry,
    ImageCollector,
    MetricCollector,
    TextCollector,
)

__all__ = [
    "CollectorRegistry",
    "ContextThreadPoolExecutor",
    "ImageCollector",
    "MetricCollector",
    "SpanContext",
    "TextCollector",
    "current_session_id",
    "current_span",
    "current_trace_id",
    "monitor_llm",
    "monitoring_session",
    "monitoring_trace",
    "propagate_context",
]
