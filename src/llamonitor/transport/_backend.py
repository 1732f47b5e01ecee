"""The thread a sink's backend runs on.

Every call into a backend (``initialize``, ``write_table``, ``close``) runs on
one thread of its own, one call at a time, so the backend is never used from
two threads at once and always from the same one (async methods on that
thread's private event loop). The sink's thread hands calls over and waits for
them, or not: during an outage it keeps spooling new batches while a probe
(a connect that may hang for a minute) runs here.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from llamonitor._internal import CURRENT, SUPPRESSED

WRITE_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Upper bounds (seconds) of the buckets of a sink's write durations."""


class Durations:
    """A histogram of durations in seconds: a count per bucket of
    ``WRITE_SECONDS_BUCKETS`` (and one past the last), their sum and count.
    Written by one thread; a reader's copy may be a write behind."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(WRITE_SECONDS_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(WRITE_SECONDS_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"bounds", "counts" (not cumulative), "sum", "count"}``."""
        return {
            "bounds": list(WRITE_SECONDS_BUCKETS),
            "counts": list(self.counts),
            "sum": self.sum,
            "count": self.count,
        }


class Call:
    """Backend methods to call in turn (stopping at the first that raises)."""

    def __init__(self, steps: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.steps = steps
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.failed_step: str | None = None  # the method that raised

    @property
    def ok(self) -> bool:
        return self.done.is_set() and self.error is None


class BackendThread:
    """Runs the calls of one backend (see the module docstring).

    Args:
        name: the sink's name (for the thread's name).
        backend: the backend.
        on_done: called (on this thread) after each call.
    """

    def __init__(self, name: str, backend: Any, on_done: Callable[[], None]) -> None:
        self.backend = backend
        self._on_done = on_done
        self._cv = threading.Condition()
        self._call: Call | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.write_seconds = Durations()
        """How long each ``write_table`` call took (whatever its outcome)."""
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-backend-{name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A call is in flight (nothing else may be handed over)."""
        call = self._call
        return call is not None and not call.done.is_set()

    def submit(self, *steps: tuple[str, tuple[Any, ...]]) -> Call:
        """Hand a call over; the thread must not be busy."""
        call = Call(list(steps))
        with self._cv:
            assert not self.busy, "the backend is in use"
            self._call = call
            self._cv.notify_all()
        return call

    def stop(self, timeout: float) -> bool:
        """Let the thread end once it is not busy; True if it ended in time."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        CURRENT.set(SUPPRESSED)
        try:
            while True:
                with self._cv:
                    while (self._call is None or self._call.done.is_set()) and not self._closing:
                        self._cv.wait()
                    call = self._call
                    if call is None or call.done.is_set():
                        return  # closing, nothing in flight
                self._execute(call)
                call.done.set()
                self._on_done()
        finally:
            if self._loop is not None:
                try:
                    self._loop.close()
                except Exception:
                    pass
                self._loop = None

    def _execute(self, call: Call) -> None:
        for method, args in call.steps:
            started = time.perf_counter()
            try:
                result = getattr(self.backend, method)(*args)
                if inspect.isawaitable(result):
                    if self._loop is None:
                        self._loop = asyncio.new_event_loop()
                    self._loop.run_until_complete(result)
            except BaseException as exc:  # a driver's CancelledError is a failed call too
                call.error = exc
                call.failed_step = method
                return
            finally:
                if method == "write_table":
                    self.write_seconds.observe(time.perf_counter() - started)
