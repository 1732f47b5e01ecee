"""llamonitor: fast, lossless observability for LLM applications.

Quick start::

    from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig

    @monitor_llm(operation_name="generate_text", measure_text=True)
    async def generate(prompt: str) -> str: ...

    await initialize_monitoring(MonitorConfig.for_local_dev())
"""

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
from llamonitor.observatory import ModelProvider, Observatory, Session
from llamonitor.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    ConfigurationError,
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

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CollectorRegistry",
    "ConfigurationError",
    "ContextThreadPoolExecutor",
    "CostCollector",
    "Deferred",
    "ImageCollector",
    "ImageMetrics",
    "InMemoryBackend",
    "MetricCollector",
    "MetricEvent",
    "ModelPrice",
    "MultiTextCollector",
    "ModelProvider",
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
    "shutdown_monitoring",
    "uninstrument_anthropic",
    "uninstrument_openai",
]
