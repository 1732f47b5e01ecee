"""One thread per sink: a slow or failing sink stalls nobody but itself."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llamonitor._internal import CURRENT, SUPPRESSED

logger = logging.getLogger("llamonitor.transport")

MAX_PENDING_BATCHES = 4
"""Batches a sink may have waiting; the primary sink makes the worker wait
(the queue policy then applies), another sink drops its oldest batch."""

INITIALIZE_TIMEOUT_SECONDS = 30.0


class Marker:
    """Set once every sink has written everything handed to it before."""

    def __init__(self, count: int) -> None:
        self.ok = True  # False: given up at shutdown, not written
        self._left = count
        self._lock = threading.Lock()
        self.event = threading.Event()
        if count == 0:
            self.event.set()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.event.set()


class SinkRunner:
    """Feeds one backend from its own thread, retrying with backoff.

    Counters (events): ``written``, ``failed`` (gave up after retries),
    ``dropped`` (backlog overflow of a non-primary sink, or shutdown),
    ``retried`` (events re-sent after a failed attempt).
    """

    def __init__(
        self,
        name: str,
        backend: Any,
        *,
        primary: bool,
        max_retries: int,
        backoff_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self.name = name
        self.backend = backend
        self.primary = primary
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self.pending = 0
        self.healthy = True
        self.last_error: str | None = None
        self._q: deque[tuple[Any, int] | Marker] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._abandoned = False
        self._dead = False  # the thread ended without being stopped
        self._waited = False
        self._hurry = threading.Event()
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged_failure = False
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-sink-{name}", daemon=True
        )

    # -- called from the worker / the application -------------------------

    def start(self, wait: bool) -> None:
        """Start the thread, which initializes the backend first.

        Raises:
            BaseException: what the backend's ``initialize`` raised, when ``wait``.
        """
        self._waited = wait  # the caller raises the initialization error itself
        self._thread.start()
        if wait:
            if not self._ready.wait(INITIALIZE_TIMEOUT_SECONDS):
                raise TimeoutError(f"backend {self.name!r} did not initialize in time")
            if self._init_error is not None:
                raise self._init_error

    def put(self, table: Any, n: int) -> bool:
        """Hand a batch of ``n`` events over (the worker thread).

        Returns False if the sink was abandoned at shutdown: the events are
        then the caller's to count. A sink whose thread died counts them as
        failed itself.
        """
        with self._cv:
            if self._dead:
                self.failed += n
                return True
            if self.primary:
                while (
                    len(self._q) >= MAX_PENDING_BATCHES and not self._abandoned and not self._dead
                ):
                    self._cv.wait(0.05)
            elif len(self._q) >= MAX_PENDING_BATCHES:
                for i, item in enumerate(self._q):
                    if not isinstance(item, Marker):
                        del self._q[i]
                        self.dropped += item[1]
                        self.pending -= item[1]
                        break
            if self._abandoned:
                return False
            if self._dead:
                self.failed += n
                return True
            self._q.append((table, n))
            self.pending += n
            self._cv.notify_all()
            return True

    def put_marker(self, marker: Marker) -> None:
        with self._cv:
            if self._abandoned or self._dead:  # nobody would take it off the queue
                marker.ok = not self._dead
                marker.done()
                return
            self._q.append(marker)
            self._cv.notify_all()

    def stop(self, deadline: float) -> bool:
        """Write what is pending, close the backend, by ``deadline`` (monotonic).

        Returns False if the deadline passed first; what was pending then is
        counted as dropped.
        """
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            with self._cv:
                self._abandoned = True
                self.dropped += self._release_backlog()
            return False
        return True

    def _release_backlog(self) -> int:
        """Empty the backlog (condition held): flush markers learn the batches were
        not written; returns how many events were pending."""
        pending, self.pending = self.pending, 0
        for item in self._q:
            if isinstance(item, Marker):
                item.ok = False
                item.done()
        self._q.clear()
        self._cv.notify_all()
        return pending

    def hurry(self) -> None:
        """Skip the remaining backoff sleeps (shutdown is under way)."""
        self._hurry.set()

    def health(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "written": self.written,
            "failed": self.failed,
            "dropped": self.dropped,
            "retried": self.retried,
            "pending": self.pending,
            "running": not self._dead and not self._abandoned,
            "last_error": self.last_error,
        }

    # -- the sink's thread --------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a backend method; run it on this sink's private loop if async."""
        result = fn(*args)
        if inspect.isawaitable(result):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(result)
        return result

    def _run(self) -> None:
        CURRENT.set(SUPPRESSED)
        try:
            self.call(self.backend.initialize)
        except BaseException as exc:
            self._init_error = exc
            self.last_error = f"initialize: {type(exc).__name__}: {exc}"
            self._die(log=not self._waited)
            self._ready.set()
            self._close_loop()
            return
        self._ready.set()
        try:
            while True:
                with self._cv:
                    while not self._q and not self._stopping:
                        self._cv.wait()
                    if not self._q:
                        break
                    item = self._q.popleft()
                    self._cv.notify_all()
                if isinstance(item, Marker):
                    item.done()
                    continue
                table, n = item
                self._write(table, n)
        finally:
            if not self._stopping:  # not a normal end: never leave work stranded
                self._die()
            try:
                self.call(self.backend.close)
            except BaseException as exc:
                logger.warning("llamonitor: closing backend %s failed: %r", self.name, exc)
            self._close_loop()

    def _die(self, log: bool = True) -> None:
        """The thread is ending abnormally: fail what is pending, free the waiters."""
        with self._cv:
            self._dead = True
            self.healthy = False
            pending = self._release_backlog()
            if not self._abandoned:
                self.failed += pending
        if log:
            logger.error("llamonitor: the %s sink stopped: %s", self.name, self.last_error)

    def _close_loop(self) -> None:
        if self._loop is not None:
            try:
                self._loop.close()
            except Exception:
                pass
            self._loop = None

    def _write(self, table: Any, n: int) -> None:
        attempt = 0
        while True:
            try:
                self.call(self.backend.write_table, table)
            except BaseException as exc:  # a driver's CancelledError must not kill the thread
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not self._logged_failure:
                    self._logged_failure = True
                    logger.warning(
                        "llamonitor: writing to %s failed (retrying up to %d times): %r",
                        self.name,
                        self.max_retries,
                        exc,
                    )
                if attempt >= self.max_retries or self._abandoned:
                    with self._cv:
                        if not self._abandoned:
                            self.failed += n
                            self.pending -= n
                    logger.error(
                        "llamonitor: gave up writing %d events to %s: %s",
                        n,
                        self.name,
                        self.last_error,
                    )
                    return
                attempt += 1
                with self._cv:
                    self.retried += n
                delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                self._hurry.wait(delay * (0.5 + random.random() / 2))
                continue
            with self._cv:
                if not self._abandoned:
                    self.written += n
                    self.pending -= n
            if not self.healthy:
                logger.info("llamonitor: writing to %s works again", self.name)
                self._logged_failure = False
            self.healthy = True
            return
