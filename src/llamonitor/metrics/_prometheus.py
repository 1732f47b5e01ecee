"""The instruments' live values for Prometheus: a ``prometheus_client`` collector.

``InstrumentsCollector(registry)`` yields, at each scrape, every metric of a
:class:`~llamonitor.metrics._registry.Registry` (default: the process's) as
``prometheus_client`` families: counters (``name`` ending ``_total`` as is,
else ``_total`` added, as ``prometheus_client`` does), gauges, histograms
(cumulative ``le`` buckets, ``_sum``, ``_count``) and summaries (``_sum``,
``_count``). Histograms' buffered observations are folded first, so a
scrape sees every observation made before it. Needs the ``[prometheus]``
extra (``prometheus_client``).

    from prometheus_client import CollectorRegistry
    registry = CollectorRegistry()
    registry.register(llamonitor.metrics.prometheus_collector())
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from llamonitor.metrics._fold import fold_into
from llamonitor.metrics._instruments import CounterChild, DistributionChild, GaugeChild
from llamonitor.metrics._registry import REGISTRY, Registry
from llamonitor.schema.config import ConfigurationError


def _client() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError:
        raise ConfigurationError(
            "metrics",
            "Prometheus exposure needs prometheus_client: pip install 'llamonitor[prometheus]'",
        ) from None
    return core


def _le(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return repr(float(bound))


class InstrumentsCollector:
    """A ``prometheus_client`` collector over a registry's instruments (live values)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._core = _client()

    def describe(self) -> list[Any]:
        """No families up front: instruments appear as the application creates them."""
        return []

    def collect(self) -> Iterator[Any]:
        core = self._core
        for metric in self.registry.metrics():
            names = list(metric.label_names)
            children = metric.children()
            doc = metric.description or metric.name
            if metric.kind == "counter":
                base = (
                    metric.name[: -len("_total")] if metric.name.endswith("_total") else metric.name
                )
                family = core.CounterMetricFamily(base, doc, labels=names)
                for child in children:
                    if isinstance(child, CounterChild):
                        family.add_metric(list(child.label_values), child.get())
            elif metric.kind == "gauge":
                family = core.GaugeMetricFamily(metric.name, doc, labels=names)
                for child in children:
                    if isinstance(child, GaugeChild):
                        family.add_metric(list(child.label_values), child.get())
            elif metric.kind == "histogram":
                family = core.HistogramMetricFamily(metric.name, doc, labels=names)
                for child in children:
                    if not isinstance(child, DistributionChild):
                        continue
                    fold_into(child, child.swap())
                    running = 0
                    buckets = []
                    for bound, n in zip(child.buckets, list(child.bucket_counts), strict=True):
                        running += n
                        buckets.append((_le(bound), running))
                    family.add_metric(list(child.label_values), buckets, child.total_sum)
            else:
                family = core.SummaryMetricFamily(metric.name, doc, labels=names)
                for child in children:
                    if isinstance(child, DistributionChild):
                        fold_into(child, child.swap())
                        family.add_metric(
                            list(child.label_values), child.total_count, child.total_sum
                        )
            yield family


def prometheus_collector(registry: Registry | None = None) -> InstrumentsCollector:
    """A collector of ``registry``'s instruments (default: the process's) for a
    ``prometheus_client.CollectorRegistry``.

    Raises:
        ConfigurationError: ``prometheus_client`` is not installed.
    """
    return InstrumentsCollector(registry)
