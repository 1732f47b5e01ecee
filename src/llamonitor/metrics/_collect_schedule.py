"""Runs each collector on its own interval, on one daemon thread, and hands
each collection's points (a ``METRIC_SCHEMA`` table) to a sink.

A collector that raises is counted and logged once, and the others go on;
one slower than its interval is counted as an overrun and its missed ticks
are skipped (no burst to catch up). The thread is restarted in a forked
child at the first use there. Time is injectable: ``run_due(now)`` runs what
is due at ``now``, so tests drive it with their own clock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamonitor.metrics._collect_base import MetricCollector, points_table

__all__ = ["MIN_INTERVAL_SECONDS", "CollectorScheduler", "CollectorStats"]

logger = logging.getLogger("llamonitor.metrics")

MIN_INTERVAL_SECONDS = 0.05
"""The shortest interval accepted (a guard against a busy loop)."""

PointSink = Callable[[Any], Any]
"""Called with each collection's ``pyarrow.Table`` of points."""


@dataclass
class CollectorStats:
    """What the scheduler counted for one collector."""

    interval_seconds: float
    collections: int = 0
    points: int = 0
    errors: int = 0
    overruns: int = 0
    skipped_ticks: int = 0
    cpu_seconds: float = 0.0
    last_duration_seconds: float = 0.0
    last_error: str | None = None


@dataclass
class _Entry:
    collector: MetricCollector
    interval: float
    due: float
    stats: CollectorStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = CollectorStats(self.interval)


class CollectorScheduler:
    """Collectors, each on its own interval, on one thread.

    Args:
        sink: called with each collection's point table (on the collector
            thread); an exception from it is counted and logged once.
        clock: monotonic seconds (tests pass their own and call :meth:`run_due`).
        wall: seconds since the epoch (the points' timestamps).
    """

    def __init__(self, sink: PointSink, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._sink = sink
        self._clock = clock
        self._wall = wall
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wanted = False
        self.sink_errors = 0
        self._latest: dict[int, Any] = {}  # entry id -> its last collection's points
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def add(self, collector: MetricCollector, interval_seconds: float | None = None) -> None:
        """Collect ``collector`` every ``interval_seconds`` (default: its own
        ``default_interval_seconds``); the first collection is due at once.

        Raises:
            ValueError: the interval is below :data:`MIN_INTERVAL_SECONDS`.
        """
        interval = (collector.default_interval_seconds if interval_seconds is None
                    else float(interval_seconds))
        if not interval >= MIN_INTERVAL_SECONDS:
            raise ValueError(f"interval of collector {collector.name!r} must be at least "
                             f"{MIN_INTERVAL_SECONDS} s, got {interval_seconds!r}")
        with self._lock:
            self._entries.append(_Entry(collector, interval, self._clock()))
        self._wake.set()

    @property
    def collectors(self) -> list[MetricCollector]:
        """The collectors, in the order added."""
        with self._lock:
            return [e.collector for e in self._entries]

    def latest(self) -> list[Any]:
        """The point table of each collector's last collection (for Prometheus)."""
        with self._lock:
            return [self._latest[id(e)] for e in self._entries if id(e) in self._latest]

    def stats(self) -> dict[str, CollectorStats]:
        """Counters per collector (by name; a repeated name gets ``#2``...)."""
        out: dict[str, CollectorStats] = {}
        with self._lock:
            for e in self._entries:
                key, n = e.collector.name, 2
                while key in out:
                    key, n = f"{e.collector.name}#{n}", n + 1
                out[key] = e.stats
        return out

    def run_due(self, now: float | None = None) -> float:
        """Run every collector due at ``now`` (default: the clock).

        Returns:
            Seconds from ``now`` until the next collection is due.
        """
        now = self._clock() if now is None else now
        with self._lock:
            due = [e for e in self._entries if e.due <= now]
        for e in due:
            self._run(e)
            e.due += e.interval
            if e.due <= now:  # late (a slow collector, a suspended process): skip
                missed = int((now - e.due) // e.interval) + 1
                e.stats.skipped_ticks += missed
                e.due += missed * e.interval
        with self._lock:
            nxt = min((e.due for e in self._entries), default=now + 1.0)
        return max(0.0, nxt - now)

    def _run(self, e: _Entry) -> None:
        st = e.stats
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            metrics = e.collector.collect()
            table = points_table(metrics, source=e.collector.name, now=self._wall())
        except Exception as exc:
            st.errors += 1
            st.last_error = f"{type(exc).__name__}: {exc}"
            if st.errors == 1:
                logger.warning("llamonitor: metric collector %r failed (further failures are "
                               "counted, not logged): %r", e.collector.name, exc, exc_info=exc)
            table = None
        finally:
            st.collections += 1
            st.last_duration_seconds = time.perf_counter() - t0
            st.cpu_seconds += time.thread_time() - c0
            if st.last_duration_seconds > e.interval:
                st.overruns += 1
        if table is None or table.num_rows == 0:
            return
        with self._lock:
            self._latest[id(e)] = table
        st.points += table.num_rows
        try:
            self._sink(table)
        except Exception as exc:
            self.sink_errors += 1
            if self.sink_errors == 1:
                logger.warning("llamonitor: storing metric points failed (further failures "
                               "are counted, not logged): %r", exc, exc_info=exc)

    # -- the thread ----------------------------------------------------------
    def start(self) -> None:
        """Start the collector thread (idempotent)."""
        with self._lock:
            self._wanted = True
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._wake.clear()
            self._thread = threading.Thread(target=self._loop, name="llamonitor-collectors",
                                            daemon=True)
            self._pid = os.getpid()
        try:
            self._thread.start()
        except RuntimeError:  # interpreter shutting down
            self._thread = None

    def _loop(self) -> None:
        while not self._stop:
            try:
                wait = self.run_due()
            except Exception as exc:  # never kill the thread
                logger.warning("llamonitor: the collector thread failed: %r", exc, exc_info=exc)
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self, timeout: float = 5.0, *, close: bool = True) -> None:
        """Stop the thread (idempotent); ``close`` the collectors too."""
        with self._lock:
            self._wanted = False
            self._stop = True
            thread = self._thread
            self._thread = None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if close:
            for c in self.collectors:
                try:
                    c.close()
                except Exception as exc:
                    logger.warning("llamonitor: closing collector %r failed: %r", c.name, exc)

    @property
    def running(self) -> bool:
        """Whether the collector thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    def _after_fork(self) -> None:
        # The child has no collector thread; locks may be held by the parent's.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if self._wanted:
            self.start()


def _after_fork(ref: weakref.ref[CollectorScheduler]) -> None:
    sched = ref()
    if sched is not None:
        try:
            sched._after_fork()
        except Exception:  # never fail a fork
            pass
