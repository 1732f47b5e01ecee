"""One thread per sink: a slow or failing sink stalls nobody but itself.

A sink with a spool (see ``spool``) loses nothing to an outage: a batch that
still fails after its retries goes to the spool, and the sink enters *outage
mode*: new batches go straight to the spool (no retry schedule each), while a
recovery probe (backoff with jitter, capped) tries the backend again. Once a
write works, the spool is replayed in the background, one record between new
batches, oldest first. A backend that cannot be reached at start (connection
refused, timeout, or an ``initialize`` still hanging after
``INITIALIZE_TIMEOUT_SECONDS``) starts the sink in outage mode too.

The backend itself runs on a thread of its own (``_backend``): the sink's
thread waits for a write in normal operation, but never for a probe, so a
probe that hangs does not stop batches from being spooled; and at shutdown
it stops waiting for a slow write in time to spool what is still queued.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import pyarrow as pa

from llamonitor import _taps
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage.base import RowsRejected
from llamonitor.transport._backend import Call
from llamonitor.transport._backlog import MAX_PENDING_BATCHES, BacklogSink, Marker
from llamonitor.transport.spool import Spool, error_text, is_transient

__all__ = ["MAX_PENDING_BATCHES", "Marker", "SinkRunner", "is_transient"]

logger = logging.getLogger("llamonitor.transport")

COALESCE_MAX_ROWS = 50_000
"""Batches waiting in a sink's backlog are written together up to this many rows."""

COALESCE_MIN_ROWS = 10_000
"""Rows a sink tries to gather into one write (see ``LINGER_SECONDS``)."""

LINGER_SECONDS = 0.05
"""A sink waits this long for batches to make up ``COALESCE_MIN_ROWS`` (unless a
flush or the shutdown wants them written now)."""

INITIALIZE_TIMEOUT_SECONDS = 30.0
"""How long the start waits for a backend's ``initialize``; with a spool, a
longer one starts the sink in outage mode (it keeps running as the probe)."""

STALLED_WRITE_SECONDS = 5.0
"""With a spool, a write still running after this long is taken for a stalled
store: the batch is spooled, the sink enters outage mode and the running call
becomes the first probe (a healthy store writes a batch far faster)."""

SHUTDOWN_SPOOL_RESERVE_SECONDS = 0.5
"""At shutdown, a sink with a spool stops waiting for a slow write this long
before the deadline (at most half the time given) and spools what is queued."""


def _backend_stats(backend: Any) -> dict[str, Any]:
    """An exporter backend's own counters (its ``stats()``), under ``"backend"``."""
    inner = getattr(backend, "inner", backend)
    stats = getattr(inner, "stats", None)
    if not callable(stats):
        return {}
    try:
        return {"backend": dict(stats())}
    except Exception:
        return {}


