"""Transport: the bounded queue, the worker thread and the sinks."""

from llamonitor.transport.writer import (
    MonitoringWriter,
    flush,
    get_writer,
    initialize_monitoring,
    shutdown_monitoring,
)

__all__ = [
    "MonitoringWriter",
    "flush",
    "get_writer",
    "initialize_monitoring",
    "shutdown_monitoring",
]
