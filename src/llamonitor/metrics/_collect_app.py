"""The ``application`` collector: the pipeline's own counters (what
``writer.health_check()`` reports, under the names the Prometheus exporter
uses) and rates derived from the spans the primary sink writes (spans/s,
errors/s, tokens/s, $/hour).

The spans come from a tap (``llamonitor._taps``): the primary sink
hands it each Arrow table right after writing it; the tap sums four columns
with Arrow compute (vectorized, a few microseconds a table) and returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from llamonitor.metrics._collect_base import Metric, MetricCollector

__all__ = ["APPLICATION_GROUPS", "ApplicationCollector", "SpanRates"]

APPLICATION_GROUPS: dict[str, str] = {
    "pipeline": "received, written, dropped by reason, queue and buffer size, spooled, "
                "retried, failed, replayed, per sink; internal errors",
    "spans": "spans, errors, tokens and cost: totals and per-second (cost: per hour) rates",
}
"""The metric groups (``metrics:``) this collector knows; the seed's
``evaluation_count``/``error_rate`` mean ``spans`` and ``queue_depth`` ``pipeline``."""

_ALIASES = {"evaluation_count": ("spans",), "error_rate": ("spans",),
            "queue_depth": ("pipeline",)}

_SINK_COUNTERS = (("llamonitor_events_total", "written"),
                  ("llamonitor_events_retried_total", "retried"),
                  ("llamonitor_events_spooled_total", "spooled_total"),
                  ("llamonitor_events_replayed_total", "replayed"),
                  ("llamonitor_sink_events_dropped_total", "dropped"))
_SINK_GAUGES = (("llamonitor_spooled_events", "spooled"),
                ("llamonitor_spool_bytes", "spool_bytes"),
                ("llamonitor_sink_pending", "pending"),
                ("llamonitor_sink_healthy", "healthy"),
                ("llamonitor_sink_outage", "outage"))

PIPELINE_NAMES = frozenset(
    {
        "llamonitor_running",
        "llamonitor_events_received_total",
        "llamonitor_queue_size",
        "llamonitor_buffer_size",
        "llamonitor_events_dropped_total",
        "llamonitor_worker_restarts_total",
        "llamonitor_internal_errors_total",
        "llamonitor_events_failed_total",
    }
    | {n for n, _ in _SINK_COUNTERS + _SINK_GAUGES}
)
"""The pipeline group's names: the ones the Prometheus exposition's own
pipeline collector (``export._collectors.PipelineCollector``) serves live, so
the collector points of that name are not exposed again."""


class SpanRates:
    """Running totals of the spans written (a tap: ``rates(table)``).

    Attributes are totals since it was made: ``spans``, ``errors``,
    ``input_tokens``, ``output_tokens``, ``cost_usd``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0

    def __call__(self, table: Any) -> None:
        import pyarrow.compute as pc

        names = table.schema.names
        n = table.num_rows
        errors = _sum(pc, table, "error", names, cast_bool=True)
        tin = _sum(pc, table, "input_tokens", names)
        tout = _sum(pc, table, "output_tokens", names)
        cost = _sum(pc, table, "cost_usd", names)
        with self._lock:
            self.spans += n
            self.errors += int(errors)
            self.input_tokens += int(tin)
            self.output_tokens += int(tout)
            self.cost_usd += float(cost)

    def totals(self) -> tuple[int, int, int, int, float]:
        """(spans, errors, input tokens, output tokens, cost in USD), read together."""
        with self._lock:
            return (self.spans, self.errors, self.input_tokens, self.output_tokens,
                    self.cost_usd)


def _sum(pc: Any, table: Any, column: str, names: list[str], cast_bool: bool = False) -> float:
    if column not in names:
        return 0
    col = table.column(column)
    if cast_bool:
        col = pc.cast(col, "int64")
    value = pc.sum(col).as_py()
    return value or 0


