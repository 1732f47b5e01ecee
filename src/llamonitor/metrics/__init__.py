"""Seed 003's metrics: instruments, metric points and their store, aggregation,
rollups and recording rules (see docs/metrics.md).

``llamonitor.metrics.counter("evaluations_total", "Total evaluations", labels=["model"])``
then ``.labels(model="gpt-4o").inc()``; the metrics worker writes the points beside
the spans every ``metrics_interval_seconds``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.metrics._aggregate import StreamAggregator, window_aggregates
    from llamonitor.metrics._api import configure, counter, flush, gauge, health, histogram, summary
    from llamonitor.metrics._instruments import (
        DEFAULT_BUCKETS,
        DEFAULT_MAX_SERIES,
        OTHER,
        Counter,
        Gauge,
        Histogram,
        Summary,
    )
    from llamonitor.metrics._prometheus import InstrumentsCollector, prometheus_collector
    from llamonitor.metrics._registry import REGISTRY, Registry
    from llamonitor.metrics._rollup import RollupResult, rollup
    from llamonitor.metrics._rules import evaluate_rule
    from llamonitor.metrics._schema import (
        KINDS,
        METRIC_SCHEMA,
        METRIC_SCHEMA_VERSION,
        RESOLUTIONS,
        conform_points,
        labels_text,
        parse_labels,
    )
    from llamonitor.metrics._series import list_metrics, series
    from llamonitor.metrics._store import metrics_root, query_points, read_points, write_points
    from llamonitor.schema._metrics_config import RecordingRule

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "Counter": "llamonitor.metrics._instruments",
    "DEFAULT_BUCKETS": "llamonitor.metrics._instruments",
    "DEFAULT_MAX_SERIES": "llamonitor.metrics._instruments",
    "Gauge": "llamonitor.metrics._instruments",
    "Histogram": "llamonitor.metrics._instruments",
    "InstrumentsCollector": "llamonitor.metrics._prometheus",
    "KINDS": "llamonitor.metrics._schema",
    "METRIC_SCHEMA": "llamonitor.metrics._schema",
    "METRIC_SCHEMA_VERSION": "llamonitor.metrics._schema",
    "OTHER": "llamonitor.metrics._instruments",
    "REGISTRY": "llamonitor.metrics._registry",
    "RESOLUTIONS": "llamonitor.metrics._schema",
    "RecordingRule": "llamonitor.schema._metrics_config",
    "Registry": "llamonitor.metrics._registry",
    "RollupResult": "llamonitor.metrics._rollup",
    "StreamAggregator": "llamonitor.metrics._aggregate",
    "Summary": "llamonitor.metrics._instruments",
    "configure": "llamonitor.metrics._api",
    "conform_points": "llamonitor.metrics._schema",
    "counter": "llamonitor.metrics._api",
    "evaluate_rule": "llamonitor.metrics._rules",
    "flush": "llamonitor.metrics._api",
    "gauge": "llamonitor.metrics._api",
    "health": "llamonitor.metrics._api",
    "histogram": "llamonitor.metrics._api",
    "labels_text": "llamonitor.metrics._schema",
    "list_metrics": "llamonitor.metrics._series",
    "metrics_root": "llamonitor.metrics._store",
    "parse_labels": "llamonitor.metrics._schema",
    "prometheus_collector": "llamonitor.metrics._prometheus",
    "query_points": "llamonitor.metrics._store",
    "read_points": "llamonitor.metrics._store",
    "rollup": "llamonitor.metrics._rollup",
    "series": "llamonitor.metrics._series",
    "summary": "llamonitor.metrics._api",
    "window_aggregates": "llamonitor.metrics._aggregate",
    "write_points": "llamonitor.metrics._store",
}

__all__ = [
    "Counter",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "Gauge",
    "Histogram",
    "InstrumentsCollector",
    "KINDS",
    "METRIC_SCHEMA",
    "METRIC_SCHEMA_VERSION",
    "OTHER",
    "REGISTRY",
    "RESOLUTIONS",
    "RecordingRule",
    "Registry",
    "RollupResult",
    "StreamAggregator",
    "Summary",
    "configure",
    "conform_points",
    "counter",
    "evaluate_rule",
    "flush",
    "gauge",
    "health",
    "histogram",
    "labels_text",
    "list_metrics",
    "metrics_root",
    "parse_labels",
    "prometheus_collector",
    "query_points",
    "read_points",
    "rollup",
    "series",
    "summary",
    "window_aggregates",
    "write_points",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
