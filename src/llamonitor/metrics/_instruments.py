"""Seed 003's metric instruments: ``Counter``, ``Gauge``, ``Histogram``, ``Summary``.

Cheap on the caller's thread, the way ``prometheus_client`` is: each child
(one label combination) holds its value under its own lock, so an increment
is one comparison, one lock and one addition, and allocates nothing. A
histogram's or summary's ``observe`` appends the value to the child's buffer
under the lock; the metrics worker (``_worker``) folds buffers into
count/sum/min/max, bucket counts and a DDSketch, vectorized, off the
caller's thread.

Label rules (seed 003: "keep cardinality low"): a metric declares its label
names; each new combination of values is a new series, up to the metric's
``max_series`` (:data:`DEFAULT_MAX_SERIES`). Past it, further new
combinations go to one ``other`` series (every label ``"other"``), a warning
is logged once for the metric, and each call routed there is counted
(``overflowed``, also written as the point
``llamonitor_metric_series_overflow_total{metric=...}``).

Bad input:
- a negative (or NaN) counter increment raises ``ValueError``, as
  ``prometheus_client`` does: it is the caller's bug, and the counter is
  unchanged. It is the only error an instrument raises into the application,
  with wrong label names/values count and a bad declaration (``ValueError``
  too, at the call that has them).
- a NaN observation is dropped and counted (``nan_dropped`` of the child,
  and the ``llamonitor_metric_nan_dropped_total`` point): it would poison the
  sum, min and max. Infinite observations are kept (they are real overflows).
- ``Gauge.set(nan)`` is stored as NaN (PostgreSQL, Parquet) or NULL
  (MySQL, SQLite).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from llamonitor.metrics._schema import Kind, labels_text

logger = logging.getLogger("llamonitor.metrics")

DEFAULT_MAX_SERIES = 1000
"""Label combinations a metric keeps before new ones go to ``other``."""

OTHER = "other"
"""The label value of the series past a metric's cardinality cap."""

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf,
)  # fmt: skip
"""``prometheus_client``'s default histogram buckets (seconds)."""

MAX_BUFFER = 65_536
"""Observations a child buffers before the caller folds them itself (only
when the worker is far behind: bounded memory, amortized cost)."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({"le", "quantile"})


# -- children -------------------------------------------------------------------


class _Child:
    """One series of a metric (one combination of label values)."""

    __slots__ = ("_lock", "created", "label_values", "labels_json", "reported")

    def __init__(self, label_values: tuple[str, ...], label_names: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self.label_values = label_values
        self.labels_json = labels_text(dict(zip(label_names, label_values, strict=True)))
        self.created = time.time()
        self.reported = False  # the worker wrote its start point (counters)

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork()
        self.created = time.time()
        self.reported = False


class CounterChild(_Child):
    """A counter's series: only goes up."""

    __slots__ = ("_value",)

    def __init__(self, label_values: tuple[str, ...], label_names: Sequence[str]) -> None:
        super().__init__(label_values, label_names)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1).

        Raises:
            ValueError: ``amount`` is negative or NaN (the counter is unchanged).
        """
        if not amount >= 0:
            raise ValueError(f"counters only go up: inc({amount!r})")
        with self._lock:
            self._value += amount

    def get(self) -> float:
        """The total so far."""
        with self._lock:
            return self._value

    def _reinit_after_fork(self) -> None:
        super()._reinit_after_fork()
        self._value = 0.0  # the child process's series is its own (source has its pid)


class GaugeChild(_Child):
    """A gauge's series: a value that goes up and down."""

    __slots__ = ("_value",)

    def __init__(self, label_values: tuple[str, ...], label_names: Sequence[str]) -> None:
        super().__init__(label_values, label_names)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1)."""
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (default 1)."""
        with self._lock:
            self._value -= amount

    def set(self, value: float) -> None:
        """Set the value."""
        with self._lock:
            self._value = float(value)

    def get(self) -> float:
        """The current value."""
        with self._lock:
            return self._value


