"""One thread per sink: a slow or failing sink stalls nobody but itself.

A sink with a spool (see ``_spool``) loses nothing to an outage: a batch that
still fails after its retries goes to the spool, and the sink enters *outage
mode*: new batches go straight to the spool (no retry schedule each), while a
recovery probe (backoff with jitter, capped) tries the backend again. Once a
write works, the spool is replayed in the background, one record between new
batches, oldest first. A backend that cannot be reached at start (connection
refused, timeout) starts the sink in outage mode too.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llamonitor._internal import CURRENT, SUPPRESSED
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage.base import RowsRejected
from llamonitor.transport._spool import (
    BATCH,
    REJECTED,
    Cursor,
    Record,
    Spool,
    SpoolFull,
    segment_files,
)

logger = logging.getLogger("llamonitor.transport")

MAX_PENDING_BATCHES = 4
"""Batches a sink may have waiting; the primary sink makes the worker wait
(the queue policy then applies), another sink drops its oldest batch."""

INITIALIZE_TIMEOUT_SECONDS = 30.0

SPOOL_RESCAN_SECONDS = 300.0
"""How often an idle sink looks for segments other processes left behind."""

POISON_STRIKES = 2
"""A spooled batch that fails this many times, each time after the backend took
other writes in between, is moved to the rejected records (with its error):
the backend is up, that batch is what it refuses."""

_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH",
        "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "EPIPE", "EAGAIN",
    )
    if hasattr(errno, name)
)
_TRANSIENT_NAMES = frozenset(
    {"CannotConnectNowError", "TooManyConnectionsError", "ConnectionDoesNotExistError"}
)


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` (from a backend's ``initialize``) the store being unreachable
    for now, rather than a setting being wrong?

    Transient: a connection refused/reset, a timeout, a name that does not
    resolve, or a driver error caused by one of these (anywhere in the
    ``__cause__``/``__context__`` chain). Never transient: ``ConfigurationError``
    and ``ImportError`` (a missing driver). A backend can decide itself by
    setting ``exc.llamonitor_transient = True/False``.
    """
    if isinstance(exc, (ConfigurationError, ImportError)):
        return False
    flag = getattr(exc, "llamonitor_transient", None)
    if isinstance(flag, bool):
        return flag
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, socket.gaierror)):
            return True
        if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        e = e.__cause__ or e.__context__
    return False


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


