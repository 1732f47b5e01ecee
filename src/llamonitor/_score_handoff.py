"""The hand-off of scores between the code that gives them (``llamonitor.score``,
``SpanContext.score``) and the transport that stores them.

Imports neither side: the running writer is looked up in ``sys.modules`` and
the score transport imported by name when a score is given (as the writer
imports the server), so ``instrument`` and ``quality`` never import
``transport``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

WRITER_MODULE = "llamonitor.transport.writer"
TRANSPORT_MODULE = "llamonitor.transport._scores"


def submit(row: dict[str, Any]) -> bool:
    """Queue a validated score row for the running writer's stores.

    Returns False (never raises) when monitoring is off or the queue is full.
    """
    try:
        writer_module = sys.modules.get(WRITER_MODULE)
        writer = None if writer_module is None else writer_module.get_writer()
        if writer is None or getattr(writer, "_pipeline", None) is None:
            return False
        ok: bool = importlib.import_module(TRANSPORT_MODULE).submit(writer, row)
        return ok
    except Exception as exc:
        from llamonitor._internal import report_internal_error

        report_internal_error("score", exc)
        return False
