"""Taps: functions the primary sink calls with each Arrow table right after
it is durably written (the live tail of ``llamonitor serve`` in this process).

A tap runs on the sink's thread, so it must be quick (hand the table off and
return: tables are immutable, keeping a reference is safe). A tap that raises
is counted and logged once, and never affects the sink. With no tap, the sink
pays one truthiness test of a tuple per write.

This module imports nothing of ours, and lives beside ``_handoff`` (not in
``transport``) for the same reason: the transport calls the taps, the server
and ``metrics``' application collector register theirs, and none of them
imports another's package for it (DESIGN.md's table: ``metrics`` imports
only ``schema`` and ``storage``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Tap", "add_tap", "errors", "notify", "remove_tap"]

logger = logging.getLogger("llamonitor.transport")

Tap = Callable[[Any], None]
"""Called with a ``pyarrow.Table`` of spans just written by the primary sink."""

TAPS: tuple[Tap, ...] = ()
"""The registered taps (replaced, never mutated: readers need no lock)."""

_lock = threading.Lock()
_errors: dict[Tap, int] = {}


def add_tap(fn: Tap) -> None:
    """Call ``fn(table)`` after each write of the primary sink (idempotent)."""
    global TAPS
    with _lock:
        if fn not in TAPS:
            TAPS = (*TAPS, fn)


def remove_tap(fn: Tap) -> None:
    """Stop calling ``fn`` (no error if it is not registered)."""
    global TAPS
    with _lock:
        TAPS = tuple(t for t in TAPS if t != fn)


def errors() -> int:
    """Exceptions raised by taps so far (all taps)."""
    with _lock:
        return sum(_errors.values())


def notify(table: Any) -> None:
    """Hand ``table`` to every tap; a tap's exception is counted, logged once."""
    for fn in TAPS:
        try:
            fn(table)
        except Exception as exc:
            with _lock:
                n = _errors.get(fn, 0) + 1
                _errors[fn] = n
            if n == 1:
                logger.warning(
                    "llamonitor: a live tap failed (further failures are counted, not "
                    "logged): %r", exc, exc_info=exc,
                )
