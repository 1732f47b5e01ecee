"""Seed 003's collector interface: :class:`Metric` points, the
:class:`MetricCollector` base class, the registry of collectors by name, and
:func:`points_table` (a list of metrics -> a metric point table).

Not to be confused with ``llamonitor.instrument.MetricCollector``: that one
measures one span's result on the application thread
(``collect(result, args, kwargs, context) -> dict``); this one is polled on an
interval by the collector thread and returns points
(``collect() -> list[Metric]``) that are stored beside the spans.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from llamonitor.metrics._schema import KINDS, METRIC_SCHEMA, labels_text

__all__ = [
    "Metric",
    "MetricCollector",
    "MetricCollectorRegistry",
    "points_table",
    "register_collector",
]

@dataclass(frozen=True)
class Metric:
    """One reading of one series (seed 003's ``Metric``).

    Args:
        name: the series name, lowercase with underscores and the unit in it
            (``gpu_memory_bytes``, ``process_cpu_seconds_total``).
        value: a gauge's value, or a counter's cumulative total since it
            started (not the increment); for a histogram/summary, the last
            observation or ``None``.
        kind: ``counter``, ``gauge``, ``histogram`` or ``summary``.
        labels: label name -> value (keep their cardinality low).
        timestamp: seconds since the epoch; ``None``: the collection time.
        unit: ``bytes``, ``seconds``, ``percent``, ``ratio``... (metadata).
        description: one line saying what it measures (metadata).
        count, sum, min, max: a histogram's or summary's aggregates.
    """

    name: str
    value: float | None
    kind: str = "gauge"
    labels: Mapping[str, str] = field(default_factory=dict)
    timestamp: float | None = None
    unit: str = ""
    description: str = ""
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Metric {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"Metric name must be a non-empty string, got {self.name!r}")

    @property
    def type(self) -> str:
        """Seed 003's word for :attr:`kind`."""
        return self.kind

    @classmethod
    def gauge(cls, name: str, value: float, labels: Mapping[str, str] | None = None,
              **meta: Any) -> Metric:
        """A gauge reading (``unit=``, ``description=``, ``timestamp=`` as keywords)."""
        return cls(name, value, "gauge", dict(labels or {}), **meta)

    @classmethod
    def counter(cls, name: str, total: float, labels: Mapping[str, str] | None = None,
                **meta: Any) -> Metric:
        """A counter's cumulative ``total`` (``unit=``, ``description=``, ``timestamp=``)."""
        return cls(name, total, "counter", dict(labels or {}), **meta)


class MetricCollector(ABC):
    """Base class of collectors polled on an interval (seed 003's interface).

    Subclass it, give it a ``name`` and register it::

        class GPUMetricsCollector(MetricCollector):
            name = "gpu"
            default_interval_seconds = 15.0

            def collect(self) -> list[Metric]:
                return [Metric.gauge("gpu_usage_percent", 93.0, {"gpu_id": "0"})]

            def get_metadata(self) -> dict[str, Any]:
                return {"name": "gpu_metrics", "version": "1.0",
                        "metrics": ["gpu_usage_percent"]}

        register_collector("gpu", GPUMetricsCollector)

    ``collect`` runs on the collector thread (never on the application's);
    an exception from it is counted and logged once by the scheduler, and
    that collection has no points.
    """

    name: ClassVar[str] = "custom"
    """The collector's name: its registry key and the ``source`` of its points."""

    default_interval_seconds: ClassVar[float] = 30.0
    """Seconds between two collections unless configured."""

    @abstractmethod
    def collect(self) -> list[Metric]:
        """Collect current metrics."""

    @abstractmethod
    def get_metadata(self) -> dict[str, Any]:
        """Return collector metadata (``name``, ``version``, ``metrics``...)."""

    def close(self) -> None:  # noqa: B027 - optional to override
        """Release what the collector holds (called when collection stops)."""


CollectorFactory = Callable[..., MetricCollector]


class MetricCollectorRegistry:
    """Collectors by name (``system``, ``container``, ``application`` built in),
    for :func:`llamonitor.metrics.configure` and the YAML configuration."""

    _factories: ClassVar[dict[str, CollectorFactory]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def register(cls, name: str, factory: CollectorFactory) -> None:
        """Register a collector class (or factory taking the options as keywords)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"collector name must be a non-empty string, got {name!r}")
        with cls._lock:
            cls._factories[name] = factory

    @classmethod
    def unregister(cls, name: str) -> None:
        """Forget ``name`` (no error if it is not registered)."""
        with cls._lock:
            cls._factories.pop(name, None)

    @classmethod
    def names(cls) -> list[str]:
        """The registered names, sorted."""
        _builtins()
        with cls._lock:
            return sorted(cls._factories)

    @classmethod
    def factory(cls, name: str) -> CollectorFactory:
        """The factory registered as ``name``.

        Raises:
            KeyError: no collector has that name (the message lists the names).
        """
        _builtins()
        with cls._lock:
            found = cls._factories.get(name)
            names = sorted(cls._factories)
        if found is None:
            raise KeyError(f"no metric collector named {name!r}; registered: {names}")
        return found

    @classmethod
    def create(cls, name: str, **options: Any) -> MetricCollector:
        """A new collector ``name`` made with ``options``.

        Raises:
            KeyError: no collector has that name.
        """
        return cls.factory(name)(**options)


def register_collector(name: str, factory: CollectorFactory) -> None:
    """Register a collector under ``name`` (see :class:`MetricCollectorRegistry`)."""
    MetricCollectorRegistry.register(name, factory)


_builtins_done = False


def _builtins() -> None:
    # Registered at first use, not at import: the built-ins' modules import
    # this one, and registering them costs an import each.
    global _builtins_done
    if _builtins_done:
        return
    _builtins_done = True
    from llamonitor.metrics._collect_app import ApplicationCollector
    from llamonitor.metrics._collect_cgroup import ContainerCollector
    from llamonitor.metrics._collect_system import SystemCollector

    with MetricCollectorRegistry._lock:
        for factory in (SystemCollector, ContainerCollector, ApplicationCollector):
            MetricCollectorRegistry._factories.setdefault(factory.name, factory)
        MetricCollectorRegistry._factories.setdefault("docker", ContainerCollector)


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def points_table(
    metrics: Iterable[Metric], *, source: str = "", now: float | None = None
) -> pa.Table:
    """The metric point table (``METRIC_SCHEMA``, raw resolution) of ``metrics``
    (what :func:`llamonitor.metrics.write_points` takes).

    Args:
        metrics: the readings.
        source: the ``source`` column (the collector's name).
        now: the timestamp of readings without one (seconds since the epoch;
            default: now).

    Returns:
        One row per metric; NaN values become nulls.
    """
    stamp = time.time() if now is None else now
    rows = list(metrics)
    cols: dict[str, list[Any]] = {
        "timestamp": [round((m.timestamp if m.timestamp is not None else stamp) * 1e6)
                      for m in rows],
        "name": [m.name for m in rows],
        "kind": [m.kind for m in rows],
        "labels": [labels_text(m.labels) for m in rows],
        "resolution_seconds": [0] * len(rows),
        "value": [_finite(m.value) for m in rows],
        "count": [m.count for m in rows],
        "sum": [_finite(m.sum) for m in rows],
        "min": [_finite(m.min) for m in rows],
        "max": [_finite(m.max) for m in rows],
        "sketch": [None] * len(rows),
        "source": [source] * len(rows),
    }
    schema = METRIC_SCHEMA
    arrays = []
    for f in schema:
        data = cols.get(f.name, [None] * len(rows))
        if f.name == "timestamp":
            arrays.append(pa.array(data, type=pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(data, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
