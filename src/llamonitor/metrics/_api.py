"""The public functions of ``llamonitor.metrics``: instruments by name, settings, flush."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from llamonitor.metrics import _worker
from llamonitor.metrics._instruments import (
    DEFAULT_BUCKETS,
    DEFAULT_MAX_SERIES,
    Counter,
    Gauge,
    Histogram,
    Metric,
    Summary,
)
from llamonitor.metrics._registry import REGISTRY, Registry
from llamonitor.schema.config import ConfigurationError, StorageConfig

M = TypeVar("M", bound=Metric[Any])

_max_series: list[int | None] = [None]  # configure()'s


def _default_max_series() -> int:
    if _max_series[0] is not None:
        return _max_series[0]
    w = _worker._worker
    found = w.max_series() if w is not None else None
    return found or DEFAULT_MAX_SERIES


def _get_or_make(
    cls: type[M],
    name: str,
    description: str,
    labels: Iterable[str],
    max_series: int | None,
    registry: Registry | None,
    **extra: Any,
) -> M:
    reg = registry if registry is not None else REGISTRY
    names = tuple(labels)
    for _ in range(2):
        old = reg.get(name)
        if old is not None:
            same = type(old) is cls and old.label_names == names
            if same and "buckets" in extra:
                same = _bounds(extra["buckets"]) == getattr(old, "buckets", None)
            if not same:
                raise ValueError(
                    f"metric {name!r} exists as {old!r}; a name has one kind and one set of labels"
                )
            return old  # type: ignore[return-value]
        try:
            return cls(
                name,
                description,
                names,
                max_series=max_series if max_series is not None else _default_max_series(),
                registry=registry,
                **extra,
            )
        except ValueError:
            if reg.get(name) is None:
                raise
            # another thread registered it meanwhile: take that one
    raise AssertionError("unreachable")  # pragma: no cover


def _bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = [float(b) for b in buckets]
    if bounds and bounds[-1] != float("inf"):
        bounds.append(float("inf"))
    return tuple(bounds)


def counter(
    name: str,
    description: str = "",
    labels: Iterable[str] = (),
    *,
    max_series: int | None = None,
    registry: Registry | None = None,
) -> Counter:
    """The counter ``name`` (created, or the one registered under that name).

    Args:
        name: ``[a-zA-Z_:][a-zA-Z0-9_:]*``; by convention ``..._total``.
        description: what it counts.
        labels: label names; values are given by ``.labels(...)``.
        max_series: label combinations kept before new ones go to ``other``
            (default :data:`DEFAULT_MAX_SERIES`, or :func:`configure`'s).
        registry: a private registry (default: the process's).

    Raises:
        ValueError: a bad name or label name, or ``name`` registered as
            another kind or with other labels.
    """
    return _get_or_make(Counter, name, description, labels, max_series, registry)


def gauge(
    name: str,
    description: str = "",
    labels: Iterable[str] = (),
    *,
    max_series: int | None = None,
    registry: Registry | None = None,
) -> Gauge:
    """The gauge ``name`` (see :func:`counter` for the arguments)."""
    return _get_or_make(Gauge, name, description, labels, max_series, registry)


def histogram(
    name: str,
    description: str = "",
    labels: Iterable[str] = (),
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    max_series: int | None = None,
    registry: Registry | None = None,
) -> Histogram:
    """The histogram ``name``: count, sum, min, max, a DDSketch of the
    observations (quantiles within 1%), and ``buckets`` for Prometheus.

    Raises:
        ValueError: as :func:`counter`, or buckets not sorted.
        ConfigurationError: ``ddsketch`` is not installed
            (``pip install 'llamonitor[metrics]'``).
    """
    return _get_or_make(Histogram, name, description, labels, max_series, registry, buckets=buckets)


def summary(
    name: str,
    description: str = "",
    labels: Iterable[str] = (),
    *,
    max_series: int | None = None,
    registry: Registry | None = None,
) -> Summary:
    """The summary ``name``: count, sum and quantiles (DDSketch), no buckets."""
    return _get_or_make(Summary, name, description, labels, max_series, registry)


def configure(
    storage: StorageConfig | None = None,
    interval_seconds: float | None = None,
    max_series: int | None = None,
    max_retries: int | None = None,
    rules: Sequence[Any] | None = None,
) -> None:
    """Settings of the metrics worker (unset ones follow the running monitor).

    Args:
        storage: where points go (default: the monitor's storage).
        interval_seconds: time between snapshots (default: the monitor's
            ``metrics_interval_seconds``, 10).
        max_series: the default cap of new metrics' label combinations.
        max_retries: write attempts after a failure, per interval.
        rules: recording rules (``RecordingRule`` or dicts), evaluated by
            the worker and stored (see ``llamonitor.metrics.RecordingRule``).

    Raises:
        ConfigurationError: a bad value, naming the setting.
    """
    from llamonitor.metrics._rules import parse_rules

    if interval_seconds is not None and not interval_seconds > 0:
        raise ConfigurationError("metrics_interval_seconds", "must be a number of seconds > 0")
    if max_series is not None and (isinstance(max_series, bool) or max_series < 1):
        raise ConfigurationError("metrics_max_series", "must be an integer >= 1")
    s = _worker._settings
    s.storage = storage
    s.interval_seconds = interval_seconds
    s.max_retries = max_retries
    s.rules = parse_rules(rules or [])
    if max_series is not None:
        _max_series[0] = int(max_series)
    w = _worker._worker
    if w is not None:
        w._wake.set()  # a new interval takes effect now


def flush(timeout: float = _worker.EXIT_FLUSH_SECONDS) -> int:
    """Snapshot every instrument and write the points now.

    Returns:
        Points written (0 when there is no store, or it failed: see :func:`health`).
    """
    try:
        return _worker.worker().flush(timeout)
    except Exception:
        return 0


def health() -> dict[str, Any]:
    """The worker's counters: snapshots, written, failed_writes, retried,
    dropped (``rejected``: of those, the points a SQL store refused for their
    content), pending points, last_error, and the instruments' series and
    overflows."""
    w = _worker.worker()
    st = w.stats
    metrics = REGISTRY.metrics()
    return {
        "snapshots": st.snapshots,
        "written": st.written,
        "failed_writes": st.failed_writes,
        "retried": st.retried,
        "dropped": st.dropped,
        "rejected": st.rejected,
        "pending": sum(t.num_rows for t in w._pending),
        "last_error": st.last_error,
        "metrics": len(metrics),
        "series": sum(len(m.children()) for m in metrics),
        "overflowed": {m.name: m.overflowed for m in metrics if m.overflowed},
    }
