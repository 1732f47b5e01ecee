"""Helpers for testing code that uses llamonitor (and for llamonitor's own tests).

- :func:`capture_spans`: monitoring into memory for the duration of a block.
- :func:`swallowed_errors`: every error monitoring swallowed inside a block, so
  a test can fail on silent internal failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llamonitor import _internal
from llamonitor.schema.config import MonitorConfig, StorageConfig
from llamonitor.storage.memory import InMemoryBackend
from llamonitor.transport.writer import initialize_monitoring, shutdown_monitoring


@contextmanager
def capture_spans(**config: Any) -> Iterator[InMemoryBackend]:
    """Record spans into an :class:`InMemoryBackend` while the block runs.

    The backend is complete when the block exits (monitoring is flushed and
    shut down then). Extra keyword arguments go to ``MonitorConfig``::

        with capture_spans() as spans:
            my_decorated_function()
        assert spans.rows()[0]["operation_name"] == "my_decorated_function"
    """
    backend = InMemoryBackend()
    storage = StorageConfig(backend=backend, flush_interval_seconds=0.05)
    initialize_monitoring(MonitorConfig(storage=storage, **config))
    try:
        yield backend
    finally:
        shutdown_monitoring(10.0)


@contextmanager
def swallowed_errors() -> Iterator[list[tuple[str, BaseException]]]:
    """Collect ``(kind, exception)`` of every error monitoring swallowed in the block."""
    errors = _internal.start_collecting()
    try:
        yield errors
    finally:
        _internal.stop_collecting()
