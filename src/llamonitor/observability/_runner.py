"""One handler's bounded queue and thread(s): what isolates handlers.

The caller appends to a deque and sets an ``Event`` only when it was clear
(no lock on the common path); the handler's thread clears it, then drains the
deque, so an append between the two is never missed. An async handler's
``ahandle`` runs on a private event loop, one per thread, kept for the
thread's life.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from llamonitor.observability._manager import ObservabilityManager

logger = logging.getLogger("llamonitor.observability")

IDLE_WAKE_SECONDS = 0.5
"""A handler's idle thread wakes this often to notice a stop request."""


class ObservabilityHandler:
    """Base of event handlers (seed 001's ``ObservabilityHandler``).

    Override :meth:`handle` (runs on the handler's own thread) or the
    coroutine :meth:`ahandle` (runs on the handler's private event loop). A
    handler that raises is counted and logged once, the other handlers get an
    ``EventHandlerFailedEvent``, and the next event is handled as usual.

    Attributes:
        ordered: events are handled one at a time, in the order observed
            (one thread). ``False``: ``ObservabilityConfig.num_workers``
            threads call the handler concurrently.
        name: the handler's name in ``health_check()`` and logs.
    """

    ordered: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def handle(self, event: Any) -> None:
        """Handle one event (on the handler's thread)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither handle nor ahandle")

    async def ahandle(self, event: Any) -> None:
        """Handle one event on the handler's private event loop (default: :meth:`handle`)."""
        self.handle(event)

    def handle_sampled(self, event: Any, sample_rate: float, around: Any = None) -> None:
        """What the manager calls (default: :meth:`handle`), for handlers that
        want more than the event.

        Args:
            event: the event.
            sample_rate: the fraction of sessions the event was kept at.
            around: the llamonitor span (``SpanContext``) current where the
                event was observed, or ``None``.
        """
        self.handle(event)

    def close(self) -> None:
        """Release resources (the manager's ``shutdown`` or ``unregister_handler``)."""


def _is_async(handler: Any) -> bool:
    """Whether the manager should await ``handler.ahandle`` rather than call ``handle``."""
    ahandle = getattr(type(handler), "ahandle", None)
    if ahandle is None:
        return False
    if isinstance(handler, ObservabilityHandler):
        return ahandle is not ObservabilityHandler.ahandle
    return not callable(getattr(handler, "handle", None))


