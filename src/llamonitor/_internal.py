"""Guarding the SDK's own work: count, log once per kind, never raise.

Every piece of monitoring code that runs inside the application is wrapped by
:func:`report_internal_error` (in ``except`` blocks on the hot path) or
:func:`capture_internal_exceptions` (elsewhere). Tests can collect every
swallowed error with :func:`llamonitor.testing.swallowed_errors`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("llamonitor")

CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("llamonitor_span", default=None)
"""The active span (a ``SpanContext``), ``None``, or :data:`SUPPRESSED`."""

SUPPRESSED: Any = object()
"""Set as the current span where llamonitor's own code runs (the worker thread,
its log calls): decorated functions called there are not recorded, so the
library's work never feeds back into monitoring."""


@contextmanager
def suppressed() -> Iterator[None]:
    """Nothing called inside the block is monitored."""
    token = CURRENT.set(SUPPRESSED)
    try:
        yield
    finally:
        CURRENT.reset(token)


# Re-entrant: the garbage collector may finalize a decorated generator (which
# can report an error) while this thread holds the lock.
_lock = threading.RLock()
_counts: dict[str, int] = {}
_fail_silently = True
# When a list, every swallowed error is appended to it (the test fixture).
_collector: list[tuple[str, BaseException]] | None = None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # a parent thread may have held it at fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def set_fail_silently(value: bool) -> None:
    global _fail_silently
    _fail_silently = value


def report_internal_error(kind: str, exc: BaseException) -> None:
    """Count ``exc`` under ``kind``; log the first of each kind; re-raise if not silent."""
    with _lock:
        n = _counts.get(kind, 0) + 1
        _counts[kind] = n
        if _collector is not None:
            _collector.append((kind, exc))
    if n == 1:
        try:
            with suppressed():
                logger.warning(
                    "llamonitor: internal error in %s (further ones of this kind are "
                    "counted, not logged): %r",
                    kind,
                    exc,
                    exc_info=exc,
                )
        except Exception:
            pass
    if not _fail_silently:
        raise exc


@contextmanager
def capture_internal_exceptions(kind: str) -> Iterator[None]:
    """Swallow (count, log once) any ``Exception`` raised inside the block."""
    try:
        yield
    except Exception as exc:
        report_internal_error(kind, exc)


def internal_error_counts() -> dict[str, int]:
    """Swallowed errors so far, by kind."""
    with _lock:
        return dict(_counts)


def start_collecting() -> list[tuple[str, BaseException]]:
    global _collector
    with _lock:
        _collector = []
        return _collector


def stop_collecting() -> None:
    global _collector
    with _lock:
        _collector = None
