"""Scores from the application to the store: the spans' transport, for a
second table.

``llamonitor.score()`` (and ``current_span().score()``) hand a validated row
to :func:`submit` (through ``llamonitor._score_handoff``, which imports no
transport). The rows wait in a bounded queue (:data:`MAX_QUEUED_SCORES`; past
it a score is dropped and counted) until a daemon thread takes them, every
``storage.flush_interval_seconds`` or as soon as ``storage.batch_size`` are
waiting, and hands one Arrow table of scores to a :class:`SinkRunner` per
store of the running writer that holds scores (``storage``, then
``extra_backends``). Those are the spans' sinks, with their guarantees: a
failed write is retried with backoff; with a spool (the spans' setting) a
store that stays down sends the batches to a spool directory of their own
(``<spool_dir>/<...llamonitor_scores...>``), replayed when it is back, so an
outage loses no score. Writes are upserts by ``score_id``, so a batch
written twice (a replay after a lost acknowledgement) is one row.

The writer's ``flush()`` and ``shutdown_monitoring()`` flush scores too (this
module is one of ``_handoff.feeders``). A new ``initialize_monitoring`` gets
new sinks at its first score; after ``fork()`` the child starts its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from llamonitor import _handoff
from llamonitor.schema._scores import scores_table
from llamonitor.schema.config import ConfigurationError, MonitorConfig, StorageConfig
from llamonitor.storage._scores import store_kind, write_scores
from llamonitor.transport._sinks import Marker, SinkRunner
from llamonitor.transport.spool import Spool, sink_dir_name, sink_identity

logger = logging.getLogger("llamonitor.transport")

MAX_QUEUED_SCORES = 100_000
"""Scores waiting for the thread at most; more are dropped and counted."""

STOP_SECONDS = 5.0
SCORES_TABLE = "llamonitor_scores"


class ScoreBackend:
    """A sink backend writing tables of scores to one store."""

    def __init__(self, storage: StorageConfig) -> None:
        self.storage = storage

    def initialize(self) -> None:
        store_kind(self.storage)  # a store that holds no scores is a setting's error

    def write_table(self, table: Any) -> None:
        write_scores(self.storage, table)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"ScoreBackend({self.storage.backend!r})"


class _ExporterScores:
    """What names the spool of an exporter's scores (not its spans' spool)."""

    def __init__(self, exporter: Any) -> None:
        self.kind = f"{exporter.kind}-scores"
        self.spool_identity = exporter.score_spool_identity


def _holds_scores(storage: StorageConfig) -> bool:
    try:
        store_kind(storage)
    except ConfigurationError:
        return False
    return True


class ScoreTransport:
    """The queue, the thread and the sinks of one writer's configuration."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        self.received = 0
        self.dropped = 0
        self._q: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sinks = self._make_sinks()
        for sink in self.sinks:
            sink.start(wait=False)
        self._thread = threading.Thread(target=self._run, name="llamonitor-scores", daemon=True)
        self._thread.start()

    def _make_sinks(self) -> list[SinkRunner]:
        cfg = self.config
        runners = []
        for i, storage in enumerate([cfg.storage, *cfg.extra_backends]):
            if not _holds_scores(storage):
                continue
            spool = None
            if cfg.spool_on(storage):
                ident = storage.model_copy(update={"table_name": SCORES_TABLE})
                spool = Spool(
                    cfg.spool_root() / sink_dir_name(ident),
                    cfg.spool_max_bytes,
                    sink_identity(ident),
                    cfg.spool_rejected_max_bytes,
                )
            name = f"scores-{storage.backend}" + (f"#{i}" if i else "")
            runners.append(
                SinkRunner(
                    name,
                    ScoreBackend(storage),
                    primary=False,  # the live tail shows spans, not scores
                    max_retries=cfg.max_retries,
                    backoff_seconds=cfg.retry_backoff_seconds,
                    max_backoff_seconds=cfg.retry_max_backoff_seconds,
                    spool=spool,
                )
            )
        runners += self._exporter_sinks()
        return runners

    def _exporter_sinks(self) -> list[SinkRunner]:
        """A sink per exporter that sends scores (``create_score_backend``: OTLP)."""
        cfg = self.config
        runners = []
        for j, exporter in enumerate(cfg.exporter_configs()):
            make = getattr(exporter, "create_score_backend", None)
            if make is None:
                continue
            try:
                backend = make()
            except Exception as exc:  # the span sink of this exporter reports it too
                logger.warning("llamonitor: exporters[%d] cannot send scores: %s", j, exc)
                continue
            if backend is None:
                continue
            spool = None
            if cfg.spool_on(exporter):
                ident = _ExporterScores(exporter)
                spool = Spool(
                    cfg.spool_root() / sink_dir_name(ident),
                    cfg.spool_max_bytes,
                    sink_identity(ident),
                    cfg.spool_rejected_max_bytes,
                )
            runners.append(
                SinkRunner(
                    f"scores-{exporter.kind}" + (f"#{j}" if j else ""),
                    backend,
                    primary=False,
                    max_retries=cfg.max_retries,
                    backoff_seconds=cfg.retry_backoff_seconds,
                    max_backoff_seconds=cfg.retry_max_backoff_seconds,
                    spool=spool,
                )
            )
        return runners

    def submit(self, row: dict[str, Any]) -> bool:
        with self._lock:
            self.received += 1
            if len(self._q) >= MAX_QUEUED_SCORES or self._stop.is_set() or not self.sinks:
                self.dropped += 1
                return False
            self._q.append(row)
            full = len(self._q) >= self.config.storage.batch_size
        if full:
            self._wake.set()
        return True

    def _run(self) -> None:
        from llamonitor._internal import suppressed

        with suppressed():
            while not self._stop.is_set():
                self._wake.wait(self.config.storage.flush_interval_seconds)
                self._wake.clear()
                try:
                    self._drain()
                except Exception as exc:  # never let the thread die
                    logger.debug("llamonitor: handing scores over failed: %r", exc)

    def _drain(self) -> int:
        """Hand the queued rows to every sink, once: they leave the queue once they
        are one table (a row that cannot be is dropped alone and counted), then each
        sink takes that table (one drainer at a time: ``submit`` only appends)."""
        with self._drain_lock:
            with self._lock:
                rows = list(self._q)
            if not rows:
                return 0
            table = self._table(rows)
            with self._lock:
                for _ in rows:
                    self._q.popleft()
            refused = False
            for sink in self.sinks:
                try:
                    refused = not sink.put(table, table.num_rows) or refused  # abandoned
                except Exception as exc:  # one sink's fault: the others still take them
                    refused = True
                    logger.warning("llamonitor: %s could not take %d score(s): %r",
                                   sink.name, table.num_rows, exc)
            if refused:
                with self._lock:
                    self.dropped += table.num_rows
            return len(rows)

    def _table(self, rows: list[dict[str, Any]]) -> Any:
        """The rows as one table; a row that cannot be converted (validated at
        ``score()``, so a bug) is dropped and counted, never the others with it."""
        try:
            return scores_table(rows)
        except Exception as exc:
            good = []
            for row in rows:
                try:
                    scores_table([row])
                except Exception:
                    continue
                good.append(row)
            with self._lock:
                self.dropped += len(rows) - len(good)
            logger.warning("llamonitor: %d score(s) could not be stored and were dropped: %r",
                           len(rows) - len(good), exc)
            return scores_table(good)

    def flush(self, timeout: float) -> bool:
        """Everything submitted so far written or spooled, within ``timeout``."""
        self._drain()
        marker = Marker(len(self.sinks))
        for sink in self.sinks:
            sink.put_marker(marker)
        return marker.event.wait(max(0.0, timeout)) and marker.ok

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        deadline = time.monotonic() + timeout
        ok = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        for sink in self.sinks:
            ok = sink.stop(deadline) and ok
        return ok

    def health(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "dropped": self.dropped,
            "queued": len(self._q),
            "sinks": {s.name: s.health() for s in self.sinks},
        }


