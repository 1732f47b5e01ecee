"""The bounded queue between the application and the worker thread.

``submit`` is on the application's hot path: a pid check, one uncontended
lock, an append. Everything else (conversion to Arrow, writing, retries)
happens on the worker and sink threads.

Past a quarter of either bound (*the soft mark*), a submitting thread that finds
the worker converting waits for it a few milliseconds (``SOFT_WAIT_SECONDS``):
threads that call as fast as they can would otherwise starve the worker of
the GIL, and a burst would end in drops instead of being converted. A thread
running an asyncio event loop waits ``LOOP_WAIT_SECONDS`` at most (every task
of the loop waits with it): enough to hand the worker the GIL, which comes
back after the interpreter's switch interval (5 ms), so a stall of the loop is
bounded by a few milliseconds, once per batch the worker takes. Below the
mark this costs nothing (the fast path compares with the soft bounds instead
of the hard ones). A worker that waits for a sink, or has been converting one
slice for longer than ``STALL_SECONDS`` (a collector's work that hangs), is not
waited for: the queue's policy applies when it is full.

Accounting is exact: every record that reaches ``submit`` (or
``count_sampled_out``) ends up in exactly one of ``written``, ``failed``, a
``dropped`` reason (``queue_full``, ``sampled_out``, ``shutdown``,
``invalid``, ``worker_died``), the primary sink's spool (``spooled``, or
``rejected`` for rows the database refused), or is still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import RECORD_BASE_BYTES
from llamonitor.schema.config import MonitorConfig
from llamonitor.transport._convert import records_to_table, warm_up
from llamonitor.transport._sinks import Marker, SinkRunner

logger = logging.getLogger("llamonitor.transport")

_getpid = os.getpid
_monotonic = time.monotonic
_running_loop = asyncio.events._get_running_loop

DRAIN_MAX = 10_000
"""Records converted at a time (at most half the queue): the worker takes
the whole queue at once, and converts it in slices of this size, each
released from the queue's bounds as soon as it is converted."""

SOFT_FRACTION = 0.25
"""The soft mark, as a fraction of ``max_queue_size`` and of ``max_queue_bytes``."""

SOFT_WAIT_SECONDS = 0.02
"""How long a thread past the soft mark waits for the worker's next slice."""

LOOP_WAIT_SECONDS = 0.001
"""The same wait, on a thread that runs an asyncio event loop."""

STALL_SECONDS = 1.0
"""A worker busy with one slice for longer than this is not waited for."""

DROP_REASONS = ("queue_full", "sampled_out", "shutdown", "invalid", "worker_died")


def record_bytes(record: tuple[Any, ...]) -> int:
    """Estimated memory a queued record holds (its text dominates). A row
    record (``record[0] is None``) may carry its measured size in ``record[3]``
    (``MonitoringWriter.record_table`` / ``record_rows``)."""
    text = record[5]
    if text.__class__ is str:
        return RECORD_BASE_BYTES + len(text)
    size = record[3]
    return size if record[0] is None and size > 0 else RECORD_BASE_BYTES


