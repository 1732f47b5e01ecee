"""``/metrics`` bodies: the span metrics in the Prometheus text format, fast.

``prometheus_client``'s ``generate_latest`` formats a sample in several
microseconds (it validates and escapes every label name of every line); with
the caps reached the span metrics are some 16,000 lines, over 100 ms. The
metrics servers of this package therefore write the span collectors' data
themselves (text format 0.0.4: the same names, label values and numbers, a
label with an empty value left out, as PromQL sees it anyway) and let
``generate_latest`` format the rest of the registry (the pipeline's few
hundred lines). :class:`MetricsRegistry` is the registry that knows which is
which; any other registry is served by ``prometheus_client`` as it is.

Imported only once ``prometheus_client`` is known to be installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from llamonitor.export._collectors import SpanMetricsCollector, floatToGoString
from llamonitor.export._metric_names import FAMILIES
from llamonitor.export._metric_state import Snapshot

__all__ = ["CONTENT_TYPE", "MetricsRegistry", "render_snapshot"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


CACHE_MAX = 100_000
"""Label texts a renderer keeps (one per label set; its series are bounded anyway)."""


def _literal(text: str) -> str:
    """``text`` as a literal part of a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def render_snapshot(snap: Snapshot, cache: dict[Any, str] | None = None) -> str:
    """A snapshot's families, and the fold counters, in the text format.

    Args:
        snap: the state's snapshot.
        cache: label texts of the label sets seen before (kept between scrapes
            by the caller: a set's text is escaped once).
    """
    cache = {} if cache is None else cache
    if len(cache) > CACHE_MAX:
        cache.clear()
    out: list[str] = []
    add = out.append
    for data in snap.families:
        family = data.family
        names = [lab.name for lab in family.labels]
        labels = []
        for values in data.label_values:
            seen = (family.key, values)
            text = cache.get(seen)
            if text is None:
                text = cache[seen] = ",".join(
                    f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True) if v
                )
            labels.append(text)
        totals = [floatToGoString(s) for s in data.sums.tolist()]
        if family.kind == "histogram":
            name = family.prom_name
            add(f"# HELP {name} {_help(family.description)}\n# TYPE {name} histogram\n")
            # One template a family, one format call a label set: {0} is the
            # labels and a comma, then a count per bucket, the labels in braces,
            # the count and the sum.
            les = [floatToGoString(b) for b in family.bounds] + ["+Inf"]
            bucket = _literal(f"{name}_bucket{{")
            lines = [
                f'{bucket}{{0}}le="{le}"}}}} {{{i + 1}}}\n' for i, le in enumerate(les)
            ]
            n = len(les)
            template = "".join(lines) + (
                f"{name}_count{{{n + 1}}} {{{n + 2}}}\n{name}_sum{{{n + 1}}} {{{n + 3}}}\n"
            )
            cumulative = np.cumsum(data.bucket_counts, axis=1).tolist()
            for lab, counts, total in zip(labels, cumulative, totals, strict=True):
                head = f"{lab}," if lab else ""
                braces = f"{{{lab}}}" if lab else ""
                add(template.format(head, *counts, braces, counts[-1], total))
        else:
            name = f"{family.prom_name}_total"
            add(f"# HELP {name} {_help(family.description)}\n# TYPE {name} counter\n")
            for lab, total in zip(labels, totals, strict=True):
                add(f"{name}{{{lab}}} {total}\n" if lab else f"{name} {total}\n")
    for name, label, counts, doc in (
        ("llamonitor_metrics_label_values_folded_total", "label", snap.folded,
         "Span label values folded into 'other' past max_label_values, by label."),
        ("llamonitor_metrics_series_folded_total", "metric", snap.series_folded,
         "Observations whose label set folded into the all-'other' set past max_series, "
         "by metric."),
    ):
        add(f"# HELP {name} {_help(doc)}\n# TYPE {name} counter\n")
        for key, n in counts.items():
            add(f'{name}{{{label}="{key}"}} {n}\n')
    name = "llamonitor_metrics_label_values"
    add(f"# HELP {name} Distinct values each span label holds (at most max_label_values).\n"
        f"# TYPE {name} gauge\n")
    for key, n in snap.label_values.items():
        add(f'{name}{{label="{key}"}} {n}\n')
    name = "llamonitor_metrics_spans_total"
    add(f"# HELP {name} Spans aggregated into these metrics.\n# TYPE {name} counter\n"
        f"{name} {snap.spans}\n")
    return "".join(out)


SPAN_FAMILY_NAMES = frozenset(
    {f.prom_name for f in FAMILIES}
    | {
        "llamonitor_metrics_label_values_folded",
        "llamonitor_metrics_series_folded",
        "llamonitor_metrics_label_values",
        "llamonitor_metrics_spans",
    }
)
"""The families :func:`render_snapshot` writes (without ``_total``)."""


class _Others:
    """The collectors of a registry but the span ones, for ``generate_latest``;
    a family named like one in ``skip`` (the span collectors' text, say the
    collector points' ``llamonitor_cost_usd_total``) is left out, so no family
    is written twice."""

    def __init__(self, collectors: list[Collector], skip: frozenset[str] = frozenset()) -> None:
        self.collectors = collectors
        self.skip = skip

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            for family in collector.collect():
                if family.name not in self.skip:
                    yield family


class MetricsRegistry(CollectorRegistry):
    """A ``CollectorRegistry`` whose :meth:`render` writes the span collectors'
    metrics itself (see the module docstring); ``generate_latest`` and every
    other use of a registry work as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: list[Collector] = []
        self._caches: dict[int, dict[Any, str]] = {}

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self.collectors.remove(collector)
        self._caches.pop(id(collector), None)

    def render(self) -> bytes:
        """Every collector's metrics in the text format (``CONTENT_TYPE``)."""
        collectors = list(self.collectors)
        spans = [c for c in collectors if isinstance(c, SpanMetricsCollector)]
        others = _Others(
            [c for c in collectors if not isinstance(c, SpanMetricsCollector)],
            SPAN_FAMILY_NAMES if spans else frozenset(),
        )
        body = generate_latest(others)  # duck-typed: it only calls collect()
        texts = [
            render_snapshot(c.state.snapshot(), self._caches.setdefault(id(c), {}))
            for c in spans
        ]
        return body + "".join(texts).encode()