class DistributionChild(_Child):
    """A histogram's or summary's series: observations buffered for the worker.

    ``total_count``/``total_sum``/``bucket_counts`` are cumulative (what
    Prometheus exposes); the interval aggregates are taken by the worker's
    :meth:`take` (a delta per point).
    """

    __slots__ = (
        "_buf",
        "_fold",
        "bucket_counts",
        "buckets",
        "fold_lock",
        "interval",
        "nan_dropped",
        "total_count",
        "total_sum",
    )

    def __init__(
        self,
        label_values: tuple[str, ...],
        label_names: Sequence[str],
        fold: Callable[[DistributionChild, list[float]], None],
        buckets: tuple[float, ...],
    ) -> None:
        super().__init__(label_values, label_names)
        self._buf: list[float] = []
        self._fold = fold
        self.fold_lock = threading.Lock()  # folds (worker, or a caller past MAX_BUFFER)
        self.interval: Any = None  # what was folded since the worker's last take
        self.total_count = 0
        self.total_sum = 0.0
        self.nan_dropped = 0
        self.buckets = buckets  # upper bounds (Histogram), () for a Summary
        self.bucket_counts = [0] * len(buckets)

    def observe(self, value: float) -> None:
        """Record one observation (NaN is dropped and counted, see the module doc)."""
        with self._lock:
            buf = self._buf
            buf.append(value)
            if len(buf) < MAX_BUFFER:
                return
            self._buf = []
        self._fold(self, buf)  # the worker is far behind: fold here, off the lock

    def time(self) -> _Timer:
        """A context manager (and decorator) observing the seconds its block takes."""
        return _Timer(self.observe)

    def swap(self) -> list[float]:
        """The buffered observations (the buffer starts afresh)."""
        with self._lock:
            buf, self._buf = self._buf, []
        return buf

    def _reinit_after_fork(self) -> None:
        super()._reinit_after_fork()
        self.fold_lock = threading.Lock()
        self._buf = []
        self.interval = None
        self.total_count = 0
        self.total_sum = 0.0
        self.nan_dropped = 0
        self.bucket_counts = [0] * len(self.bucket_counts)


class _Timer:
    __slots__ = ("_observe", "_start")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._start = 0.0

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._observe(time.perf_counter() - self._start)

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with _Timer(self._observe):
                return fn(*args, **kwargs)

        return wrapped


C = TypeVar("C", bound=_Child)


# -- metrics --------------------------------------------------------------------


class Metric(Generic[C]):
    """A named metric with declared label names and its children.

    Without labels, the metric itself has the child's methods (``inc``,
    ``set``, ``observe``...). With labels, :meth:`labels` returns the child
    of one combination of values.
    """

    kind: ClassVar[Kind]

    def __init__(
        self,
        name: str,
        description: str = "",
        labels: Iterable[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        registry: Any = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"metric name {name!r}: use [a-zA-Z_:][a-zA-Z0-9_:]*")
        names = tuple(labels)
        for label in names:
            if not isinstance(label, str) or not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"{name}: label name {label!r}: use [a-zA-Z_][a-zA-Z0-9_]*")
            if label in _RESERVED_LABELS:
                raise ValueError(f"{name}: label name {label!r} is reserved")
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: label names repeat: {list(names)}")
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ValueError(f"{name}: max_series must be an integer >= 1, not {max_series!r}")
        self.name = name
        self.description = description
        self.label_names = names
        self.max_series = max_series
        self.overflowed = 0
        self._children: dict[tuple[str, ...], C] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._default: C | None = None if names else self._make(())
        if self._default is not None:
            self._children[()] = self._default
        from llamonitor.metrics._registry import REGISTRY

        (registry if registry is not None else REGISTRY).register(self)
        if registry is None or registry is REGISTRY:
            from llamonitor.metrics._worker import worker

            worker()  # the first instrument starts the worker

    # children ------------------------------------------------------------

    def _make(self, values: tuple[str, ...]) -> C:
        raise NotImplementedError

    def labels(self, *values: object, **kv: object) -> C:
        """The child of one combination of label values (created at first use).

        Past the metric's ``max_series`` combinations, a new one returns the
        ``other`` child (see the module doc).

        Raises:
            ValueError: values missing, extra or mixed positional/keyword,
                or a metric without labels.
        """
        if kv:
            if values:
                raise ValueError(
                    f"{self.name}: labels() takes values by position or name, not both"
                )
            try:
                key = tuple(str(kv[n]) for n in self.label_names)
            except KeyError:
                raise ValueError(
                    f"{self.name}: labels() needs {list(self.label_names)}, got {sorted(kv)}"
                ) from None
            if len(kv) != len(self.label_names):
                raise ValueError(
                    f"{self.name}: labels() needs {list(self.label_names)}, got {sorted(kv)}"
                )
        else:
            if len(values) != len(self.label_names) or not self.label_names:
                raise ValueError(
                    f"{self.name}: labels() needs {len(self.label_names)} value(s) "
                    f"{list(self.label_names)}, got {len(values)}"
                )
            key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is not None:
            return child
        return self._new_child(key)

    def _new_child(self, key: tuple[str, ...]) -> C:
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            if len(self._children) >= self.max_series:
                self.overflowed += 1
                other = (OTHER,) * len(self.label_names)
                child = self._children.get(other)
                if child is None:  # the cap's one extra series
                    child = self._children[other] = self._make(other)
                warn = not self._warned
                self._warned = True
            else:
                child = self._children[key] = self._make(key)
                return child
        if warn:
            logger.warning(
                "llamonitor: metric %s reached its %d label combinations (max_series): "
                "new combinations are counted in the series labelled %r (seed 003: keep "
                "cardinality low; avoid ids as label values)",
                self.name,
                self.max_series,
                OTHER,
            )
        return child

    def children(self) -> list[C]:
        """Every child (a snapshot of the list)."""
        with self._lock:
            return list(self._children.values())

    def remove(self, *values: object) -> None:
        """Forget the child of these label values (its series stops)."""
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def clear(self) -> None:
        """Forget every child (a labelled metric)."""
        with self._lock:
            if self.label_names:
                self._children.clear()

    def _unlabelled(self) -> C:
        if self._default is None:
            raise ValueError(f"{self.name} has labels {list(self.label_names)}: use .labels(...)")
        return self._default

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()
        for child in self._children.values():
            child._reinit_after_fork()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, labels={list(self.label_names)})"


