"""Seed 003's metric pipeline: collectors polled on an interval (system,
container, application, your own), their points, and their configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
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
        collection,
        configure,
        stop_collectors,
    )
    from llamonitor.metrics._collect_schedule import CollectorScheduler, CollectorStats
    from llamonitor.metrics._collect_system import SystemCollector

_EXPORTS: dict[str, str] = {
    "ApplicationCollector": "llamonitor.metrics._collect_app",
    "CgroupPaths": "llamonitor.metrics._cgroup_fs",
    "CollectorScheduler": "llamonitor.metrics._collect_schedule",
    "CollectorSettings": "llamonitor.metrics._collect_config",
    "CollectorStats": "llamonitor.metrics._collect_schedule",
    "ContainerCollector": "llamonitor.metrics._collect_cgroup",
    "ContainerPressure": "llamonitor.metrics._collect_cgroup",
    "Metric": "llamonitor.metrics._collect_base",
    "MetricCollector": "llamonitor.metrics._collect_base",
    "MetricCollectorRegistry": "llamonitor.metrics._collect_base",
    "MetricsConfig": "llamonitor.metrics._collect_config",
    "PointBuffer": "llamonitor.metrics._collect_run",
    "SpanRates": "llamonitor.metrics._collect_app",
    "SystemCollector": "llamonitor.metrics._collect_system",
    "collection": "llamonitor.metrics._collect_run",
    "configure": "llamonitor.metrics._collect_run",
    "find_cgroups": "llamonitor.metrics._cgroup_fs",
    "latest_reading": "llamonitor.metrics._collect_cgroup",
    "load_config": "llamonitor.metrics._collect_config",
    "parse_config": "llamonitor.metrics._collect_config",
    "points_table": "llamonitor.metrics._collect_base",
    "register_collector": "llamonitor.metrics._collect_base",
    "stop_collectors": "llamonitor.metrics._collect_run",
}

__all__ = [
    "ApplicationCollector",
    "CgroupPaths",
    "CollectorScheduler",
    "CollectorSettings",
    "CollectorStats",
    "ContainerCollector",
    "ContainerPressure",
    "Metric",
    "MetricCollector",
    "MetricCollectorRegistry",
    "MetricsConfig",
    "PointBuffer",
    "SpanRates",
    "SystemCollector",
    "collection",
    "configure",
    "find_cgroups",
    "latest_reading",
    "load_config",
    "parse_config",
    "points_table",
    "register_collector",
    "stop_collectors",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
