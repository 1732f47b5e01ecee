"""The hand-off between the hot path and the worker.

The one module that both ``llamonitor.instrument`` (which records spans) and
``llamonitor.transport`` (which ships them) import, and that imports neither,
so the arrows between the two point one way:

- :data:`ACTIVE`: the queue decorated functions submit records to (the
  transport's pipeline), or ``None`` when monitoring is off. Read on every
  decorated call, so it is a plain module attribute.
- ids: a private random generator, re-seeded in a forked child, and the
  time prefix of session and trace ids (:func:`refresh_id_time`).
- sampling: the fraction of traces kept, decided at each root span.
- :data:`external_parent`: where a span finds a nearer parent that another
  tracer made (an OpenTelemetry span, set by ``llamonitor.otel``).
- :data:`feeders`: sources that hold spans for the pipeline (the OTel span
  processor), flushed into it before ``flush`` and ``shutdown``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol


class Queue(Protocol):
    """What the hot path needs of the transport."""

    def submit(self, record: tuple[Any, ...]) -> bool: ...

    def count_sampled_out(self) -> None: ...


ACTIVE: Queue | None = None
"""The running pipeline; ``None`` when not monitoring."""


def activate(queue: Queue | None) -> None:
    """Make ``queue`` the one decorated functions submit to (``None``: stop)."""
    global ACTIVE
    ACTIVE = queue
    refresh_id_time()


# A private generator: drawing ids must not shift the stream of a user who
# seeded the global ``random``. Re-seeded in a forked child (also by the
# transport when it sees a new pid, for forks that skip the at-fork hooks).
_rng = random.Random()
getrandbits = _rng.getrandbits
uniform01 = _rng.random
os.register_at_fork(after_in_child=_rng.seed)


def reseed_ids() -> None:
    _rng.seed()


# Session and trace ids begin with the time, in milliseconds (48 bits, as in a
# UUIDv7; AWS X-Ray's trace ids also begin with it), then 80 random bits. So a
# database's indexes on them take new spans near one edge instead of on random
# pages: on PostgreSQL about a third of the server's CPU per span
# (benchmarks/bench_ids.py). The hot path does not read a clock for it: the
# prefix is refreshed by the worker at every batch and when monitoring starts,
# so it is the time of the last batch (ids stay unique by their random bits).
_MS_MASK = (1 << 48) - 1
ID_RANDOM2 = ((1 << 256) - 1) ^ (_MS_MASK << 208) ^ (_MS_MASK << 80)
"""The random bits of a session id and a trace id drawn together (256 bits)."""
id_time = 0
"""The time prefix of one 128-bit id: the milliseconds shifted left 80 bits."""
id_time2 = 0
"""The same for two ids drawn as one 256-bit number (at 208 and 80 bits)."""


def refresh_id_time() -> None:
    """Set the time prefix of new session and trace ids to now."""
    global id_time, id_time2
    ms = (time.time_ns() // 1_000_000) & _MS_MASK
    id_time, id_time2 = ms << 80, (ms << 208) | (ms << 80)


refresh_id_time()


sample_rate = 1.0
"""Fraction of traces recorded (``MonitorConfig.sample_rate``)."""


def set_sample_rate(rate: float) -> None:
    global sample_rate
    sample_rate = rate


ExternalParent = tuple[str, int, str, bool]
"""``(trace_id, parent span id, session_id, sampled)`` of a span from another
tracer that a new root span becomes the child of."""

ExternalParentFinder = Callable[..., ExternalParent | None]
"""``find()``: the span of another tracer around a new root span;
``find(inside)``: the one around a new child of llamonitor's ``inside``, only
if it began inside ``inside`` (so it is the nearer parent)."""

external_parent: ExternalParentFinder | None = None
"""Asked by a new span for the span of another tracer around it (see
:data:`ExternalParentFinder`); ``None`` when no bridge is installed (then a
span pays one attribute read for it). Must not raise."""


def set_external_parent(fn: ExternalParentFinder | None) -> None:
    """Install (or with ``None`` remove) :data:`external_parent`."""
    global external_parent
    external_parent = fn


feeders: list[Callable[[float], object]] = []
"""``feed(timeout_seconds)``: hand what the source holds to the running
pipeline now. Called by ``flush`` and before ``shutdown``, so what a source
held is written too; must not raise."""


def flush_feeders(deadline: float) -> None:
    """Hand every feeder's spans to the pipeline, all by ``deadline``
    (``time.monotonic()``): each feeder gets what is left of it."""
    for feed in list(feeders):
        try:
            feed(max(0.0, deadline - time.monotonic()))
        except Exception:  # a feeder's own failure is its to count
            pass
