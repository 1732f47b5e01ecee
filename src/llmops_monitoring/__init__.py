"""``llmops_monitoring``: the names of llamonitor-async, kept for its users.

llamonitor is the new name of this library. Code written for llamonitor-async
(seed 000 / seed 004) keeps working unchanged through this package, which
re-exports llamonitor's public API at the original's import paths; importing
it warns once (a ``DeprecationWarning``) that the new name is ``llamonitor``.
See docs/migrating.md.
"""

import warnings

from llamonitor import (
    CollectorRegistry,
    MetricCollector,
    MetricEvent,
    MonitorConfig,
    MonitoringWriter,
    StorageBackend,
    StorageConfig,
    __version__,
    flush,
    initialize_monitoring,
    monitor_llm,
    monitoring_session,
    monitoring_trace,
    shutdown_monitoring,
)

warnings.warn(
    "llmops_monitoring is now llamonitor: `import llamonitor` (same API); "
    "the llmops_monitoring names keep working",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CollectorRegistry",
    "MetricCollector",
    "MetricEvent",
    "MonitorConfig",
    "MonitoringWriter",
    "StorageBackend",
    "StorageConfig",
    "__version__",
    "flush",
    "initialize_monitoring",
    "monitor_llm",
    "monitoring_session",
    "monitoring_trace",
    "shutdown_monitoring",
]
