"""The registry of instruments, and their snapshot as metric points."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pyarrow as pa

from llamonitor.metrics._children import CounterChild, DistributionChild, GaugeChild
from llamonitor.metrics._instruments import Metric
from llamonitor.metrics._schema import PointColumns, labels_text

OVERFLOW_METRIC = "llamonitor_metric_series_overflow_total"
"""Calls routed to a metric's ``other`` series (label ``metric``)."""

NAN_METRIC = "llamonitor_metric_nan_dropped_total"
"""NaN observations dropped (label ``metric``)."""


def instrument_source() -> str:
    """The ``source`` of this process's instrument points: ``instruments:<pid>``.

    Each process's counters are its own series (a forked child starts from
    zero), so several processes writing one store never mix their totals;
    queries and rollups sum the increases of every source.
    """
    return f"instruments:{os.getpid()}"


class Registry:
    """Instruments by name."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric[Any]] = {}
        self._lock = threading.Lock()
        self._last_now = 0.0

    def register(self, metric: Metric[Any]) -> None:
        """Add ``metric``.

        Raises:
            ValueError: a metric of that name is registered already (the
                functions ``counter()``, ``gauge()``... return it instead).
        """
        with self._lock:
            old = self._metrics.get(metric.name)
            if old is not None:
                raise ValueError(
                    f"metric {metric.name!r} is registered already as {old!r}: "
                    "llamonitor.metrics.counter()/gauge()/histogram()/summary() return "
                    "the registered one"
                )
            self._metrics[metric.name] = metric

    def get(self, name: str) -> Metric[Any] | None:
        with self._lock:
            return self._metrics.get(name)

    def metrics(self) -> list[Metric[Any]]:
        with self._lock:
            return list(self._metrics.values())

    def unregister(self, name: str) -> None:
        with self._lock:
            self._metrics.pop(name, None)

    def clear(self) -> None:
        """Forget every metric (tests)."""
        with self._lock:
            self._metrics.clear()

    def collect(self, now: float | None = None, source: str | None = None) -> pa.Table:
        """Every series as metric points at ``now`` (epoch seconds).

        Histograms' and summaries' interval aggregates are *taken*: the next
        collect reports what is observed after this one. A counter's first
        point is preceded by a zero at its creation time, so the increase
        over the first interval is exact. Snapshot times only increase: if
        the clock went back, a snapshot is stamped just after the previous one.
        """
        from llamonitor.metrics._fold import take
        from llamonitor.metrics._sketch import to_bytes

        now = time.time() if now is None else now
        if now <= self._last_now:
            # The wall clock went back (NTP, a VM resumed): keep each series'
            # points in order, or a counter would look reset and its increase
            # be counted twice. Time resumes once the clock catches up.
            now = self._last_now + 1e-6
        self._last_now = now
        src = source or instrument_source()
        points = PointColumns(0, src)

        def add(ts: float, *point: Any) -> None:
            points.add(int(ts * 1_000_000), *point)

        for metric in self.metrics():
            kind = metric.kind
            nan_total = 0
            for child in metric.children():
                if isinstance(child, CounterChild):
                    if not child.reported:
                        child.reported = True
                        add(
                            min(child.created, now - 1e-6),
                            metric.name,
                            kind,
                            child.labels_json,
                            0.0,
                        )
                    add(now, metric.name, kind, child.labels_json, child.get())
                elif isinstance(child, GaugeChild):
                    add(now, metric.name, kind, child.labels_json, child.get())
                elif isinstance(child, DistributionChild):
                    iv = take(child)
                    nan_total += child.nan_dropped
                    if iv is None or iv.count == 0:
                        add(now, metric.name, kind, child.labels_json, None, 0, 0.0)
                    else:
                        add(
                            now,
                            metric.name,
                            kind,
                            child.labels_json,
                            None,
                            iv.count,
                            iv.sum,
                            iv.min,
                            iv.max,
                            to_bytes(iv.sketch),
                        )
            if metric.overflowed:
                add(
                    now,
                    OVERFLOW_METRIC,
                    "counter",
                    labels_text({"metric": metric.name}),
                    float(metric.overflowed),
                )
            if nan_total:
                add(
                    now,
                    NAN_METRIC,
                    "counter",
                    labels_text({"metric": metric.name}),
                    float(nan_total),
                )
        return points.table()

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()
        for metric in self._metrics.values():
            metric._reinit_after_fork()


REGISTRY = Registry()
"""The default registry (``counter()``, ``Counter(...)`` register here)."""
