"""``prometheus_client`` collectors: the span metrics of a :class:`SpanMetrics`
and the pipeline's own metrics (read from its ``stats()`` at each scrape).

Imported only once ``prometheus_client`` is known to be installed
(``_prometheus.require_client``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go_float

from llamonitor import _handoff, _internal
from llamonitor.export._metric_state import FAMILIES, Family, SpanMetrics

__all__ = ["PipelineCollector", "SpanMetricsCollector"]


def floatToGoString(value: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``+Inf``)."""
    return str(_go_float(value))  # type: ignore[no-untyped-call]


def _histogram(family: Family) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        family.prom_name,
        family.description,
        labels=[lab.name for lab in family.labels],
        unit=family.prom_unit,
    )


class SpanMetricsCollector(Collector):
    """The GenAI metrics of the spans a :class:`SpanMetrics` was fed, and its
    own: label values and label sets folded past the caps, spans aggregated."""

    def __init__(self, state: SpanMetrics) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        """The families (no samples): a registry refuses a second collector of them."""
        for family in FAMILIES:
            if family.kind == "histogram":
                yield _histogram(family)
            else:
                yield CounterMetricFamily(family.prom_name, family.description, labels=[])
        yield CounterMetricFamily("llamonitor_metrics_spans", "", labels=[])

    def collect(self) -> Iterator[Metric]:
        snap = self.state.snapshot()
        for data in snap.families:
            family = data.family
            if family.kind == "histogram":
                metric = _histogram(family)
                les = [floatToGoString(b) for b in family.bounds] + ["+Inf"]
                cumulative = np.cumsum(data.bucket_counts, axis=1).tolist()
                for values, counts, total in zip(
                    data.label_values, cumulative, data.sums.tolist(), strict=True
                ):
                    metric.add_metric(list(values), list(zip(les, counts, strict=True)), total)
                yield metric
            else:
                counter = CounterMetricFamily(
                    family.prom_name,
                    family.description,
                    labels=[lab.name for lab in family.labels],
                )
                for values, total in zip(data.label_values, data.sums.tolist(), strict=True):
                    counter.add_metric(list(values), total)
                yield counter
        folded = CounterMetricFamily(
            "llamonitor_metrics_label_values_folded",
            "Span label values folded into 'other' past max_label_values, by label.",
            labels=["label"],
        )
        for label, n in snap.folded.items():
            folded.add_metric([label], n)
        yield folded
        series = CounterMetricFamily(
            "llamonitor_metrics_series_folded",
            "Observations whose label set folded into the all-'other' set past max_series, "
            "by metric.",
            labels=["metric"],
        )
        for name, n in snap.series_folded.items():
            series.add_metric([name], n)
        yield series
        held = GaugeMetricFamily(
            "llamonitor_metrics_label_values",
            "Distinct values each span label holds (at most max_label_values).",
            labels=["label"],
        )
        for label, n in snap.label_values.items():
            held.add_metric([label], n)
        yield held
        yield CounterMetricFamily(
            "llamonitor_metrics_spans", "Spans aggregated into these metrics.", value=snap.spans
        )


def _active_stats() -> dict[str, Any] | None:
    """The running pipeline's ``stats()``, or ``None`` when not monitoring."""
    stats = getattr(_handoff.ACTIVE, "stats", None)
    return stats() if callable(stats) else None


class PipelineCollector(Collector):
    """The transport's own metrics (seed 001's, ``llamonitor_`` prefixed), read
    from the running pipeline at each scrape; nothing when not monitoring.

    Args:
        stats: where the numbers come from (default: the running pipeline's
            ``stats()``, the ``health_check()`` counters).
    """

    def __init__(self, stats: Callable[[], dict[str, Any] | None] = _active_stats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        """Nothing: a registry need not collect (read the pipeline) to register it."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception as exc:  # a scrape never fails for the pipeline's sake
            _internal.report_internal_error("prometheus_pipeline_stats", exc)
            stats = None
        yield from _internal_errors()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "llamonitor_running", "1 while the pipeline runs.", value=int(bool(stats["running"]))
        )
        yield CounterMetricFamily(
            "llamonitor_events_received", "Events the application recorded.",
            value=stats["events_received"],
        )
        yield GaugeMetricFamily(
            "llamonitor_queue_size", "Events queued for the worker.", value=stats["queue_size"]
        )
        yield GaugeMetricFamily(
            "llamonitor_buffer_size", "Events taken by the worker, not yet written.",
            value=stats["buffer_size"],
        )
        dropped = CounterMetricFamily(
            "llamonitor_events_dropped", "Events dropped, by reason.", labels=["reason"]
        )
        for reason, n in sorted(stats["dropped"].items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily(
            "llamonitor_worker_restarts", "Times the worker thread was restarted.",
            value=stats["worker_restarts"],
        )
        yield from _sink_metrics(stats["sinks"])


def _internal_errors() -> Iterator[Metric]:
    errors = CounterMetricFamily(
        "llamonitor_internal_errors", "Monitoring errors swallowed (never raised), by kind.",
        labels=["kind"],
    )
    for kind, n in sorted(_internal.internal_error_counts().items()):
        errors.add_metric([kind], n)
    yield errors


_SINK_COUNTERS = (
    ("llamonitor_events", "written", "Events each sink wrote."),
    ("llamonitor_events_retried", "retried", "Events each sink sent again after a failed attempt."),
    ("llamonitor_events_spooled", "spooled_total", "Events each sink put in its spool."),
    ("llamonitor_events_replayed", "replayed", "Events each sink wrote from its spool."),
    ("llamonitor_sink_events_dropped", "dropped", "Events a sink dropped (its backlog full)."),
)
_SINK_GAUGES = (
    ("llamonitor_spooled_events", "spooled", "Events of this process in each sink's spool now."),
    ("llamonitor_spool_bytes", "spool_bytes", "Bytes in each sink's spool."),
    ("llamonitor_sink_pending", "pending", "Events handed to each sink, not written yet."),
    ("llamonitor_sink_healthy", "healthy", "1 while each sink's last write worked."),
    ("llamonitor_sink_outage", "outage", "1 while each sink spools for a store that is down."),
)


def _sink_metrics(sinks: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for name, key, doc in _SINK_COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=["sink"])
        for sink, health in sinks.items():
            counter.add_metric([sink], health.get(key, 0))
        yield counter
    for name, key, doc in _SINK_GAUGES:
        gauge = GaugeMetricFamily(name, doc, labels=["sink"])
        for sink, health in sinks.items():
            gauge.add_metric([sink], float(health.get(key) or 0))
        yield gauge
    failed = CounterMetricFamily(
        "llamonitor_events_failed", "Events a sink gave up on, by reason.",
        labels=["sink", "reason"],
    )
    for sink, health in sinks.items():
        for reason, n in sorted(health.get("failed_reasons", {}).items()):
            failed.add_metric([sink, reason], n)
    yield failed
    durations = HistogramMetricFamily(
        "llamonitor_sink_write_duration_seconds",
        "How long each write of a batch to a sink took.",
        labels=["sink"],
        unit="seconds",
    )
    for sink, health in sinks.items():
        seconds = health.get("write_seconds")
        if not seconds:
            continue
        les = [floatToGoString(b) for b in seconds["bounds"]] + ["+Inf"]
        cumulative = np.cumsum(seconds["counts"]).tolist()
        durations.add_metric([sink], list(zip(les, cumulative, strict=True)), seconds["sum"])
    yield durations