class SinkRunner(BacklogSink):
    """Feeds one backend from its own thread, retrying with backoff; with a
    spool, loses nothing to an outage (see ``SpoolingSink`` for the counters)."""

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
        outage_on_refusal: bool = True,
    ) -> None:
        super().__init__(
            name,
            backend,
            primary=primary,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            spool=spool,
        )
        self.outage_on_refusal = outage_on_refusal
        self.max_retries = max_retries
        self._waited = False
        self._hurry = threading.Event()
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._deadline: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-sink-{name}", daemon=True
        )

    # -- called from the worker / the application -------------------------

    def start(self, wait: bool) -> None:
        """Start the thread, which initializes the backend first.

        A backend that is unreachable (see :func:`is_transient`), or whose
        ``initialize`` does not return within ``INITIALIZE_TIMEOUT_SECONDS``,
        does not stop a sink that has a spool: it starts in outage mode.

        Raises:
            BaseException: what the backend's ``initialize`` raised, when ``wait``.
        """
        self._waited = wait  # the caller raises the initialization error itself
        self._thread.start()
        if wait:
            limit = INITIALIZE_TIMEOUT_SECONDS
            if not self._ready.wait(limit + 10.0 if self.spool is not None else limit):
                raise TimeoutError(f"backend {self.name!r} did not initialize in time")
            if self._init_error is not None:
                raise self._init_error

    def stop(self, deadline: float) -> bool:
        """Write (or spool) what is pending, close the backend, by ``deadline``
        (monotonic). The spool is not replayed now: the next start does it.

        Returns False if the deadline passed first; what was pending then is
        counted as dropped.
        """
        self.hurry(deadline)
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

    def hurry(self, deadline: float | None = None) -> None:
        """Shutdown is under way (by ``deadline``, monotonic): skip the remaining
        backoff sleeps; with a spool, stop waiting for a slow write in time to
        spool what is still queued."""
        self._hurry.set()
        if deadline is not None and self._deadline is None:
            with self._cv:
                self._deadline = deadline
                left = max(0.0, deadline - time.monotonic())
                self._spool_from = deadline - min(SHUTDOWN_SPOOL_RESERVE_SECONDS, left / 2)
                self._cv.notify_all()

    def health(self) -> dict[str, Any]:
        self.refresh()
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
            "spilled": self.spilled,
            "spilled_total": self.spilled_total,
            "replayed": self.replayed,
            "recovered": self.recovered,
            "written_elsewhere": self.written_elsewhere,
            "rejected": self.rejected,
            "outage": self.outage,
            "spool_dir": str(spool.directory) if spool is not None else None,
            "spool_bytes": spool.bytes if spool is not None else 0,
            "spool_rejected_bytes": spool.rejected_bytes if spool is not None else 0,
            "spool_full": spool.full if spool is not None else False,
            "spool_rejected_full": spool.rejected_full if spool is not None else False,
            "corrupt_records": spool.corrupt_records if spool is not None else 0,
            "running": not self._dead and not self._abandoned,
            "last_error": self.last_error,
            "write_seconds": self._backend.write_seconds.snapshot(),
            **_backend_stats(self.backend),
        }

    # -- the sink's thread --------------------------------------------------

    def _run(self) -> None:
        self._backend.start()
        try:
            if not self._initialize():
                return
            self._ready.set()
            self._serve()
        finally:
            self._ready.set()
            if not self._stopping and not self._dead:  # not a normal end: strand nothing
                self._die()
            self._close_spool()
            self._close_backend()

    def _initialize(self) -> bool:
        """Initialize the backend; False if the sink cannot run."""
        call = self._backend.submit(("initialize", ()))
        limit = INITIALIZE_TIMEOUT_SECONDS if self.spool is not None else None
        if not self._wait(call, limit):
            # Still connecting: start in outage mode; the call is the first probe.
            self._probe = call
            slow = TimeoutError(f"initialize did not finish within {limit:g} s")
            self.last_error = f"initialize: {error_text(slow)}"
            self.healthy = False
            self._enter_outage(slow, at_start=True)
            return True
        if call.error is None:
            self._initialized = True
        else:
            exc = call.error
            self.last_error = f"initialize: {error_text(exc)}"
            if self.spool is None or not self._outage_for(exc):
                self._init_error = exc
                self._die(log=not self._waited)
                return False
            self.healthy = False
            if not is_transient(exc):
                # The store answers but refuses us (a role or database that does not
                # exist yet, a wrong password): the outage warning says so, once.
                self._logged.add("init")
            self._enter_outage(exc, at_start=True)
        if self.spool is not None and self.spool.backlog:
            self._measure_spool()
        return True

    def _outage_for(self, exc: BaseException) -> bool:
        """Does an ``initialize`` error start the sink in outage mode (rather than
        fail the start)? An unreachable store does; a store that refuses us
        does too, unless ``fail_silently=False``; a wrong setting never does."""
        if is_transient(exc):
            return True
        if isinstance(exc, (ConfigurationError, ImportError)):
            return False
        return self.outage_on_refusal

    def _serve(self) -> None:
        while True:
            item: tuple[Any, int] | Marker | None = None
            finished = False
            with self._cv:
                while not self._q:
                    if self._probe is not None and self._probe.done.is_set():
                        break
                    if self._stopping:
                        # A probe writing a spooled record may finish in time to mark
                        # it done (no repeat later); a connect is not worth waiting for.
                        if self._probe_record is None or self._past(self._spool_from):
                            finished = True
                            break
                        wait: float | None = None  # the probe's end, or the shutdown's
                        if self._spool_from is not None:
                            wait = max(0.0, self._spool_from - time.monotonic())
                    else:
                        wait = self._idle_wait()
                        if wait is not None and wait <= 0:
                            break
                    self._cv.wait(wait)
                if self._q and not finished:
                    self._linger()
                    item = self._take_batches()
                    self._cv.notify_all()
            if finished:
                self._replay_spilled(self.spilled)  # what a burst spilled, while there is time
                return
            if self._probe is not None and self._probe.done.is_set():
                self._probe_done()
            if item is None:
                if not self._stopping:
                    self._spool_work()
            elif isinstance(item, Marker):
                self._replay_spilled(self.spilled)  # a flush means written, when it can be
                self._sync_spool()
                self.refresh()
                item.done()
            else:
                self._take(*item)
                if self._spool_work_due():
                    self._spool_work()  # one spooled batch between new ones

    def _linger(self) -> None:
        """A small batch at the head of the backlog (condition held): wait up to
        ``LINGER_SECONDS`` for more to write with it. A file per batch of a few
        thousand rows would cost the store more than the rows do."""
        until = time.monotonic() + LINGER_SECONDS
        while not self._stopping and not self.outage:
            rows = 0
            for item in self._q:
                if isinstance(item, Marker):
                    return  # a flush waits for these: write now
                rows += item[1]
            left = until - time.monotonic()
            if rows >= COALESCE_MIN_ROWS or len(self._q) >= MAX_PENDING_BATCHES or left <= 0:
                return
            self._cv.wait(left)

    def _take_batches(self) -> tuple[Any, int] | Marker:
        """The next item of the backlog (condition held); batches waiting behind
        it, up to the next flush marker, are written with it, as one: a sink
        that fell behind catches up with fewer, larger writes."""
        item = self._q.popleft()
        if isinstance(item, Marker) or not self._q or isinstance(self._q[0], Marker):
            return item
        tables, rows = [item[0]], item[1]
        while self._q and not isinstance(self._q[0], Marker) and rows < COALESCE_MAX_ROWS:
            more = self._q.popleft()
            assert not isinstance(more, Marker)
            tables.append(more[0])
            rows += more[1]
        try:  # batches with different metric group columns: the union of them
            return pa.concat_tables(tables, promote_options="default"), rows
        except Exception:  # tables that cannot be combined: one at a time
            for table in reversed(tables[1:]):
                self._q.appendleft((table, table.num_rows))
            return tables[0], item[1]

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

    def _close_backend(self) -> None:
        if self._backend.busy:
            # A call still hangs (at shutdown, past the time we had): leave it be;
            # its thread ends when it returns. A record it writes stays spooled.
            self._backend.stop(0)
            return
        if self._initialized:
            call = self._backend.submit(("close", ()))
            left = None if self._deadline is None else self._deadline - time.monotonic()
            if self._wait_done(call, left) and call.error is not None:
                logger.warning(
                    "llamonitor: closing backend %s failed: %r", self.name, call.error
                )
        left = 1.0 if self._deadline is None else self._deadline - time.monotonic()
        self._backend.stop(max(0.0, left))

    def _wait_done(self, call: Call, timeout: float | None) -> bool:
        return call.done.wait(None if timeout is None else max(0.0, timeout))

    # -- writing ------------------------------------------------------------

    def _take(self, table: Any, n: int) -> None:
        """A new batch: written, or spooled during an outage."""
        if self.spool is None or not (
            self.outage
            or not self._initialized
            or self._backend.busy
            or self._past(self._spool_from)  # shutdown: no time left to wait on writes
        ):
            self._write(table, n)
            return
        if (
            self._initialized
            and not self._backend.busy
            and not self._past(self._spool_from)
            and not self.spool.backlog
            and not self._backoff.wait(time.monotonic())
        ):
            # The probe is due and nothing is spooled to probe with (the spool
            # cannot be written): this batch is the probe, one attempt.
            self._write(table, n, attempts=0)
            return
        self._to_spool(table, n)

    def _write(self, table: Any, n: int, attempts: int | None = None) -> None:
        max_attempts = self.max_retries if attempts is None else attempts
        attempt = 0
        while True:
            call = self._backend.submit(("write_table", (table,)))
            limit = STALLED_WRITE_SECONDS if self.spool is not None else None
            if not self._wait(call, limit):
                # Shutdown, or a write stalled (a network that stopped answering):
                # spool the batch rather than let the queue overflow behind it.
                self._to_spool(table, n)
                if not self._past(self._spool_from):
                    # The stalled call is the outage's first probe. If it still
                    # lands, its rows are written twice (a SQL store drops the
                    # repeat by event_id).
                    self._probe = call
                    self.healthy = False
                    stalled = TimeoutError(f"a write did not finish within {limit:g} s")
                    self.last_error = error_text(stalled)
                    self._enter_outage(stalled)
                return
            exc = call.error
            if exc is None:
                with self._cv:
                    if not self._abandoned:
                        self.written += n
                        self.pending -= n
                self._write_worked()
                if _taps.TAPS and self.primary:
                    _taps.notify(table)  # durably written: the live tail may show it
                return
            if isinstance(exc, RowsRejected):
                self._rows_rejected(exc, n, mine=True, from_pending=True)
                self._write_worked()
                return
            self.healthy = False
            self.last_error = error_text(exc)
            self._warn_once(
                "write",
                "llamonitor: writing to %s failed (retrying up to %d times%s): %r",
                self.name,
                max_attempts,
                ", then spooling" if self.spool is not None else "",
                exc,
            )
            # With a spool, an unreachable store is not retried batch by batch
            # (each attempt can take a connect timeout): the outage's probe does it.
            spool_now = self.spool is not None and is_transient(exc)
            if attempt >= max_attempts or self._abandoned or spool_now:
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
