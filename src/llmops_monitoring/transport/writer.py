"""``llmops_monitoring.transport.writer``: llamonitor's writer and lifecycle.

``initialize_monitoring``, ``MonitoringWriter.stop()``, ``.health_check()`` and
``.write_event()`` work awaited, as in seed 000, and called.
"""

from llamonitor import MonitoringWriter, flush, initialize_monitoring, shutdown_monitoring

__all__ = ["MonitoringWriter", "flush", "initialize_monitoring", "shutdown_monitoring"]