_current: ScoreTransport | None = None
_current_lock = threading.Lock()
_registered = False


def submit(writer: Any, row: dict[str, Any]) -> bool:
    """Queue ``row`` for the stores of ``writer`` (a running ``MonitoringWriter``)."""
    global _current, _registered
    transport = _current
    if transport is None or transport.config is not writer.config or transport.pid != os.getpid():
        with _current_lock:
            transport = _current
            if (
                transport is None
                or transport.config is not writer.config
                or transport.pid != os.getpid()
            ):
                old = transport if transport is not None and transport.pid == os.getpid() else None
                transport = _current = ScoreTransport(writer.config)
                if old is not None:
                    threading.Thread(target=old.stop, daemon=True).start()
                if not _registered:
                    _handoff.feeders.append(_feed)
                    atexit.register(_stop_at_exit)
                    _registered = True
    return transport.submit(row)


def _feed(timeout: float) -> bool:
    transport = _current
    if transport is None or transport.pid != os.getpid():
        return True
    return transport.flush(timeout)


def flush(timeout: float = STOP_SECONDS) -> bool:
    """Write (or spool) the scores submitted so far; True if done in time."""
    return _feed(timeout)


def health() -> dict[str, Any]:
    """The running score transport's counters and sinks (``{}`` when none)."""
    transport = _current
    return {} if transport is None else transport.health()


def _stop_at_exit() -> None:
    global _current
    transport, _current = _current, None
    if transport is not None and transport.pid == os.getpid():
        try:
            transport.stop()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    global _current, _current_lock
    _current_lock = threading.Lock()
    _current = None


os.register_at_fork(after_in_child=_after_fork_in_child)
