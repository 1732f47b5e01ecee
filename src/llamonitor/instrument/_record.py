"""Recording spans that are not decorated calls (``with SpanContext(operation_name=...)``)."""

from __future__ import annotations

import threading
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import report_internal_error
from llamonitor._records import error_facts

MAX_BLOCK_SPECS = 10_000
"""Distinct block names whose ``Spec`` is cached; past that the cache starts
over, so names made per request cannot grow memory without bound."""

_specs: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def spec_for(operation_name: str, operation_type: str = "span") -> Any:
    """A shared ``Spec`` per (name, type), so blocks cost no more than calls."""
    key = (operation_name, operation_type)
    spec = _specs.get(key)
    if spec is None:
        from llamonitor.instrument._spec import Spec

        with _lock:
            if len(_specs) >= MAX_BLOCK_SPECS:
                _specs.clear()
            spec = _specs.setdefault(key, Spec(operation_name, operation_type))
    return spec


def record_block(
    span: Any, operation_name: str, t0: int, t1: int, exc: BaseException | None
) -> None:
    pipe = _handoff.ACTIVE
    if pipe is None:
        return
    try:
        error = None if exc is None else error_facts(exc)
        record = (spec_for(operation_name), span, t0, t1, error, None, None)
        if span.sampled:
            pipe.submit(record)
        else:
            pipe.count_sampled_out()
    except Exception as internal:
        report_internal_error("record_block", internal)