class Counter(Metric[CounterChild]):
    """A monotonically increasing total (seed 003: ``evaluations_total``).

    ``counter.inc()``, ``counter.labels(model="gpt-4o").inc(3)``.
    """

    kind: ClassVar[Kind] = "counter"

    def _make(self, values: tuple[str, ...]) -> CounterChild:
        return CounterChild(values, self.label_names)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the unlabelled counter.

        Raises:
            ValueError: ``amount`` is negative or NaN, or the counter has labels.
        """
        self._unlabelled().inc(amount)

    def get(self) -> float:
        return self._unlabelled().get()


class Gauge(Metric[GaugeChild]):
    """A value that goes up and down (seed 003: ``queue_depth``)."""

    kind: ClassVar[Kind] = "gauge"

    def _make(self, values: tuple[str, ...]) -> GaugeChild:
        return GaugeChild(values, self.label_names)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def get(self) -> float:
        return self._unlabelled().get()


class _Distribution(Metric[DistributionChild]):
    buckets: tuple[float, ...] = ()

    def __init__(
        self,
        name: str,
        description: str = "",
        labels: Iterable[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        registry: Any = None,
    ) -> None:
        from llamonitor.metrics._sketch import require_sketch

        require_sketch()
        super().__init__(name, description, labels, max_series=max_series, registry=registry)

    def _make(self, values: tuple[str, ...]) -> DistributionChild:
        from llamonitor.metrics._fold import fold_into

        return DistributionChild(values, self.label_names, fold_into, self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation (unlabelled metric)."""
        self._unlabelled().observe(value)

    def time(self) -> _Timer:
        """Observe the seconds a block (or decorated function) takes."""
        return self._unlabelled().time()


class Histogram(_Distribution):
    """A distribution with Prometheus buckets and a quantile sketch (seed 003:
    ``evaluation_duration_seconds``).

    Args:
        buckets: upper bounds for the Prometheus exposition (sorted; ``+Inf``
            is added); quantiles come from the DDSketch, not the buckets.
    """

    kind: ClassVar[Kind] = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        labels: Iterable[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int = DEFAULT_MAX_SERIES,
        registry: Any = None,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if not bounds or any(math.isnan(b) for b in bounds) or bounds != sorted(bounds):
            raise ValueError(f"{name}: buckets must be sorted numbers, got {list(buckets)}")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        super().__init__(name, description, labels, max_series=max_series, registry=registry)


class Summary(_Distribution):
    """A distribution reported as count, sum and quantiles (seed 003:
    ``response_time_seconds``); quantiles come from the DDSketch."""

    kind: ClassVar[Kind] = "summary"
