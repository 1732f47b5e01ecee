"""llamonitor: fast, lossless observability for LLM applications.

Quick start::

    from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig

    @monitor_llm(operation_name="generate_text", measure_text=True)
    async def generate(prompt: str) -> str: ...

    await initialize_monitoring(MonitorConfig.for_local_dev())
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if _os.environ.get("LLAMONITOR_PARENT_CONFIG"):
    # A child of a monitoring process: its first span may start monitoring from
    # the parent's configuration (llamonitor.transport._children). Here, because
    # every use of llamonitor imports this package first.
    from llamonitor.transport._children import install_inherited as _install_inherited

    _install_inherited()

if TYPE_CHECKING:
    from llamonitor._records import Deferred
    from llamonitor.instrument import (
        CollectorRegistry,
        ContextThreadPoolExecutor,
        CostCollector,
        ImageCollector,
        MetricCollector,
        MultiTextCollector,
        SpanContext,
        TextCollector,
        current_session_id,
        current_span,
        current_trace_id,
        monitor_llm,
        monitoring_session,
        monitoring_trace,
        propagate_context,
    )
    from llamonitor.integrations import (
        instrument_anthropic,
        instrument_openai,
        uninstrument_anthropic,
        uninstrument_openai,
    )
    from llamonitor.llm import agent, current_agent
    from llamonitor.observability import (
        ObservabilityConfig,
        ObservabilityHandler,
        ObservabilityManager,
    )
    from llamonitor.observatory import ModelProvider, Observatory, Session
    from llamonitor.quality import score
    from llamonitor.schema import (
        SCHEMA,
        SCHEMA_VERSION,
        ConfigurationError,
        ExporterConfig,
        ImageMetrics,
        MetricEvent,
        ModelPrice,
        MonitorConfig,
        StorageConfig,
        TextMetrics,
        register_metrics,
    )
    from llamonitor.storage import InMemoryBackend, StorageBackend, register_backend
    from llamonitor.transport import (
        MonitoringWriter,
        flush,
        get_writer,
        initialize_monitoring,
        shutdown_monitoring,
    )

__version__ = "0.1.0"

# Imported at first use (see llamonitor._lazy): importing the package costs nothing more.
_EXPORTS: dict[str, str] = {
    "CollectorRegistry": "llamonitor.instrument",
    "ConfigurationError": "llamonitor.schema",
    "ExporterConfig": "llamonitor.schema",
    "ContextThreadPoolExecutor": "llamonitor.instrument",
    "CostCollector": "llamonitor.instrument",
    "Deferred": "llamonitor._records",
    "ImageCollector": "llamonitor.instrument",
    "ImageMetrics": "llamonitor.schema",
    "InMemoryBackend": "llamonitor.storage",
    "MetricCollector": "llamonitor.instrument",
    "MetricEvent": "llamonitor.schema",
    "ModelPrice": "llamonitor.schema",
    "ModelProvider": "llamonitor.observatory",
    "MonitorConfig": "llamonitor.schema",
    "MonitoringWriter": "llamonitor.transport",
    "MultiTextCollector": "llamonitor.instrument",
    "ObservabilityConfig": "llamonitor.observability",
    "ObservabilityHandler": "llamonitor.observability",
    "ObservabilityManager": "llamonitor.observability",
    "Observatory": "llamonitor.observatory",
    "SCHEMA": "llamonitor.schema",
    "SCHEMA_VERSION": "llamonitor.schema",
    "Session": "llamonitor.observatory",
    "SpanContext": "llamonitor.instrument",
    "StorageBackend": "llamonitor.storage",
    "StorageConfig": "llamonitor.schema",
    "TextCollector": "llamonitor.instrument",
    "TextMetrics": "llamonitor.schema",
    "agent": "llamonitor.llm",
    "current_agent": "llamonitor.llm",
    "current_session_id": "llamonitor.instrument",
    "current_span": "llamonitor.instrument",
    "current_trace_id": "llamonitor.instrument",
    "flush": "llamonitor.transport",
    "get_writer": "llamonitor.transport",
    "initialize_monitoring": "llamonitor.transport",
    "instrument_anthropic": "llamonitor.integrations",
    "instrument_openai": "llamonitor.integrations",
    "monitor_llm": "llamonitor.instrument",
    "monitoring_session": "llamonitor.instrument",
    "monitoring_trace": "llamonitor.instrument",
    "propagate_context": "llamonitor.instrument",
    "register_backend": "llamonitor.storage",
    "register_metrics": "llamonitor.schema",
    "score": "llamonitor.quality",
    "shutdown_monitoring": "llamonitor.transport",
    "uninstrument_anthropic": "llamonitor.integrations",
    "uninstrument_openai": "llamonitor.integrations",
}

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CollectorRegistry",
    "ConfigurationError",
    "ContextThreadPoolExecutor",
    "CostCollector",
    "Deferred",
    "ExporterConfig",
    "ImageCollector",
    "ImageMetrics",
    "InMemoryBackend",
    "MetricCollector",
    "MetricEvent",
    "ModelPrice",
    "MultiTextCollector",
    "ModelProvider",
    "ObservabilityConfig",
    "ObservabilityHandler",
    "ObservabilityManager",
    "Observatory",
    "Session",
    "MonitorConfig",
    "MonitoringWriter",
    "SpanContext",
    "StorageBackend",
    "StorageConfig",
    "TextCollector",
    "TextMetrics",
    "__version__",
    "agent",
    "current_agent",
    "current_session_id",
    "current_span",
    "current_trace_id",
    "flush",
    "get_writer",
    "initialize_monitoring",
    "instrument_anthropic",
    "instrument_openai",
    "monitor_llm",
    "monitoring_session",
    "monitoring_trace",
    "propagate_context",
    "register_backend",
    "register_metrics",
    "score",
    "shutdown_monitoring",
    "uninstrument_anthropic",
    "uninstrument_openai",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
