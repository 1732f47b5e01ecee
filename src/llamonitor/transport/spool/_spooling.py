"""A sink's outage mode and the replay of its spool: the base of ``SinkRunner``.

In outage mode new batches go straight to the spool while a probe, which the
sink's thread does not wait for, tries the backend again with backoff (its
``initialize`` if it never worked, else the oldest spooled record). Once a
write works, the spool is replayed between new batches, oldest first, passing
by the records the backend refused (``Suspects``) until it has taken others.
The counters, and appending to the spool, are ``CountingSink``'s (``_counting``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from llamonitor.storage.base import RowsRejected
from llamonitor.transport._backend import Call
from llamonitor.transport.spool._counting import CountingSink
from llamonitor.transport.spool._cursor import Cursor
from llamonitor.transport.spool._format import BATCH, REJECTED, Record
from llamonitor.transport.spool._outage import Backoff, Suspects, is_transient
from llamonitor.transport.spool._segments import segment_files
from llamonitor.transport.spool._spool import Spool, SpoolFull

logger = logging.getLogger("llamonitor.transport")

SPOOL_RESCAN_SECONDS = 300.0
"""How often an idle sink looks for segments other processes left behind."""

LOCKED_RETRY_SECONDS = 5.0
"""A replay that found a segment locked (another process appending to or
replaying it, ``spool status`` reading it) looks again this soon."""


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class SpoolingSink(CountingSink):
    """The spool side of a sink: its counters, the backend's thread and
    appending to the spool (``CountingSink``), outage mode and replay (see the
    module docstring); ``SinkRunner`` adds the queue and the sink's thread.

    Counters (events): ``written``, ``failed`` (gave up; by reason in
    ``failed_reasons``), ``dropped`` (backlog overflow of a non-primary sink,
    or shutdown), ``retried`` (events re-sent after a failed attempt),
    ``pending``; with a spool: ``spooled`` (this process's events in the spool
    now), ``spooled_total``, ``rejected`` (rows the database refused, kept in
    the spool), ``replayed`` (written from the spool, ours or left by an
    earlier process), ``recovered`` (the part of ``replayed`` an earlier or
    other process had spooled) and ``written_elsewhere`` (this process's
    spooled events another process or ``llamonitor spool replay`` took; they
    count in ``written``). At rest, the events handed to the sink are
    ``written + failed + dropped + pending + spooled + rejected``.
    """

    def __init__(
        self,
        name: str,
        backend: Any,
        *,
        backoff_seconds: float,
        max_backoff_seconds: float,
        spool: Spool | None,
    ) -> None:
        super().__init__(name, backend, spool=spool)
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._initialized = False
        self._probe: Call | None = None  # an outage probe in flight (not waited for)
        self._probe_record: Record | None = None  # what it writes, if a spooled record
        self._backoff = Backoff(backoff_seconds, max_backoff_seconds)
        self._next_rescan = time.monotonic() + SPOOL_RESCAN_SECONDS
        self._replay_not_before = 0.0
        self._cursor: Cursor | None = None
        self._suspects = Suspects()

    # -- outcomes -------------------------------------------------------------

    def _write_worked(self) -> None:
        self._suspects.wrote()
        if self.outage:
            self._leave_outage()
        elif not self.healthy:
            logger.info("llamonitor: writing to %s works again", self.name)
        self._logged.discard("write")
        self.healthy = True

    def _close_spool(self) -> None:
        self._close_cursor()
        if self.spool is not None:
            try:
                self.spool.close()
            except OSError as exc:
                self._spool_failed(exc)
            self._count_lost()

    # -- outage mode and replay -------------------------------------------------

    def _enter_outage(self, exc: BaseException, at_start: bool = False) -> None:
        """The backend failed: spool new batches directly, probe it with backoff."""
        self._close_cursor()
        if not self.outage:
            self.outage = True
            self._backoff.reset()
            assert self.spool is not None
            logger.warning(
                "llamonitor: %s %s%s (%s); spooling events to %s and "
                "retrying every %.3g s at most",
                self.name,
                "is unavailable" if is_transient(exc) else "refuses to work",
                " at start" if at_start else "",
                error_text(exc),
                self.spool.directory,
                self.max_backoff_seconds,
            )
        self._backoff.failed(time.monotonic())

    def _leave_outage(self) -> None:
        self.outage = False
        self._backoff.reset()
        logger.info(
            "llamonitor: %s is back; replaying the spool in the background (%d events of "
            "this process)",
            self.name,
            self.spooled,
        )

    def _idle_wait(self) -> float | None:
        """Seconds until there is spool work (condition held); None: none."""
        spool = self.spool
        if spool is None or self._probe is not None or self._backend.busy:
            return None  # the end of the call in flight wakes us
        if self._past(self._spool_from):
            return None  # shutdown: only new batches and the stop are left
        now = time.monotonic()
        if not self._initialized or (self.outage and spool.backlog):
            return self._backoff.wait(now)
        if self.outage:
            return None  # nothing spooled to probe with: the next batch is the probe
        if spool.backlog:
            return max(0.0, self._replay_not_before - now)
        return max(0.0, self._next_rescan - now)

    def _spool_work_due(self) -> bool:
        if self.spool is None or self._stopping or self._probe is not None:
            return False
        now = time.monotonic()
        if not self._initialized or self.outage:
            return self.spool.backlog and not self._backoff.wait(now)
        # Behind on new batches: replay once caught up, not while spilling.
        return self.spool.backlog and now >= self._replay_not_before and not self._behind()

    def _behind(self) -> bool:
        """Are new batches waiting beyond what the sink takes? (``BacklogSink``)"""
        return False

    def _replayed_mine(self, rows: int) -> None:
        """``rows`` this process spooled were written from the spool (``BacklogSink``)."""

    def _spool_work(self) -> None:
        """Between batches: start a probe, or replay one spooled record."""
        spool = self.spool
        if (
            spool is None
            or self._probe is not None
            or self._backend.busy
            or self._past(self._spool_from)
        ):
            return
        now = time.monotonic()
        if not self._initialized:
            if not self._backoff.wait(now):
                self._probe = self._backend.submit(("initialize", ()))
            return
        if self.outage:
            if spool.backlog and not self._backoff.wait(now):
                self._start_probe()
            return
        if spool.backlog and now >= self._replay_not_before:
            self._replay_one()
            return
        if now >= self._next_rescan:
            self._next_rescan = now + SPOOL_RESCAN_SECONDS
            self._measure_spool()

    def _measure_spool(self) -> None:
        assert self.spool is not None
        try:
            self.spool.tidy()
            self.spool.measure()
            segments = segment_files(self.spool.directory)
            self._suspects.prune({p.name for p in segments})
            if any(p.name.startswith("batch-") for p in segments):
                self.spool.backlog = True
        except OSError:
            pass

    def _next_record(self) -> Record | None:
        """The next spooled record to write: the oldest, passing by the suspects
        (unless only they are left); None if there is none."""
        spool = self.spool
        assert spool is not None
        skip = self._suspects.waiting()
        rotated = False
        try:
            while True:
                if self._cursor is None:
                    self._cursor = spool.cursor((BATCH,), skip)
                record = self._cursor.next()
                if record is not None:
                    return record
                cursor = self._close_cursor()
                if cursor is not None and cursor.skipped_locked:
                    self._replay_not_before = time.monotonic() + LOCKED_RETRY_SECONDS
                if not rotated and spool.active_batch_bytes():
                    # All that is left is in the segment we append to: close it,
                    # so the cursor can take it.
                    spool.rotate()
                    rotated = True
                    continue
                if skip and cursor is not None and cursor.skipped:
                    skip = frozenset()  # only suspects left: try the oldest again
                    continue
                return None
        except Exception as exc:
            self._spool_failed(exc)
            spool.backlog = False  # do not spin on it; the next append or rescan retries
            self._close_cursor()
            return None

    def _close_cursor(self) -> Cursor | None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            cursor.close()
        return cursor

    def _start_probe(self) -> None:
        """Outage: try the backend with the oldest spooled record, without waiting."""
        record = self._next_record()
        if record is None:
            return  # nothing to probe with: the next batch is the probe
        self._probe_record = record
        self._probe = self._backend.submit(("write_table", (record.table,)))

    def _probe_done(self) -> None:
        """A probe returned: the backend is back, or still out."""
        call, record = self._probe, self._probe_record
        assert call is not None
        self._probe, self._probe_record = None, None
        if record is None:  # initialize
            if call.error is not None:
                exc = call.error
                self.last_error = f"initialize: {error_text(exc)}"
                if not is_transient(exc):
                    self._warn_once(
                        "init", "llamonitor: %s cannot initialize (%s); still spooling and "
                        "retrying", self.name, error_text(exc),
                    )  # fmt: skip
                self._enter_outage(exc)
                return
            self._initialized = True
            self.healthy = True
            self._logged.discard("init")
            self._leave_outage()
            return
        self._record_written(record, call)

    def _replay_one(self) -> None:
        """Write the oldest spooled record (normal operation, between batches)."""
        record = self._next_record()
        if record is None:
            return
        call = self._backend.submit(("write_table", (record.table,)))
        if not self._wait(call):
            return  # shutdown: the record stays spooled (the call may still write it)
        self._record_written(record, call)

    def _record_written(self, record: Record, call: Call) -> None:
        """The outcome of writing a spooled record (a replay or a probe)."""
        cursor = self._cursor
        exc = call.error
        if exc is not None and not isinstance(exc, RowsRejected):
            self.healthy = False
            self.last_error = error_text(exc)
            if self._suspects.failed(record.key, exc) and self._set_aside(record, exc):
                self.healthy = True  # the store takes writes: go on at once
                self._backoff.at = 0.0
                return
            self._enter_outage(exc)
            return
        self._suspects.forget(record.key)
        if isinstance(exc, RowsRejected):
            self._rows_rejected(exc, record.rows, mine=record.mine, from_pending=False)
        else:
            with self._cv:
                self.replayed += record.rows
                if record.mine:
                    self.spooled -= record.rows
                    self.written += record.rows
                    self._replayed_mine(record.rows)
                else:
                    self.recovered += record.rows
        if cursor is not None:
            try:
                cursor.done(record)
            except OSError as exc2:  # it will be replayed again: a duplicate, not a loss
                self._spool_failed(exc2)
        self._write_worked()

    def _set_aside(self, record: Record, exc: BaseException) -> bool:
        """Move a record the backend keeps refusing (while taking others) to the
        rejected records, with its error (counted failed if they are full)."""
        spool, cursor = self.spool, self._cursor
        assert spool is not None
        if cursor is None:
            return False
        error = error_text(exc)
        try:
            spool.append(record.table, REJECTED, [error] * record.rows, ours=record.mine)
            kept = True
        except SpoolFull as full:
            self._spool_failed(full)
            kept = False
        except Exception as err:
            self._spool_failed(err)
            return False
        try:
            cursor.done(record)
        except OSError as err:  # it will be replayed again: a repeat, not a loss
            self._spool_failed(err)
        self._suspects.forget(record.key)
        with self._cv:
            if record.mine:
                self.spooled -= record.rows
                if kept:
                    self.rejected += record.rows
                else:
                    self._count_failed(record.rows, "rejected")
        logger.warning(
            "llamonitor: %s keeps refusing a spooled batch of %d events while taking others "
            "(%s); %s",
            self.name,
            record.rows,
            error,
            f"moved it to the rejected records in {spool.directory}"
            if kept
            else "the rejected records are full: counted as failed",
        )
        return True