class ApplicationCollector(MetricCollector):
    """The pipeline's counters and the written spans' rates.

    Args:
        metrics: the groups (keys of :data:`APPLICATION_GROUPS` or the seed's
            names; default: all).
        writer: what ``health_check()`` is called on (default: the running
            writer, ``llamonitor.get_writer()``, looked up at each collection).
        clock: monotonic seconds (for the rates; tests pass their own).

    Raises:
        ValueError: an unknown group.
    """

    name: ClassVar[str] = "application"
    default_interval_seconds: ClassVar[float] = 10.0

    def __init__(self, metrics: Sequence[str] | None = None, *, writer: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        groups: set[str] = set()
        for m in (tuple(APPLICATION_GROUPS) if metrics is None else metrics):
            if m in _ALIASES:
                groups.update(_ALIASES[m])
            elif m in APPLICATION_GROUPS:
                groups.add(m)
            else:
                raise ValueError(f"unknown application metric group {m!r}; choose from "
                                 f"{sorted(APPLICATION_GROUPS) + sorted(_ALIASES)}")
        self.groups = frozenset(groups)
        self._writer = writer
        self._clock = clock
        self.rates = SpanRates()
        self._last: tuple[float, tuple[int, int, int, int, float]] | None = None
        if "spans" in self.groups:
            from llamonitor import _taps

            _taps.add_tap(self.rates)
            self._last = (clock(), self.rates.totals())

    def close(self) -> None:
        from llamonitor import _taps

        _taps.remove_tap(self.rates)

    def get_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "version": "1.0", "groups": sorted(self.groups)}

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        if "pipeline" in self.groups:
            self._pipeline(out)
        if "spans" in self.groups:
            self._spans(out)
        return out

    def _pipeline(self, out: list[Metric]) -> None:
        writer = self._writer
        if writer is None:
            import llamonitor

            writer = llamonitor.get_writer()
        if writer is None:
            return
        s = writer.health_check()
        out.append(Metric.gauge("llamonitor_running", int(bool(s.get("running")))))
        if not s.get("running") and "events_received" not in s:
            return
        out.append(Metric.counter("llamonitor_events_received_total", s["events_received"]))
        out.append(Metric.gauge("llamonitor_queue_size", s["queue_size"]))
        out.append(Metric.gauge("llamonitor_buffer_size", s["buffer_size"]))
        for reason, n in sorted(s.get("dropped", {}).items()):
            out.append(Metric.counter("llamonitor_events_dropped_total", n, {"reason": reason}))
        out.append(Metric.counter("llamonitor_worker_restarts_total", s.get("worker_restarts", 0)))
        for kind, n in sorted((s.get("internal_errors") or {}).items()):
            out.append(Metric.counter("llamonitor_internal_errors_total", n, {"kind": kind}))
        for sink, health in sorted(s.get("sinks", {}).items()):
            lab = {"sink": sink}
            for name, key in _SINK_COUNTERS:
                out.append(Metric.counter(name, health.get(key) or 0, lab))
            for name, key in _SINK_GAUGES:
                out.append(Metric.gauge(name, float(health.get(key) or 0), lab))
            for reason, n in sorted((health.get("failed_reasons") or {}).items()):
                out.append(Metric.counter("llamonitor_events_failed_total", n,
                                          {"sink": sink, "reason": reason}))

    def _spans(self, out: list[Metric]) -> None:
        now = self._clock()
        totals = self.rates.totals()
        spans, errors, tin, tout, cost = totals
        out.append(Metric.counter("llamonitor_spans_total", spans))
        out.append(Metric.counter("llamonitor_span_errors_total", errors))
        out.append(Metric.counter("llamonitor_tokens_total", tin, {"type": "input"}))
        out.append(Metric.counter("llamonitor_tokens_total", tout, {"type": "output"}))
        out.append(Metric.counter("llamonitor_cost_usd_total", cost, unit="usd"))
        assert self._last is not None
        then, before = self._last
        self._last = (now, totals)
        elapsed = now - then
        if elapsed <= 0:
            return
        d = [a - b for a, b in zip(totals, before, strict=True)]
        out.append(Metric.gauge("llamonitor_spans_per_second", d[0] / elapsed))
        out.append(Metric.gauge("llamonitor_errors_per_second", d[1] / elapsed))
        out.append(Metric.gauge("llamonitor_tokens_per_second", (d[2] + d[3]) / elapsed))
        out.append(Metric.gauge("llamonitor_cost_usd_per_hour", d[4] / elapsed * 3600.0,
                                unit="usd"))
