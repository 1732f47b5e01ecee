"""Seed 003's metrics: instruments, metric points and their store, aggregation,
rollups and recording rules (see docs/metrics.md); collectors polled on an
interval — system, container, application, your own (see docs/metrics-collectors.md).

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
    from llamonitor.metrics._cgroup_fs import CgroupPaths, find_cgroups
    from llamonitor.metrics._collect_app import ApplicationCollector, SpanRates
    from llamonitor.metrics._collect_base import (
        Metric,
        MetricCollector,
        MetricCollectorRegistry,
        points_table,
        register_collector,
    )
    from llamonitor.metrics._collect_cgroup import (
        ContainerCollector,
        ContainerPressure,
        latest_reading,
    )
    from llamonitor.metrics._collect_config import (
        CollectorSettings,
        MetricsConfig,
        load_config,
        parse_config,
    )
    from llamonitor.metrics._collect_run import (
        PointBuffer,
        StoreSink,
        collection,
        configure_collectors,
        stop_collectors,
    )
    from llamonitor.metrics._collect_schedule import CollectorScheduler, CollectorStats
    from llamonitor.metrics._collect_system import SystemCollector
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
    from llamonitor.metrics._retention import RetentionReport, apply_retention, show_retention
    from llamonitor.metrics._retention_task import RetentionTask, start_retention_task
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
    from llamonitor.schema._retention_config import ResolutionPolicy, RetentionConfig

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "ApplicationCollector": "llamonitor.metrics._collect_app",
    "CgroupPaths": "llamonitor.metrics._cgroup_fs",
    "CollectorScheduler": "llamonitor.metrics._collect_schedule",
    "CollectorSettings": "llamonitor.metrics._collect_config",
    "CollectorStats": "llamonitor.metrics._collect_schedule",
    "ContainerCollector": "llamonitor.metrics._collect_cgroup",
    "ContainerPressure": "llamonitor.metrics._collect_cgroup",
    "Counter": "llamonitor.metrics._instruments",
    "DEFAULT_BUCKETS": "llamonitor.metrics._instruments",
    "DEFAULT_MAX_SERIES": "llamonitor.metrics._instruments",
    "Gauge": "llamonitor.metrics._instruments",
    "Histogram": "llamonitor.metrics._instruments",
    "InstrumentsCollector": "llamonitor.metrics._prometheus",
    "KINDS": "llamonitor.metrics._schema",
    "METRIC_SCHEMA": "llamonitor.metrics._schema",
    "METRIC_SCHEMA_VERSION": "llamonitor.metrics._schema",
    "Metric": "llamonitor.metrics._collect_base",
    "MetricCollector": "llamonitor.metrics._collect_base",
    "MetricCollectorRegistry": "llamonitor.metrics._collect_base",
    "MetricsConfig": "llamonitor.metrics._collect_config",
    "OTHER": "llamonitor.metrics._instruments",
    "PointBuffer": "llamonitor.metrics._collect_run",
    "REGISTRY": "llamonitor.metrics._registry",
    "RESOLUTIONS": "llamonitor.metrics._schema",
    "RecordingRule": "llamonitor.schema._metrics_config",
    "Registry": "llamonitor.metrics._registry",
    "ResolutionPolicy": "llamonitor.schema._retention_config",
    "RetentionConfig": "llamonitor.schema._retention_config",
    "RetentionReport": "llamonitor.metrics._retention",
    "RetentionTask": "llamonitor.metrics._retention_task",
    "RollupResult": "llamonitor.metrics._rollup",
    "SpanRates": "llamonitor.metrics._collect_app",
    "StoreSink": "llamonitor.metrics._collect_run",
    "StreamAggregator": "llamonitor.metrics._aggregate",
    "Summary": "llamonitor.metrics._instruments",
    "SystemCollector": "llamonitor.metrics._collect_system",
    "apply_retention": "llamonitor.metrics._retention",
    "collection": "llamonitor.metrics._collect_run",
    "configure": "llamonitor.metrics._api",
    "configure_collectors": "llamonitor.metrics._collect_run",
    "conform_points": "llamonitor.metrics._schema",
    "counter": "llamonitor.metrics._api",
    "evaluate_rule": "llamonitor.metrics._rules",
    "find_cgroups": "llamonitor.metrics._cgroup_fs",
    "flush": "llamonitor.metrics._api",
    "gauge": "llamonitor.metrics._api",
    "health": "llamonitor.metrics._api",
    "histogram": "llamonitor.metrics._api",
    "labels_text": "llamonitor.metrics._schema",
    "latest_reading": "llamonitor.metrics._collect_cgroup",
    "list_metrics": "llamonitor.metrics._series",
    "load_config": "llamonitor.metrics._collect_config",
    "metrics_root": "llamonitor.metrics._store",
    "parse_config": "llamonitor.metrics._collect_config",
    "parse_labels": "llamonitor.metrics._schema",
    "points_table": "llamonitor.metrics._collect_base",
    "prometheus_collector": "llamonitor.metrics._prometheus",
    "query_points": "llamonitor.metrics._store",
    "read_points": "llamonitor.metrics._store",
    "register_collector": "llamonitor.metrics._collect_base",
    "rollup": "llamonitor.metrics._rollup",
    "series": "llamonitor.metrics._series",
    "show_retention": "llamonitor.metrics._retention",
    "start_retention_task": "llamonitor.metrics._retention_task",
    "stop_collectors": "llamonitor.metrics._collect_run",
    "summary": "llamonitor.metrics._api",
    "window_aggregates": "llamonitor.metrics._aggregate",
    "write_points": "llamonitor.metrics._store",
}

__all__ = [
    "ApplicationCollector",
    "CgroupPaths",
    "CollectorScheduler",
    "CollectorSettings",
    "CollectorStats",
    "ContainerCollector",
    "ContainerPressure",
    "Counter",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "Gauge",
    "Histogram",
    "InstrumentsCollector",
    "KINDS",
    "METRIC_SCHEMA",
    "METRIC_SCHEMA_VERSION",
    "Metric",
    "MetricCollector",
    "MetricCollectorRegistry",
    "MetricsConfig",
    "OTHER",
    "PointBuffer",
    "REGISTRY",
    "RESOLUTIONS",
    "RecordingRule",
    "Registry",
    "ResolutionPolicy",
    "RetentionConfig",
    "RetentionReport",
    "RetentionTask",
    "RollupResult",
    "SpanRates",
    "StoreSink",
    "StreamAggregator",
    "Summary",
    "SystemCollector",
    "apply_retention",
    "collection",
    "configure",
    "configure_collectors",
    "conform_points",
    "counter",
    "evaluate_rule",
    "find_cgroups",
    "flush",
    "gauge",
    "health",
    "histogram",
    "labels_text",
    "latest_reading",
    "list_metrics",
    "load_config",
    "metrics_root",
    "parse_config",
    "parse_labels",
    "points_table",
    "prometheus_collector",
    "query_points",
    "read_points",
    "register_collector",
    "rollup",
    "series",
    "show_retention",
    "start_retention_task",
    "stop_collectors",
    "summary",
    "window_aggregates",
    "write_points",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
