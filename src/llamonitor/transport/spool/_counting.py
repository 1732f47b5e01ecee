"""A sink's counters and its spool: the base of ``SpoolingSink``.

What this process spooled is counted in ``spooled`` until it is written, by
this process or (seen by :meth:`CountingSink.refresh`) by another; what the
spool lost (a segment deleted or damaged under us) moves to ``failed``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from llamonitor.storage.base import RowsRejected
from llamonitor.transport._backend import BackendThread, Call
from llamonitor.transport.spool._format import BATCH, REJECTED
from llamonitor.transport.spool._spool import Spool, SpoolFull

logger = logging.getLogger("llamonitor.transport")


class CountingSink:
    """Counters, the backend's thread, and appending to the spool (the
    counters are described at ``SpoolingSink``, which adds outage mode and
    replay)."""

    def __init__(self, name: str, backend: Any, *, spool: Spool | None) -> None:
        self.name = name
        self.backend = backend
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
        self.written_elsewhere = 0
        self.outage = False
        self.healthy = True
        self.last_error: str | None = None
        self._cv = threading.Condition()
        self._stopping = False
        self._abandoned = False  # shutdown gave up on this sink: it counts no more
        self._logged: set[str] = set()  # warnings given once per episode
        self._backend = BackendThread(name, backend, self._wake)
        self._spool_from: float | None = None  # shutdown: stop waiting on writes from then

    # -- counting -------------------------------------------------------------

    def refresh(self) -> None:
        """Bring ``spooled``/``rejected`` in line with the disk: this process's
        spooled events another process (a forked child, ``llamonitor spool
        replay``) wrote move to ``written``; ones lost (a segment deleted or
        damaged) to ``failed``."""
        spool = self.spool
        if spool is None or self._pid_changed():
            return
        try:
            gone = spool.reconcile()
        except OSError:
            return
        taken = gone[BATCH] + gone[REJECTED]
        if taken:
            with self._cv:
                self.spooled -= gone[BATCH]
                self.rejected -= gone[REJECTED]
                self.written += taken
                self.written_elsewhere += taken
        self._count_lost()

    def _pid_changed(self) -> bool:
        spool = self.spool
        return spool is not None and spool._pid != os.getpid()

    def _count_failed(self, n: int, reason: str) -> None:
        """(condition held)"""
        self.failed += n
        self.failed_reasons[reason] = self.failed_reasons.get(reason, 0) + n

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)

    # -- waiting on the backend's thread -------------------------------------

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _past(self, when: float | None) -> bool:
        return when is not None and time.monotonic() >= when

    def _wait(self, call: Call, timeout: float | None = None) -> bool:
        """Wait for ``call``; False if it is still running after ``timeout``
        seconds or, with a spool, once shutdown wants what is queued spooled."""
        until = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not call.done.is_set():
                spool_from = self._spool_from if self.spool is not None else None
                if self._past(until) or self._past(spool_from):
                    return False
                if self._while_waiting():
                    continue
                ends = [t for t in (until, spool_from) if t is not None]
                self._cv.wait(max(0.0, min(ends) - time.monotonic()) if ends else None)
        return True

    def _while_waiting(self) -> bool:
        """Work to do (condition held) while a backend call is in flight; True if
        some was done. None here (see ``BacklogSink``)."""
        return False

    def _rows_rejected(self, rej: RowsRejected, n: int, *, mine: bool, from_pending: bool) -> None:
        """The backend wrote a batch of ``n`` but for ``rej.rejected``: keep those
        in the spool with their errors (or count them failed without a spool)."""
        bad = rej.rejected.num_rows
        kept = False
        if self.spool is not None and bad:
            try:
                self.spool.append(rej.rejected, REJECTED, list(rej.errors), ours=mine)
                kept = True
                self._logged.discard("rejected_full")
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
        self._warn_once(
            "rejected",
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
                    reason = "spool_full" if isinstance(exc, SpoolFull) else "spool_error"
                    self._count_failed(n, reason)
                    self.pending -= n
            self._spool_failed(exc)
            return
        self._logged.discard("full")  # a new episode of "full" gets its own warning
        with self._cv:
            if not self._abandoned:
                self.spooled += n
                self.spooled_total += n
                self.pending -= n
        self._count_lost()

    def _count_lost(self) -> None:
        """Our spooled events found gone (a segment deleted under us, or damaged)."""
        assert self.spool is not None
        lost = self.spool.take_lost()
        total = lost[BATCH] + lost[REJECTED]
        if not total:
            return
        with self._cv:
            self.spooled -= lost[BATCH]
            self.rejected -= lost[REJECTED]
            self._count_failed(total, "spool_lost")
        logger.warning(
            "llamonitor: %d spooled events of %s were lost: their spool segment in %s was "
            "deleted while in use or is damaged (counted as failed, reason spool_lost)",
            total,
            self.name,
            self.spool.directory,
        )

    def _spool_failed(self, exc: BaseException) -> None:
        assert self.spool is not None
        if isinstance(exc, SpoolFull) and exc.kind == REJECTED:
            self._warn_once(
                "rejected_full",
                "llamonitor: %s (sink %s). Further rows the store rejects are counted as "
                "failed (reason rejected): see them with `llamonitor spool status`, retry "
                "them with `llamonitor spool replay --rejected`, or raise the limit",
                exc,
                self.name,
            )
        elif isinstance(exc, SpoolFull):
            self._warn_once(
                "full",
                "llamonitor: %s (sink %s). Events that cannot be written are counted as "
                "failed until it drains (raise the limit, or run `llamonitor spool replay`)",
                exc,
                self.name,
            )
        else:
            self._warn_once(
                "spool_error",
                "llamonitor: cannot write the spool of %s in %s (%r); events that cannot be "
                "written are counted as failed",
                self.name,
                self.spool.directory,
                exc,
            )

    def _sync_spool(self) -> None:
        if self.spool is not None:
            try:
                self.spool.sync()
            except OSError as exc:
                self._spool_failed(exc)
            self._count_lost()
