"""Transport: the bounded queue, the worker thread and the sinks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.transport.writer import (
        MonitoringWriter,
        flush,
        get_writer,
        initialize_monitoring,
        shutdown_monitoring,
    )

# Imported at first use (see llamonitor._lazy): a ``multiprocessing`` child's
# check of its parent's configuration (``_children``) costs no more than itself.
_EXPORTS: dict[str, str] = {
    "MonitoringWriter": "llamonitor.transport.writer",
    "flush": "llamonitor.transport.writer",
    "get_writer": "llamonitor.transport.writer",
    "initialize_monitoring": "llamonitor.transport.writer",
    "shutdown_monitoring": "llamonitor.transport.writer",
}

__all__ = [
    "MonitoringWriter",
    "flush",
    "get_writer",
    "initialize_monitoring",
    "shutdown_monitoring",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
