"""The series of a metric (one label combination each): where an instrument's
value lives, under its own lock (see ``_instruments``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from llamonitor.metrics._schema import labels_text

MAX_BUFFER = 65_536
"""Observations a child buffers before the caller folds them itself (only
when the worker is far behind: bounded memory, amortized cost)."""


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
        """Record one observation (NaN is dropped and counted, see the module doc).

        Raises:
            TypeError: ``value`` is not a number (as ``prometheus_client`` does).
        """
        value = float(value)  # a str or None fails here, not in the worker's fold
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