class SinkRunner:
    """Feeds one backend from its own thread, retrying with backoff.

    Counters (events): ``written``, ``failed`` (gave up; by reason in
    ``failed_reasons``), ``dropped`` (backlog overflow of a non-primary sink,
    or shutdown), ``retried`` (events re-sent after a failed attempt),
    ``pending``; with a spool: ``spooled`` (this process's events in the spool
    now), ``spooled_total``, ``rejected`` (rows the database refused, kept in
    the spool), ``replayed`` (written from the spool, ours or left by an
    earlier process) and ``recovered`` (the part of ``replayed`` an earlier or
    other process had spooled). At rest, the events handed to the sink are
    ``written + failed + dropped + pending + spooled + rejected``.
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
        spool: Spool | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.primary = primary
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.spool = spool
        self.written = 0
        self.failed = 0
        self.failed_reasons: dict[str, int] = {}
        self.dropped = 0
        self.retried = 0
        self.pending = 0
        self.spooled = 0
        self.spooled_total = 0
        self.rejected = 0
        self.replayed = 0
        self.recovered = 0
        self.outage = False
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
        self._initialized = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged_failure = False
        self._logged_full = False
        self._logged_spool_error = False
        self._logged_rejected = False
        self._probe_at = 0.0
        self._probe_with_batch = False
        self._probe_delay = backoff_seconds
        self._next_rescan = time.monotonic() + SPOOL_RESCAN_SECONDS
        self._cursor: Cursor | None = None
        self._ok_writes = 0  # successful writes so far (poison-batch detection)
        self._failed_at: dict[tuple[str, int], int] = {}
        self._strikes: dict[tuple[str, int], int] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-sink-{name}", daemon=True
        )

    # -- called from the worker / the application -------------------------

    def start(self, wait: bool) -> None:
        """Start the thread, which initializes the backend first.

        A backend that is unreachable (see :func:`is_transient`) does not stop
        a sink that has a spool: it starts in outage mode.

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
                self._count_failed(n, "sink_stopped")
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
                self._count_failed(n, "sink_stopped")
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
        """Write (or spool) what is pending, close the backend, by ``deadline``
        (monotonic). The spool is not replayed now: the next start does it.

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
        spool = self.spool
        return {
            "healthy": self.healthy,
            "written": self.written,
            "failed": self.failed,
            "failed_reasons": dict(self.failed_reasons),
            "dropped": self.dropped,
            "retried": self.retried,
            "pending": self.pending,
            "spooled": self.spooled,
            "spooled_total": self.spooled_total,
            "replayed": self.replayed,
            "recovered": self.recovered,
            "rejected": self.rejected,
            "outage": self.outage,
            "spool_dir": str(spool.directory) if spool is not None else None,
            "spool_bytes": spool.bytes if spool is not None else 0,
            "spool_full": spool.full if spool is not None else False,
            "corrupt_records": spool.corrupt_records if spool is not None else 0,
            "running": not self._dead and not self._abandoned,
            "last_error": self.last_error,
        }

    def _count_failed(self, n: int, reason: str) -> None:
        """(condition held)"""
        self.failed += n
        self.failed_reasons[reason] = self.failed_reasons.get(reason, 0) + n

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
            self._initialized = True
        except BaseException as exc:
            self.last_error = f"initialize: {_error_text(exc)}"
            if self.spool is None or not is_transient(exc):
                self._init_error = exc
                self._die(log=not self._waited)
                self._ready.set()
                self._close_loop()
                return
            self.healthy = False
            self._enter_outage(exc, at_start=True)
        if self.spool is not None and self.spool.backlog:
            self._measure_spool()
        self._ready.set()
        try:
            while True:
                item: tuple[Any, int] | Marker | None = None
                with self._cv:
                    while not self._q and not self._stopping:
                        wait = self._idle_wait()
                        if wait is not None and wait <= 0:
                            break
                        self._cv.wait(wait)
                    if self._q:
                        item = self._q.popleft()
                        self._cv.notify_all()
                    elif self._stopping:
                        break
                if item is None:
                    self._spool_work()
                elif isinstance(item, Marker):
                    self._sync_spool()
                    item.done()
                else:
                    self._write(*item)
                    if self._spool_work_due():
                        self._spool_work()  # one spooled batch between new ones
        finally:
            if not self._stopping:  # not a normal end: never leave work stranded
                self._die()
            self._close_spool()
            if self._initialized:
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
                self._count_failed(pending, "sink_stopped")
        if log:
            logger.error("llamonitor: the %s sink stopped: %s", self.name, self.last_error)

    def _close_loop(self) -> None:
        if self._loop is not None:
            try:
                self._loop.close()
            except Exception:
                pass
            self._loop = None

    # -- writing ------------------------------------------------------------

    def _write(self, table: Any, n: int) -> None:
        max_attempts = self.max_retries
        if self.spool is not None and (self.outage or not self._initialized):
            # No retry schedule per batch during an outage: straight to the spool,
            # unless the recovery probe is due, or the last probe was a spooled
            # batch that failed: then this batch is the probe (one attempt), so a
            # spooled batch the backend refuses cannot hold the sink down.
            if not self._initialized or (
                time.monotonic() < self._probe_at and not self._probe_with_batch
            ):
                self._to_spool(table, n)
                return
            self._probe_with_batch = False
            max_attempts = 0
        attempt = 0
        while True:
            try:
                self.call(self.backend.write_table, table)
            except RowsRejected as rej:
                self._rows_rejected(rej, n, mine=True, from_pending=True)
                self._write_worked()
                return
            except BaseException as exc:  # a driver's CancelledError must not kill the thread
                self.healthy = False
                self.last_error = _error_text(exc)
                if not self._logged_failure:
                    self._logged_failure = True
                    logger.warning(
                        "llamonitor: writing to %s failed (retrying up to %d times%s): %r",
                        self.name,
                        max_attempts,
                        ", then spooling" if self.spool is not None else "",
                        exc,
                    )
                if attempt >= max_attempts or self._abandoned:
                    if self.spool is not None and not self._abandoned:
                        self._to_spool(table, n)
                        self._enter_outage(exc)
                        return
                    with self._cv:
                        if not self._abandoned:
                            self._count_failed(n, "retries_exhausted")
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
            self._write_worked()
            return

    def _write_worked(self) -> None:
        self._ok_writes += 1
        if self.outage:
            self._leave_outage()
        elif not self.healthy:
            logger.info("llamonitor: writing to %s works again", self.name)
        self._logged_failure = False
        self.healthy = True

    def _rows_rejected(self, rej: RowsRejected, n: int, *, mine: bool, from_pending: bool) -> None:
        """The backend wrote a batch of ``n`` but for ``rej.rejected``: keep those
        in the spool with their errors (or count them failed without a spool)."""
        bad = rej.rejected.num_rows
        kept = False
        if self.spool is not None and bad:
            try:
                self.spool.append(rej.rejected, REJECTED, list(rej.errors))
                kept = True
            except Exception as exc:
                self._spool_failed(exc)
        with self._cv:
            if self._abandoned:
                return
            if from_pending:
                self.pending -= n
            else:
                self.replayed += n - bad
                if mine:
                    self.spooled -= n
            if mine:
                self.written += n - bad
                if kept:
                    self.rejected += bad
                else:
                    self._count_failed(bad, "rejected")
            else:
                self.recovered += n - bad
        if not self._logged_rejected:
            self._logged_rejected = True
            logger.warning(
                "llamonitor: %s rejected %d of %d events (first error: %s); %s",
                self.name,
                bad,
                n,
                rej.errors[0] if rej.errors else "?",
                f"kept with their errors in {self.spool.directory} (llamonitor spool status)"
                if kept and self.spool is not None
                else "counted as failed",
            )

    # -- the spool ------------------------------------------------------------

    def _to_spool(self, table: Any, n: int) -> None:
        assert self.spool is not None
        try:
            self.spool.append(table, BATCH)
        except Exception as exc:
            with self._cv:
                if not self._abandoned:
                    self._count_failed(n, "spool_full" if isinstance(exc, SpoolFull) else
                                       "spool_error")
                    self.pending -= n
            self._spool_failed(exc)
            return
        self._logged_full = False  # a new episode of "full" gets its own warning
        with self._cv:
            if not self._abandoned:
                self.spooled += n
                self.spooled_total += n
                self.pending -= n

    def _spool_failed(self, exc: BaseException) -> None:
        assert self.spool is not None
        if isinstance(exc, SpoolFull):
            if not self._logged_full:
                self._logged_full = True
                logger.warning(
                    "llamonitor: %s (sink %s). Events that cannot be written are counted as "
                    "failed until it drains (raise spool_max_bytes, or run "
                    "`llamonitor spool replay`)",
                    exc,
                    self.name,
                )
        elif not self._logged_spool_error:
            self._logged_spool_error = True
            logger.warning(
                "llamonitor: cannot write the spool of %s in %s (%r); events that cannot be "
                "written are counted as failed",
                self.name,
                self.spool.directory,
                exc,
            )

    def _enter_outage(self, exc: BaseException, at_start: bool = False) -> None:
        """The backend failed: spool new batches directly, probe it with backoff."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if not self.outage:
            self.outage = True
            self._probe_delay = self.backoff_seconds
            assert self.spool is not None
            logger.warning(
                "llamonitor: %s is unavailable%s (%s); spooling events to %s and "
                "retrying every %.3g s at most",
                self.name,
                " at start" if at_start else "",
                _error_text(exc),
                self.spool.directory,
                self.max_backoff_seconds,
            )
        else:
            self._probe_delay = min(self.max_backoff_seconds, self._probe_delay * 2)
        self._probe_at = time.monotonic() + self._probe_delay * (0.5 + random.random() / 2)

    def _leave_outage(self) -> None:
        self.outage = False
        self._probe_delay = self.backoff_seconds
        logger.info(
            "llamonitor: %s is back; replaying the spool in the background (%d events of "
            "this process)",
            self.name,
            self.spooled,
        )

    def _idle_wait(self) -> float | None:
        """Seconds until there is spool work (condition held); None: none."""
        spool = self.spool
        if spool is None:
            return None
        now = time.monotonic()
        if not self._initialized or (self.outage and spool.backlog):
            return max(0.0, self._probe_at - now)
        if self.outage:
            return None  # nothing spooled to probe with: the next batch is the probe
        if spool.backlog:
            return 0.0
        return max(0.0, self._next_rescan - now)

    def _spool_work_due(self) -> bool:
        if self.spool is None or self._stopping:
            return False
        if not self._initialized or self.outage:
            return self.spool.backlog and time.monotonic() >= self._probe_at
        return self.spool.backlog

    def _spool_work(self) -> None:
        """Between batches: probe the backend, or replay one spooled record."""
        spool = self.spool
        if spool is None:
            return
        now = time.monotonic()
        if not self._initialized:
            if now < self._probe_at:
                return
            try:
                self.call(self.backend.initialize)
            except BaseException as exc:
                self.last_error = f"initialize: {_error_text(exc)}"
                self._enter_outage(exc)
                return
            self._initialized = True
            self.healthy = True
            self._leave_outage()
            return
        if self.outage and (now < self._probe_at or not spool.backlog):
            return
        if spool.backlog:
            self._replay_one()
            return
        if now >= self._next_rescan:
            self._next_rescan = now + SPOOL_RESCAN_SECONDS
            self._measure_spool()

    def _measure_spool(self) -> None:
        assert self.spool is not None
        try:
            self.spool.measure()
            if segment_files(self.spool.directory, (BATCH,)):
                self.spool.backlog = True
        except OSError:
            pass

    def _replay_one(self) -> None:
        """Write the oldest spooled record (the probe, during an outage)."""
        spool = self.spool
        assert spool is not None
        record: Record | None = None
        try:
            for second in (False, True):
                if self._cursor is None:
                    self._cursor = spool.cursor((BATCH,))
                record = self._cursor.next()
                if record is not None:
                    break
                self._cursor.close()
                self._cursor = None
                if second or not spool.active_batch_bytes():
                    break
                # All that is left is in the segment we append to: close it (once
                # per outage, not per probe), so the cursor can take it.
                spool.rotate()
        except Exception as exc:
            self._spool_failed(exc)
            spool.backlog = False  # do not spin on it; the next append or rescan retries
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None
            return
        if record is None:
            return
        cursor = self._cursor
        assert cursor is not None
        try:
            self.call(self.backend.write_table, record.table)
        except RowsRejected as rej:
            self._rows_rejected(rej, record.rows, mine=record.mine, from_pending=False)
        except BaseException as exc:
            self.healthy = False
            self.last_error = _error_text(exc)
            if self._poisoned(record, exc):
                return
            self._enter_outage(exc)
            self._probe_with_batch = True
            return
        else:
            with self._cv:
                self.replayed += record.rows
                if record.mine:
                    self.spooled -= record.rows
                    self.written += record.rows
                else:
                    self.recovered += record.rows
        try:
            cursor.done(record)
        except OSError as exc:  # it will be replayed again: a duplicate, not a loss
            self._spool_failed(exc)
        self._write_worked()

    def _poisoned(self, record: Record, exc: BaseException) -> bool:
        """A record that keeps failing while the backend takes other writes in
        between is refused for its content: keep it as rejected, with the error."""
        key = record.key
        last = self._failed_at.get(key)
        strikes = self._strikes.get(key, 0)
        if last is None or self._ok_writes > last:
            strikes += 1
        self._failed_at[key] = self._ok_writes
        self._strikes[key] = strikes
        if strikes < POISON_STRIKES:
            return False
        spool = self.spool
        assert spool is not None and self._cursor is not None
        errors = [_error_text(exc)] * record.rows
        try:
            spool.append(record.table, REJECTED, errors)
            self._cursor.done(record)
        except Exception as err:
            self._spool_failed(err)
            return False
        del self._failed_at[key], self._strikes[key]
        with self._cv:
            if record.mine:
                self.spooled -= record.rows
                self.rejected += record.rows
        logger.warning(
            "llamonitor: %s keeps refusing a spooled batch of %d events while taking others "
            "(%s); moved it to the rejected records in %s",
            self.name,
            record.rows,
            _error_text(exc),
            spool.directory,
        )
        return True

    def _sync_spool(self) -> None:
        if self.spool is not None:
            try:
                self.spool.sync()
            except OSError as exc:
                self._spool_failed(exc)

    def _close_spool(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self.spool is not None:
            try:
                self.spool.close()
            except OSError as exc:
                self._spool_failed(exc)