class Pipeline:
    """Queue + worker thread + sink runners for one configuration."""

    def __init__(self, config: MonitorConfig, make_sinks: Callable[[], list[SinkRunner]]) -> None:
        self.config = config
        self._make_sinks = make_sinks
        self._maxsize = config.max_queue_size
        self._maxbytes = config.max_queue_bytes
        self._policy = config.queue_full_policy
        self._block_timeout = config.block_timeout_seconds
        self._batch_size = config.storage.batch_size
        self._drain_max = min(DRAIN_MAX, max(1, config.max_queue_size // 2))
        # Never below a batch: the user's batching (a worker that sleeps until
        # batch_size events or the interval) is not pre-empted.
        soft = max(self._batch_size, int(self._maxsize * SOFT_FRACTION))
        self._soft_size = min(self._maxsize, soft)
        self._soft_bytes = int(self._maxbytes * SOFT_FRACTION)
        self._interval = config.storage.flush_interval_seconds
        self._reset_state()
        self.sinks: list[SinkRunner] = []

    def _reset_state(self) -> None:
        self._pid = _getpid()
        # An RLock, not a Lock: a decorated generator that the garbage collector
        # finalizes while this thread holds the lock records its span, re-entering
        # submit() (sentry-python's _queue.py swaps in an RLock for the same reason).
        self._lock = threading.RLock()
        self._not_full = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._q: deque[tuple[Any, ...]] = deque()
        self._bytes = 0  # queued and in-hand records, until measured
        self._inflight = 0  # records drained, not yet handed to the sinks
        self._inflight_bytes = 0
        self._flush_reqs: list[Marker] = []
        self._stopping = False
        self._closed = False
        self._abandoned = False  # shutdown missed its deadline and counted what was held
        self._worker_alive = False
        self._worker: threading.Thread | None = None
        self._converting_since: float | None = None  # the worker's current slice began
        self.received = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.worker_restarts = 0

    # -- lifecycle ----------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Start sinks (initializing their backends) and the worker.

        Raises:
            BaseException: a backend's initialization error (when ``wait``).
        """
        self.sinks = self._make_sinks()
        started: list[SinkRunner] = []
        try:
            for sink in self.sinks:
                started.append(sink)
                sink.start(wait=wait)
        except BaseException:
            deadline = _monotonic() + 5.0
            for sink in started:  # the one that failed too: it may still be running
                sink.stop(deadline)
            raise
        warm_up()  # lazy imports done here, not on the worker (fork safety)
        self._start_worker()

    def _start_worker(self) -> None:
        self._worker_alive = True
        self._worker = threading.Thread(target=self._run, name="llamonitor-worker", daemon=True)
        self._worker.start()

    def _restart_after_fork(self) -> None:
        # The parent's queue, lock and threads are not ours: the parent writes
        # its own records. Start from scratch, with our own ids.
        for sink in self.sinks:
            if sink.spool is not None:
                sink.spool.forget()  # a raw fork(2) skipped the at-fork hook
        _handoff.reseed_ids()
        self._reset_state()
        self.sinks = self._make_sinks()
        for sink in self.sinks:
            sink.start(wait=False)
        self._start_worker()

    def _restart_worker(self) -> None:
        with self._lock:
            if self._worker_alive or self._stopping:
                return
            self.worker_restarts += 1
            self._worker_alive = True
            # What the dead worker had drained is gone with it: say so.
            self.dropped["worker_died"] += self._inflight
            self._inflight = 0
            self._bytes -= self._inflight_bytes
            self._inflight_bytes = 0
        logger.warning("llamonitor: the worker thread had stopped; restarted it")
        self._worker = threading.Thread(target=self._run, name="llamonitor-worker", daemon=True)
        self._worker.start()

    # -- the hot path ---------------------------------------------------------

    def submit(self, record: tuple[Any, ...]) -> bool:
        """Queue one record; returns False if it was dropped (and counted)."""
        if self._pid != _getpid():
            self._restart_after_fork()
        text = record[5]
        if text.__class__ is str:
            nbytes = RECORD_BASE_BYTES + len(text)
        else:  # as record_bytes: a row record may carry its measured size
            size = record[3]
            nbytes = size if record[0] is None and size > 0 else RECORD_BASE_BYTES
        lock = self._lock
        lock.acquire()
        try:
            self.received += 1
            if self._stopping:
                self.dropped["shutdown"] += 1
                return False
            q = self._q
            # The soft bounds; past them, _congested applies the hard ones too.
            if len(q) + self._inflight >= self._soft_size or (
                self._bytes + nbytes > self._soft_bytes
            ):
                if not self._congested(nbytes):
                    self.dropped["queue_full"] += 1
                    return False
                q = self._q  # the worker may have swapped the deque while we waited
            q.append(record)
            self._bytes += nbytes
            n = len(q)
        finally:
            lock.release()
        if n == self._batch_size:
            self._wake.set()
        if not self._worker_alive:
            self._restart_worker()
        return True

    def submit_all(self, records: Sequence[tuple[Any, ...]], wait_seconds: float) -> bool:
        """Queue all of ``records`` or none of them (a receiver's request).

        Waits up to ``wait_seconds`` for the worker to make room for them all
        (by count and by :func:`record_bytes`; a batch larger than the bounds
        is queued once the queue is empty). False: none was queued (no room
        in time, or shutting down) and nothing is counted as dropped -- the
        caller still holds them (an OTLP client is told to retry). Not for
        the hot path: one lock for the whole batch.
        """
        if self._pid != _getpid():
            self._restart_after_fork()
        k = len(records)
        nbytes = sum(map(record_bytes, records))
        with self._lock:
            deadline: float | None = None
            while (
                len(self._q) + self._inflight + k > self._maxsize
                or self._bytes + nbytes > self._maxbytes
            ) and (self._q or self._inflight or self._bytes):  # else too big: queued alone
                if self._stopping:
                    return False
                if deadline is None:
                    deadline = _monotonic() + wait_seconds
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._not_full.wait(left)
            if self._stopping:
                return False
            self.received += k
            self._q.extend(records)
            self._bytes += nbytes
            n = len(self._q)
        if n >= self._batch_size:
            self._wake.set()
        if not self._worker_alive:
            self._restart_worker()
        return True

    @property
    def capacity(self) -> int:
        """Records the queue holds at most (``max_queue_size``)."""
        return self._maxsize

    @property
    def byte_capacity(self) -> int:
        """Estimated bytes the queue holds at most (``max_queue_bytes``)."""
        return self._maxbytes

    def _congested(self, nbytes: int) -> bool:
        """Past the soft mark (lock held): give the worker a moment if it is
        behind, then apply the policy if the queue is full. True: append."""
        since = self._converting_since
        if (
            len(self._q) >= self._batch_size  # the worker was woken for these
            and since is not None
            and _monotonic() - since < STALL_SECONDS
        ):
            # An event loop only hands the worker the GIL: its tasks wait with it.
            self._not_full.wait(SOFT_WAIT_SECONDS if _running_loop() is None else LOOP_WAIT_SECONDS)
        if not self._full(nbytes):
            return True
        return self._make_room(nbytes)

    def _make_room(self, nbytes: int) -> bool:
        """Apply the queue-full policy (lock held). True if the record fits now."""
        if self._policy == "drop_oldest":
            q = self._q
            while q and self._full(nbytes):
                old = q.popleft()
                self._bytes -= record_bytes(old)
                self.dropped["queue_full"] += 1
            return not self._full(nbytes)
        if self._policy == "block" and self._block_timeout > 0:
            self._wake.set()
            deadline = _monotonic() + self._block_timeout
            while self._full(nbytes):
                left = deadline - _monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._not_full.wait(left)
            return True
        return False

    def _full(self, nbytes: int) -> bool:
        """No room for a record of ``nbytes`` (lock held). The records the worker
        holds count too, so memory stays bounded by the queue's limits."""
        return (
            len(self._q) + self._inflight >= self._maxsize
            or self._bytes + nbytes > self._maxbytes
        )

    def count_sampled_out(self) -> None:
        if self._pid != _getpid():
            self._restart_after_fork()
        with self._lock:
            self.received += 1
            self.dropped["sampled_out"] += 1

    # -- the worker thread ------------------------------------------------

    def _drain(self) -> tuple[list[tuple[Any, ...]], int]:
        """Take every queued record (lock held); they stay counted against the
        queue's bounds until converted and handed over."""
        batch = list(self._q)
        self._q = deque()
        return batch, self._bytes - self._inflight_bytes

    def _convert_all(self, batch: list[tuple[Any, ...]], nbytes: int) -> None:
        """Convert and hand over ``batch`` in slices of at most ``_drain_max``
        records, each released from the queue's bounds (with its share of
        ``nbytes``; the shares add up exactly) as soon as it is converted."""
        n, step, given = len(batch), self._drain_max, 0
        while batch:
            part = batch[:step]
            del batch[:step]  # nothing but ``part`` holds these records now
            share = nbytes - given if not batch else nbytes * len(part) // n
            given += share
            self._process(part, share)

    def _run(self) -> None:
        CURRENT.set(SUPPRESSED)
        more = False
        try:
            while True:
                if not more:
                    self._wake.wait(self._interval)
                    self._wake.clear()
                flushes: list[Marker] = []
                with self._lock:
                    batch: list[tuple[Any, ...]] = []
                    nbytes = 0
                    if self._q:
                        batch, nbytes = self._drain()
                        self._inflight += len(batch)
                        self._inflight_bytes += nbytes
                        self._converting_since = _monotonic()
                    # everything before these requests is in hand
                    flushes, self._flush_reqs = self._flush_reqs, []
                    stopping = self._stopping
                if batch:
                    self._convert_all(batch, nbytes)
                    self._converting_since = None
                for marker in flushes:
                    for sink in self.sinks:
                        sink.put_marker(marker)
                with self._lock:
                    # Records that came meanwhile: go on at once if they make a batch.
                    more = len(self._q) >= self._batch_size or (stopping and bool(self._q))
                    if stopping and not self._q:
                        return
        finally:
            self._converting_since = None
            self._worker_alive = False

    def _process(self, batch: list[tuple[Any, ...]], nbytes: int) -> None:
        n = len(batch)
        try:
            table, invalid = records_to_table(batch, self._pid)
        except Exception as exc:  # a bug in conversion: count the batch, keep going
            try:
                report_internal_error("convert_batch", exc)
            except Exception:
                pass
            table, invalid = None, n
        batch.clear()  # the texts are measured: let them go before waiting on a sink
        with self._lock:
            self._converting_since = None  # handing over to the sinks: not converting
            self.dropped["invalid"] += invalid
            self._inflight -= invalid
            self._bytes -= nbytes
            self._inflight_bytes -= nbytes
            self._not_full.notify_all()
        kept = n - invalid
        handed = [False]

        def taken() -> None:
            # Called by the primary sink under its lock as it takes the batch: the
            # events leave our count as they enter its, so no snapshot (stats()
            # holds both locks) sees them twice. Until then, while a full primary
            # sink makes us wait, the batch is ours.
            with self._lock:
                handed[0] = True
                if not self._abandoned:  # else shutdown counted it already
                    self._inflight -= kept

        accepted = True
        if table is not None and table.num_rows:
            for i, sink in enumerate(self.sinks):
                ok = sink.put(table, table.num_rows, taken if i == 0 else None)
                accepted = ok if i == 0 else accepted
        with self._lock:
            if not handed[0] and not self._abandoned:
                self._inflight -= kept
                if not accepted:  # the primary sink was abandoned at shutdown
                    self.dropped["shutdown"] += kept
            if self._inflight:  # the next slice of what was drained
                self._converting_since = _monotonic()
            self._not_full.notify_all()

    # -- flush / shutdown ---------------------------------------------------

    def wake(self) -> None:
        """Start on what is queued now, without waiting for a batch or the
        interval (nor for the write)."""
        if self._q:
            self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written (or given up)."""
        if self._closed or self._pid != _getpid():
            return True
        marker = Marker(len(self.sinks))
        with self._lock:
            self._flush_reqs.append(marker)
        self._wake.set()
        if not self._worker_alive:
            self._restart_worker()
        return marker.event.wait(max(0.0, timeout)) and marker.ok

    def shutdown(self, timeout: float) -> bool:
        """Flush, stop the threads and close the backends, all by one deadline.

        Idempotent. Returns False if the deadline passed; what was still
        pending then is counted as dropped for ``shutdown``.
        """
        deadline = _monotonic() + max(0.0, timeout)
        if self._pid != _getpid():
            # A forked child that never recorded: the parent's threads and lock
            # are not ours (the lock may even be held by a thread that is gone).
            self._closed = True
            return True
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self._stopping = True
            self._not_full.notify_all()
        for sink in self.sinks:
            # Retries stop sleeping, and a sink with a spool stops waiting for a
            # slow write in time to spool what is queued: the deadline is all there is.
            sink.hurry(deadline)
        self._wake.set()
        ok = True
        worker = self._worker
        if worker is not None and worker.ident is not None:
            worker.join(max(0.0, deadline - _monotonic()))
            if worker.is_alive():
                ok = False
        for sink in self.sinks:
            if not sink.stop(deadline):
                ok = False
        with self._lock:
            left = len(self._q) + self._inflight
            self._abandoned = True
            if left:
                self.dropped["shutdown"] += left
                self._q.clear()
                self._inflight = 0
                self._bytes = self._inflight_bytes = 0
            markers, self._flush_reqs = self._flush_reqs, []
        for marker in markers:  # a flush that raced the shutdown returns now
            marker.ok = not left
            marker.event.set()
        return ok

    def after_fork_in_child(self) -> None:
        """os.register_at_fork hook: fresh locks now, fresh threads on next use."""
        self._lock = threading.RLock()
        self._not_full = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pid = -1  # the next submit() restarts the pipeline for this process

    # -- numbers ------------------------------------------------------------

    @property
    def primary(self) -> SinkRunner | None:
        return self.sinks[0] if self.sinks else None

    def stats(self) -> dict[str, Any]:
        if self._pid != _getpid() and not self._closed:
            self._restart_after_fork()  # report this process, not the parent
        sinks = {s.name: s.health() for s in self.sinks}  # spool counts refreshed first
        primary = self.primary
        # The primary sink's lock, then ours (the order its put() takes them): a
        # batch moving from our hands to the sink is counted once.
        with primary._cv if primary is not None else contextlib.nullcontext():
            with self._lock:
                queued = len(self._q)
                inflight = self._inflight
                received = self.received
                dropped = dict(self.dropped)
            written = primary.written if primary else 0
            failed = primary.failed if primary else 0
            spooled = primary.spooled if primary else 0
            rejected = primary.rejected if primary else 0
            pending = primary.pending if primary else 0
            if primary is not None:
                dropped["shutdown"] += primary.dropped
        buffered = inflight + pending
        return {
            "running": self._worker_alive and not self._closed,
            "queue_size": queued,
            "buffer_size": buffered,
            "backend_healthy": all(s.healthy for s in self.sinks),
            "events_received": received,
            "events_written": written,
            "events_failed": failed,
            "events_failed_by_reason": dict(primary.failed_reasons) if primary else {},
            "events_spooled": spooled,
            "events_rejected": rejected,
            "events_replayed": primary.replayed if primary else 0,
            "events_dropped": sum(dropped.values()),
            "events_sampled_out": dropped["sampled_out"],
            "events_retried": primary.retried if primary else 0,
            "dropped": dropped,
            "worker_restarts": self.worker_restarts,
            "sinks": sinks,
        }