class HandlerRunner:
    """Feeds one handler from its own bounded queue, on its own thread(s)."""

    def __init__(
        self,
        handler: Any,
        manager: ObservabilityManager,
        event_types: Iterable[type | str] | None,
        sample_rate: float,
    ) -> None:
        self.handler = handler
        self.manager = manager
        self.sample_rate = sample_rate
        cfg = manager.config
        self.maxsize = cfg.queue_size
        self.strategy = cfg.back_pressure_strategy
        self.block_timeout = cfg.block_timeout_seconds
        ordered = bool(getattr(handler, "ordered", False))
        self.workers = 1 if ordered else cfg.num_workers
        name = getattr(handler, "name", None)
        self.name = name if isinstance(name, str) and name else type(handler).__name__
        self.is_async = _is_async(handler)
        self.wants_rate = isinstance(handler, ObservabilityHandler) and not self.is_async
        self.handled = 0
        self.failed = 0
        self.sampled_out = 0
        self.dropped: Counter[str] = Counter()
        self._types: tuple[type, ...] = ()
        self._names: frozenset[str] = frozenset()
        self._accepts: dict[type, bool] = {}
        self.set_filter(event_types)
        self._lock = threading.Lock()  # counters written by the handler's threads; drops
        self._logged: set[str] = set()
        self._reset_queue()

    def _reset_queue(self) -> None:
        self._q: deque[Any] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._busy = [False] * self.workers
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # -- filter ------------------------------------------------------------------

    def set_filter(self, event_types: Iterable[type | str] | None) -> None:
        if event_types is None:
            self._types, self._names = (), frozenset()
        else:
            items = list(event_types)
            self._types = tuple(t for t in items if isinstance(t, type))
            self._names = frozenset(t for t in items if isinstance(t, str))
        self._filtered = event_types is not None
        self._accepts = {}

    def accepts(self, cls: type) -> bool:
        """Whether events of class ``cls`` go to this handler (cached per class)."""
        if not self._filtered:
            return True
        ok = self._accepts.get(cls)
        if ok is None:
            ok = issubclass(cls, self._types) if self._types else False
            if not ok and self._names:
                ok = any(base.__name__ in self._names for base in cls.__mro__)
            if len(self._accepts) < 1024:
                self._accepts[cls] = ok
        return ok

    # -- the caller's side ----------------------------------------------------------

    def offer(self, item: Any, wait: bool = True) -> bool:
        """Queue ``item`` (``(event, sample_rate)``) under the strategy; with
        ``wait=False`` a full queue under ``block`` returns False, uncounted."""
        q = self._q
        if self._stopping:
            self.count_drop("shutdown")
            return False
        if len(q) >= self.maxsize:
            strategy = self.strategy
            if strategy == "drop_oldest":
                try:
                    q.popleft()
                    self.count_drop("drop_oldest")
                except IndexError:
                    pass
            elif strategy == "block":
                if not wait:
                    return False
                if not self._wait_for_room():
                    self.count_drop("block_timeout")
                    return False
            else:
                self.count_drop("queue_full")
                return False
        q.append(item)
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _wait_for_room(self) -> bool:
        deadline = time.monotonic() + self.block_timeout
        with self._room:
            while len(self._q) >= self.maxsize and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(min(left, 0.05))
        return not self._stopping

    def count_drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    # -- the handler's threads -------------------------------------------------------

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(
                target=self._run, args=(i,), name=f"llamonitor-handler-{self.name}-{i}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def _run(self, slot: int) -> None:
        from llamonitor._internal import CURRENT, SUPPRESSED

        CURRENT.set(SUPPRESSED)  # decorated code a handler calls is not monitored
        loop = asyncio.new_event_loop() if self.is_async else None
        q, wake, busy = self._q, self._wake, self._busy
        try:
            while True:
                wake.wait(IDLE_WAKE_SECONDS)
                wake.clear()
                while True:
                    busy[slot] = True
                    try:
                        item = q.popleft()
                    except IndexError:
                        busy[slot] = False
                        break
                    self._notify_room()
                    self._call(item, loop)
                    busy[slot] = False
                if self._stopping and not q:
                    return
        finally:
            if loop is not None:
                loop.close()

    def _notify_room(self) -> None:
        if self.strategy == "block":
            with self._room:
                self._room.notify_all()

    def _call(self, item: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        event, rate, around = item
        handler = self.handler
        try:
            if loop is not None:
                loop.run_until_complete(handler.ahandle(event))
            elif self.wants_rate:
                handler.handle_sampled(event, rate, around)
            else:
                handler.handle(event)
        except Exception as exc:
            with self._lock:
                self.failed += 1
                first = type(exc).__name__ not in self._logged
                self._logged.add(type(exc).__name__)
            if first:
                logger.warning(
                    "llamonitor: observability handler %s failed on %s (further %s failures "
                    "are counted, not logged): %r",
                    self.name,
                    type(event).__name__,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
            self.manager.handler_failed(self, event, exc)
        else:
            with self._lock:
                self.handled += 1

    # -- flush, stop -----------------------------------------------------------------

    def idle(self) -> bool:
        return not self._q and not any(self._busy)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while not self.idle():
            if time.monotonic() >= deadline or not any(t.is_alive() for t in self._threads):
                return self.idle()
            self._wake.set()
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return True

    def stop(self, timeout: float) -> bool:
        drained = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        with self._room:
            self._room.notify_all()
        deadline = time.monotonic() + max(timeout, 0.0)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        close = getattr(self.handler, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                logger.warning("llamonitor: closing handler %s failed: %r", self.name, exc)
        return drained

    def after_fork(self) -> None:
        """In a forked child: a fresh queue and threads (the parent's are gone);
        the handler's ``after_fork_in_child()`` lets go of the parent's state."""
        self._lock = threading.Lock()
        self._reset_queue()
        hook = getattr(self.handler, "after_fork_in_child", None)
        if callable(hook):
            try:
                hook()
            except Exception as exc:
                logger.warning("llamonitor: handler %s failed after fork: %r", self.name, exc)
        self.start()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queued": len(self._q),
                "handled": self.handled,
                "failed": self.failed,
                "dropped": dict(self.dropped),
                "sampled_out": self.sampled_out,
                "sample_rate": self.sample_rate,
                "workers": self.workers,
            }
