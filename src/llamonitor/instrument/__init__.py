"""Instrumentation: the decorator, the span context and the collectors."""

from llamonitor.instrument._context import (
    ContextThreadPoolExecutor,
    SpanContext,
    clear_context,
    current_session_id,
    current_span,
    current_trace_id,
    monitoring_session,
    monitoring_trace,
    propagate_context,
    set_session_id,
    set_trace_id,
)
from llamonitor.instrument._decorator import monitor_llm
from llamonitor.instrument.collectors import (
    CollectorRegistry,
    CostCollector,
    ImageCollector,
    MetricCollector,
    MultiTextCollector,
    TextCollector,
)

__all__ = [
    "CollectorRegistry",
    "ContextThreadPoolExecutor",
    "CostCollector",
    "ImageCollector",
    "MetricCollector",
    "MultiTextCollector",
    "SpanContext",
    "TextCollector",
    "clear_context",
    "current_session_id",
    "current_span",
    "current_trace_id",
    "monitor_llm",
    "monitoring_session",
    "monitoring_trace",
    "propagate_context",
    "set_session_id",
    "set_trace_id",
]
