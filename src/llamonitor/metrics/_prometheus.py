"""The instruments' live values for Prometheus: a ``prometheus_client`` collector.

``InstrumentsCollector(registry)`` yields, at each scrape, every metric of a
:class:`~llamonitor.metrics._registry.Registry` (default: the process's) as
``prometheus_client`` families: counters (``name`` ending ``_total`` as is,
else ``_total`` added, as ``prometheus_client`` does), gauges, histograms
(cumulative ``le`` buckets, ``_sum``, ``_count``) and summaries (``_sum``,
``_count``). Histograms' buffered observations are folded first, so a
scrape sees every observation made before it. Needs the ``[prometheus]``
extra (``prometheus_client``).

With ``collectors=True`` (the default) it also yields the last collection of
each running collector (:func:`~llamonitor.metrics.configure_collectors`:
system, container, application, your own): counters with ``_total``,
gauges, and histograms/summaries as ``_count`` and ``_sum``, their labels as
collected. A name that is not a Prometheus name has its other characters
made ``_``; a collector point named like an instrument, or like the
pipeline's own metrics (``PIPELINE_NAMES``: the exposition's pipeline
collector serves those live), is left out, so no family is served twice.

    from prometheus_client import CollectorRegistry
    registry = CollectorRegistry()
    registry.register(llamonitor.metrics.prometheus_collector())
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from llamonitor.metrics._children import CounterChild, DistributionChild, GaugeChild
from llamonitor.metrics._fold import fold_into
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
    """A ``prometheus_client`` collector over a registry's instruments (live
    values) and, with ``collectors``, the running collectors' last points."""

    def __init__(self, registry: Registry | None = None, *, collectors: bool = True) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.collectors = collectors
        self._core = _client()

    def describe(self) -> list[Any]:
        """No families up front: instruments appear as the application creates them."""
        return []

    def collect(self) -> Iterator[Any]:
        taken: set[str] = set()
        for family in self._instruments():
            taken.add(family.name)
            yield family
        if self.collectors:
            yield from collector_families(self._core, taken)

    def _instruments(self) -> Iterator[Any]:
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


def _prom_name(name: str) -> str:
    out = _BAD_CHARS.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


_BAD_CHARS = re.compile(r"[^A-Za-z0-9_:]")


def collector_families(core: Any, taken: set[str]) -> Iterator[Any]:
    """Families of the running collectors' last points (none without any),
    leaving out the names in ``taken`` (family names, without ``_total``) and
    :data:`~llamonitor.metrics._collect_app.PIPELINE_NAMES`."""
    from llamonitor.metrics._collect_app import PIPELINE_NAMES
    from llamonitor.metrics._collect_run import collection
    from llamonitor.metrics._schema import parse_labels

    scheduler = collection()
    if scheduler is None:
        return
    families: dict[str, Any] = {}
    seen: set[tuple[str, str]] = set()
    for table in reversed(scheduler.latest()):  # a later collector's point wins
        cols = table.select(["name", "kind", "labels", "value", "count", "sum", "source"])
        for name, kind, labels, value, count, total, source in zip(
            *(c.to_pylist() for c in cols.columns), strict=True
        ):
            if name in PIPELINE_NAMES:
                continue
            full = _prom_name(name)
            base = full[: -len("_total")] if kind == "counter" and full.endswith("_total") else full
            if base in taken or (base, labels) in seen:
                continue
            family = families.get(base)
            if family is None:
                typ = {"counter": "counter", "gauge": "gauge"}.get(kind, "summary")
                family = families[base] = core.Metric(base, f"{name} ({source} collector)", typ)
            elif family.type != {"counter": "counter", "gauge": "gauge"}.get(kind, "summary"):
                continue  # one name, two kinds: the first stays
            seen.add((base, labels))
            lab = {_prom_name(k): v for k, v in parse_labels(labels).items()}
            if kind == "counter":
                if value is not None:
                    family.add_sample(base + "_total", lab, value)
            elif kind == "gauge":
                if value is not None:
                    family.add_sample(base, lab, value)
            elif count is not None:
                family.add_sample(base + "_count", lab, float(count))
                family.add_sample(base + "_sum", lab, 0.0 if total is None else total)
    for family in families.values():
        if family.samples:
            yield family


def prometheus_collector(
    registry: Registry | None = None, *, collectors: bool = True
) -> InstrumentsCollector:
    """A collector of ``registry``'s instruments (default: the process's) and
    of the running collectors' last points (``collectors``) for a
    ``prometheus_client.CollectorRegistry``.

    Raises:
        ConfigurationError: ``prometheus_client`` is not installed.
    """
    return InstrumentsCollector(registry, collectors=collectors)
