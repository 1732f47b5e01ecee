"""A sink's backlog: the batches the worker handed it, and what it does when
it falls behind.

The worker hands each converted batch to every sink (:meth:`BacklogSink.put`).
A sink holds up to ``MAX_PENDING_BATCHES``. When the primary sink is behind
(a slow store, a burst), the worker does not wait for it as long as the sink
has a spool with room: the sink takes up to ``MAX_SPILL_BATCHES`` more and its
thread *spills* the excess to the spool (an append of Arrow IPC, while its
own write is in flight), replaying it once it has caught up: between batches
when it is no longer behind, at the latest at the next flush or at shutdown.
Only a primary sink without a spool, or whose spool is full, makes the worker
wait (and then the queue's policy decides what is dropped). Another sink (an
extra backend, an exporter) never makes the worker wait: with a spool that has
room it spills like the primary; past that, it drops its oldest batch,
counted in its ``dropped``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llamonitor.transport.spool import BATCH, SpoolFull, SpoolingSink

MAX_PENDING_BATCHES = 4
"""Batches a sink holds for writing; see the module docstring for what
happens to more."""

MAX_SPILL_BATCHES = 4
"""Batches a sink takes beyond ``MAX_PENDING_BATCHES`` while it can spill them
to its spool."""

SPILL_RETRY_SECONDS = 5.0
"""After a spill failed for another reason than a full spool (an unwritable
directory), the worker waits for the sink again this long before retrying."""


class Marker:
    """Set once every sink has written (or spooled) everything handed to it before."""

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


class BacklogSink(SpoolingSink):
    """The backlog of a sink and its spill to the spool (see the module
    docstring); ``SinkRunner`` adds the thread that writes it."""

    def __init__(self, name: str, backend: Any, *, primary: bool, **kw: Any) -> None:
        super().__init__(name, backend, **kw)
        self.primary = primary
        self.spilled = 0  # this process's events spilled and not replayed yet
        self.spilled_total = 0
        self._q: deque[tuple[Any, int] | Marker] = deque()
        self._dead = False  # the thread ended without being stopped
        self._spill_not_before = 0.0

    # -- the worker's side ------------------------------------------------------

    def put(self, table: Any, n: int, taken: Callable[[], None] | None = None) -> bool:
        """Hand a batch of ``n`` events over (the worker thread); ``taken`` is
        called, under this sink's lock, once they are this sink's to count.

        Returns False if the sink was abandoned at shutdown: the events are
        then the caller's to count. A sink whose thread died counts them as
        failed itself.
        """
        with self._cv:
            if self._dead:
                self._count_failed(n, "sink_stopped")
                if taken is not None:
                    taken()
                return True
            if self.primary:
                while not self._abandoned and not self._dead:
                    room = MAX_PENDING_BATCHES + (MAX_SPILL_BATCHES if self._can_spill() else 0)
                    if len(self._q) < room:
                        break
                    self._cv.wait(0.05)
            elif len(self._q) >= MAX_PENDING_BATCHES + (
                MAX_SPILL_BATCHES if self._can_spill() else 0
            ):
                for i, item in enumerate(self._q):
                    if not isinstance(item, Marker):
                        del self._q[i]
                        self.dropped += item[1]
                        self.pending -= item[1]
                        break
            if self._abandoned:
                return False
            if self._dead:
                self._count_failed(n, "sink_stopped")
            else:
                self._q.append((table, n))
                self.pending += n
                self._cv.notify_all()
            if taken is not None:
                taken()
            return True

    def put_marker(self, marker: Marker) -> None:
        with self._cv:
            if self._abandoned or self._dead:  # nobody would take it off the queue
                marker.ok = not self._dead
                marker.done()
                return
            self._q.append(marker)
            self._cv.notify_all()

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

    # -- spilling (the sink's thread) ---------------------------------------------

    def _can_spill(self) -> bool:
        """Can the excess of the backlog go to the spool now? (condition held)"""
        spool = self.spool
        return (
            spool is not None
            and self._initialized
            and not self.outage
            and not self._stopping
            and not spool.full
            and time.monotonic() >= self._spill_not_before
        )

    def _behind(self) -> bool:
        return len(self._q) >= MAX_PENDING_BATCHES

    def _while_waiting(self) -> bool:
        """Called (condition held) while the sink waits for its backend: spill
        the newest batch beyond ``MAX_PENDING_BATCHES``. True if it did."""
        if len(self._q) <= MAX_PENDING_BATCHES or not self._can_spill():
            return False
        for k in range(len(self._q) - 1, -1, -1):
            item = self._q[k]
            if not isinstance(item, Marker):
                break
        else:
            return False
        del self._q[k]
        self._cv.release()  # the append is I/O: let the worker hand over meanwhile
        try:
            kept = self._spill(item)
        finally:
            self._cv.acquire()
        if not kept:
            self._q.insert(k, item)  # only appended to since: k is still its place
        self._cv.notify_all()
        return True

    def _spill(self, item: tuple[Any, int]) -> bool:
        """Append a batch of the backlog to the spool; False if it stays in the
        backlog (the spool is full, or cannot be written)."""
        assert self.spool is not None
        table, n = item
        try:
            self.spool.append(table, BATCH)
        except SpoolFull:
            return False  # the worker waits for the sink now, as without a spool
        except Exception as exc:
            self._spool_failed(exc)
            self._spill_not_before = time.monotonic() + SPILL_RETRY_SECONDS
            return False
        with self._cv:
            if not self._abandoned:
                self.spooled += n
                self.spooled_total += n
                self.spilled += n
                self.spilled_total += n
                self.pending -= n
        return True

    def _replayed_mine(self, rows: int) -> None:
        self.spilled = max(0, self.spilled - rows)

    def _replay_spilled(self, limit: int) -> None:
        """Write back up to ``limit`` events this process spilled, while the store
        takes writes (at a flush, and at shutdown while there is time)."""
        target = self.replayed + limit
        while (
            self.spilled > 0
            and self.replayed < target
            and self.spool is not None
            and self._initialized
            and not self.outage
            and self._probe is None
            and not self._backend.busy
            and not self._past(self._spool_from)
        ):
            before = self.replayed
            self._replay_one()
            if self.replayed == before:
                return  # nothing replayable now (a locked segment, a failed write)
