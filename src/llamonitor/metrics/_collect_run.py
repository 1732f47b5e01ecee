"""``configure_collectors()``: build the collectors from code or a parsed
config and run them on the process's collector thread; their points go to the
metrics worker (``llamonitor.metrics._worker``), which writes them to the
store with the instruments' points, with its retries, every interval."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from llamonitor.metrics._collect_base import MetricCollector, MetricCollectorRegistry
from llamonitor.metrics._collect_config import CollectorSettings, MetricsConfig, parse_config
from llamonitor.metrics._collect_schedule import CollectorScheduler, PointSink
from llamonitor.schema.config import ConfigurationError

__all__ = ["PointBuffer", "StoreSink", "collection", "configure_collectors", "stop_collectors"]

DEFAULT_BUFFER_POINTS = 100_000
"""Points :class:`PointBuffer` keeps (the oldest tables go first)."""


class PointBuffer:
    """A sink that keeps the latest point tables in memory (bounded).

    Args:
        max_points: points kept; past it, the oldest tables are dropped
            (counted in :attr:`dropped_points`).
    """

    def __init__(self, max_points: int = DEFAULT_BUFFER_POINTS) -> None:
        self.max_points = max_points
        self._tables: deque[Any] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self.dropped_points = 0

    def __call__(self, table: Any) -> None:
        with self._lock:
            self._tables.append(table)
            self._rows += table.num_rows
            while self._rows > self.max_points and len(self._tables) > 1:
                old = self._tables.popleft()
                self._rows -= old.num_rows
                self.dropped_points += old.num_rows

    def table(self) -> Any:
        """All kept points as one table (empty: a table with no rows)."""
        import pyarrow as pa

        from llamonitor.metrics._schema import METRIC_SCHEMA

        with self._lock:
            tables = list(self._tables)
        return pa.concat_tables(tables) if tables else METRIC_SCHEMA.empty_table()


class StoreSink:
    """The default sink: hands each point table to the metrics worker, which
    writes it to the metric store (``configure(storage=...)``'s, else the
    running monitor's) at its next interval, with its retries.

    With no store (no monitor running, nothing configured) the points are
    dropped and counted in :attr:`unstored_points`; the worker's pending
    points are bounded (``MAX_PENDING_POINTS``, the oldest dropped first).
    """

    def __init__(self) -> None:
        self.unstored_points = 0

    def __call__(self, table: Any) -> None:
        from llamonitor.metrics import _worker

        w = _worker.worker()
        if w.storage() is None:
            self.unstored_points += table.num_rows
            return
        with w._write_lock:
            w._pending.append(table)
            rows = sum(t.num_rows for t in w._pending)
            while rows > _worker.MAX_PENDING_POINTS and len(w._pending) > 1:
                old = w._pending.pop(0)
                rows -= old.num_rows
                w.stats.dropped += old.num_rows


_lock = threading.Lock()
_current: CollectorScheduler | None = None


def _build(item: Any, setting: str) -> tuple[MetricCollector, float | None] | None:
    if isinstance(item, MetricCollector):
        return item, None
    if isinstance(item, str):
        item = CollectorSettings(type=item)
    elif isinstance(item, tuple) and len(item) == 2:
        collector, interval = item
        built = _build(collector, setting)
        return None if built is None else (built[0], interval)
    if not isinstance(item, CollectorSettings):
        raise ConfigurationError(setting, "expected a MetricCollector, a collector name, "
                                 f"(collector, interval) or CollectorSettings, got {item!r}")
    if not item.enabled:
        return None
    try:
        factory = MetricCollectorRegistry.factory(item.type)
    except KeyError as exc:
        raise ConfigurationError(f"{setting}.type", str(exc.args[0])) from exc
    options = dict(item.options)
    if item.metrics is not None:
        options["metrics"] = item.metrics
    try:
        return factory(**options), item.interval
    except (TypeError, ValueError) as exc:
        where = ".metrics" if item.metrics is not None and "metric" in str(exc) else ".options"
        raise ConfigurationError(setting + where, str(exc)) from exc


def configure_collectors(
    config: MetricsConfig | dict[str, Any] | None = None,
    *,
    collectors: Sequence[Any] | None = None,
    sink: PointSink | None = None,
    start: bool = True,
) -> CollectorScheduler:
    """Run collectors on the collector thread (replacing those running).

    Args:
        config: a :class:`MetricsConfig` (from :func:`load_config`), or the
            YAML shape as a dict (``{"monitoring": {"collectors": [...]}}``).
        collectors: more collectors: instances, registered names,
            ``(collector, interval_seconds)`` or :class:`CollectorSettings`.
        sink: what each collection's point table goes to (default: a
            :class:`StoreSink`: the metric store; a :class:`PointBuffer`
            keeps them in memory instead).
        start: start the thread (``False``: drive ``run_due(now)`` yourself).

    Returns:
        The scheduler (``.stats()``, ``.stop()``).

    Raises:
        ConfigurationError: an unknown collector, key or metric group (names it).
        ImportError: a collector's extra is missing (names it).
    """
    if isinstance(config, dict):
        config = parse_config(config)
    built: list[tuple[MetricCollector, float | None]] = []
    items: list[tuple[Any, str]] = []
    if config is not None:
        items += [(c, f"monitoring.collectors[{i}]") for i, c in enumerate(config.collectors)]
    items += [(c, f"collectors[{i}]") for i, c in enumerate(collectors or ())]
    try:
        for item, setting in items:
            b = _build(item, setting)
            if b is not None:
                built.append(b)
        scheduler = CollectorScheduler(sink if sink is not None else StoreSink())
        for collector, interval in built:
            try:
                scheduler.add(collector, interval)
            except ValueError as exc:
                raise ConfigurationError("interval", str(exc)) from exc
    except BaseException:
        for collector, _ in built:
            collector.close()
        raise
    global _current
    with _lock:
        old, _current = _current, scheduler
    if old is not None:
        old.stop()
    if start:
        scheduler.start()
    return scheduler


def collection() -> CollectorScheduler | None:
    """The scheduler :func:`configure_collectors` started last, or ``None``."""
    return _current


def stop_collectors(timeout: float = 5.0) -> None:
    """Stop the collector thread and close its collectors (idempotent)."""
    global _current
    with _lock:
        old, _current = _current, None
    if old is not None:
        old.stop(timeout)
