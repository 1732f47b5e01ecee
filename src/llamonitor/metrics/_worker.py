"""The metrics worker: one daemon thread that snapshots the instruments every
``metrics_interval_seconds`` and writes the points to the store.

Started when the first instrument is created (so instruments work before,
without and after ``initialize_monitoring``). The store is, in order: the
one given to :func:`configure`, else the storage of the running monitor
(``initialize_monitoring``'s ``MonitorConfig.storage``, same output_dir or
connection string as the spans). With neither, nothing is taken or written:
counters and gauges keep their live values (Prometheus exposure), histograms
keep accumulating.

Isolation, like the transport's sinks: a write that fails (the store
unreachable, busy, a login refused) is retried with exponential backoff
(``max_retries`` of the monitor, default 3); points that still cannot be
written stay in memory and go with the next interval's (bounded by
:data:`MAX_PENDING_POINTS`: past it the oldest are dropped and counted).
Points the store refuses (a bad setting, their content) are dropped and
counted at once: retrying cannot help them. A SQL store refusing some points
of a batch for their content writes the others (``RowsRejected``): only the
refused are dropped, counted in ``rejected`` (and ``dropped``). There is no disk spool for
points (a process that dies while the store is down loses at most those
pending points). Nothing raises into the application; failures are logged
once per outage and counted in :func:`health`. At interpreter exit a last
snapshot is written (within :data:`EXIT_FLUSH_SECONDS`). After ``fork()``
the child gets fresh locks, its instruments start from zero under its own
``source`` and a worker of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from llamonitor.metrics._registry import REGISTRY, Registry
from llamonitor.schema._rejected import RowsRejected
from llamonitor.schema.config import ConfigurationError, StorageConfig

logger = logging.getLogger("llamonitor.metrics")

DEFAULT_INTERVAL_SECONDS = 10.0
MAX_PENDING_POINTS = 500_000
EXIT_FLUSH_SECONDS = 5.0
_BACKOFF_SECONDS = 0.2
_MAX_BACKOFF_SECONDS = 5.0


@dataclass
class Settings:
    """What :func:`configure` set (``None``: from the running monitor, else the default)."""

    storage: StorageConfig | None = None
    interval_seconds: float | None = None
    max_retries: int | None = None
    rules: list[Any] = field(default_factory=list)


@dataclass
class Stats:
    snapshots: int = 0
    written: int = 0
    failed_writes: int = 0
    retried: int = 0
    dropped: int = 0
    rejected: int = 0
    last_error: str | None = None


class MetricsWorker:
    """Snapshots ``registry`` on an interval and writes the points."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.stats = Stats()
        self.pid = os.getpid()
        self._pending: list[pa.Table] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()  # one snapshot + write at a time
        self._failing = False
        self._unsupported_logged = False
        self._refused_logged = False
        self._thread: threading.Thread | None = None

    # -- resolution of the store ---------------------------------------------

    def monitor_config(self) -> Any:
        writer_module = sys.modules.get("llamonitor.transport.writer")
        writer = writer_module.get_writer() if writer_module is not None else None
        return getattr(writer, "config", None)

    def storage(self) -> StorageConfig | None:
        if self.settings.storage is not None:
            return self.settings.storage
        config = self.monitor_config()
        return None if config is None else config.storage

    def interval(self) -> float:
        if self.settings.interval_seconds is not None:
            return self.settings.interval_seconds
        config = self.monitor_config()
        value = getattr(config, "metrics_interval_seconds", None)
        return float(value) if value else DEFAULT_INTERVAL_SECONDS

    def retries(self) -> int:
        if self.settings.max_retries is not None:
            return self.settings.max_retries
        config = self.monitor_config()
        return int(getattr(config, "max_retries", 3))

    def rules(self) -> list[Any]:
        if self.settings.rules:
            return self.settings.rules
        return list(getattr(self.monitor_config(), "metrics_rules", None) or [])

    def max_series(self) -> int | None:
        value = getattr(self.monitor_config(), "metrics_max_series", None)
        return int(value) if value else None

    # -- the thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="llamonitor-metrics", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            return
        self._thread = thread

    def _run(self) -> None:
        from llamonitor._internal import suppressed

        with suppressed():
            last = time.monotonic()
            while not self._stop.is_set():
                # A wake (configure() changed the interval) re-reads the interval;
                # a snapshot is taken only when one interval has passed.
                due = last + self.interval()
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
                    continue
                try:
                    self.tick()
                except Exception as exc:  # never let the thread die
                    logger.debug("llamonitor: metrics snapshot failed: %r", exc)
                last = time.monotonic()

    def stop(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- work ----------------------------------------------------------------

    def tick(self, now: float | None = None, deadline: float | None = None) -> int:
        """Snapshot and write (what failed before first). Returns points written."""
        storage = self.storage()
        if storage is None or not self._can_store(storage):
            return 0
        with self._write_lock:
            table = self.registry.collect(now)
            self.stats.snapshots += 1
            if table.num_rows:
                self._pending.append(table)
            rules = self.rules()
            if rules:
                from llamonitor.metrics._rules import evaluate_due

                try:
                    self._pending.extend(evaluate_due(storage, rules, now))
                except Exception as exc:
                    logger.debug("llamonitor: recording rules failed: %r", exc)
            return self._write_pending(storage, deadline)

    def _write_pending(self, storage: StorageConfig, deadline: float | None) -> int:
        if not self._pending:
            return 0
        batch = pa.concat_tables(self._pending)
        from llamonitor.metrics._store import write_points

        attempts = self.retries() + 1
        delay = _BACKOFF_SECONDS
        for attempt in range(attempts):
            try:
                n = write_points(storage, batch)
            except RowsRejected as exc:
                n = self._rejected(batch, exc)
            except Exception as exc:
                self.stats.last_error = repr(exc)
                if not transient(exc):
                    return self._refused(batch, exc)
                if attempt + 1 < attempts and (
                    deadline is None or time.monotonic() + delay < deadline
                ):
                    self.stats.retried += 1
                    if self._stop.wait(delay * (0.5 + random.random())):
                        break
                    delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
                    continue
                break
            self._pending = []
            self.stats.written += n
            if self._failing:
                logger.info("llamonitor: metric points are being written again")
            self._failing = False
            return n
        self.stats.failed_writes += 1
        if not self._failing:
            logger.warning(
                "llamonitor: metric points could not be written (kept in memory and "
                "retried at the next interval): %s",
                self.stats.last_error,
            )
        self._failing = True
        if batch.num_rows > MAX_PENDING_POINTS:
            drop = batch.num_rows - MAX_PENDING_POINTS
            self.stats.dropped += drop
            batch = batch.slice(drop)
        self._pending = [batch]
        return 0

    def _rejected(self, batch: pa.Table, exc: RowsRejected) -> int:
        """The store wrote every point but ``exc.rejected`` (refused for their
        content: a NUL byte, a name too long for the column): those are
        dropped and counted (``rejected``), the first error logged once."""
        bad = int(exc.rejected.num_rows)
        self.stats.rejected += bad
        self.stats.dropped += bad
        self.stats.last_error = repr(exc)
        if not self._refused_logged:
            self._refused_logged = True
            names = sorted(set(exc.rejected.column("name").to_pylist()))[:5]
            logger.warning(
                "llamonitor: the store refused %d of %d metric points (%s; dropped, the "
                "others written; further refusals are counted in "
                "llamonitor.metrics.health()): %s",
                bad,
                batch.num_rows,
                ", ".join(map(str, names)),
                exc.errors[0] if exc.errors else exc,
            )
        return int(batch.num_rows) - bad

    def _refused(self, batch: pa.Table, exc: BaseException) -> int:
        """The store refused the points (a bad setting, or their content):
        retrying would refuse them again and hold back every later point, so
        they are dropped and counted, and the error logged once."""
        self.stats.failed_writes += 1
        self.stats.dropped += batch.num_rows
        self._pending = []
        if not self._refused_logged:
            self._refused_logged = True
            logger.warning(
                "llamonitor: the store refused %d metric points (dropped; further refusals "
                "are counted in llamonitor.metrics.health()): %s",
                batch.num_rows,
                exc,
            )
        return 0

    def _can_store(self, storage: StorageConfig) -> bool:
        """Whether ``storage`` holds points (the ``memory`` backend or a custom
        class does not: said once, and the instruments keep their live values)."""
        from llamonitor.metrics._store import store_kind

        try:
            store_kind(storage)
        except ConfigurationError as exc:
            if not self._unsupported_logged:
                self._unsupported_logged = True
                logger.info("llamonitor: metric points are not stored: %s", exc)
            return False
        return True

    def flush(self, timeout: float = EXIT_FLUSH_SECONDS) -> int:
        """Snapshot and write now (on the caller's thread). Returns points written."""
        return self.tick(deadline=time.monotonic() + timeout)


def transient(exc: BaseException) -> bool:
    """Worth retrying: the store failed (unreachable, busy, a login refused:
    ``OSError``, ``StoreError``, as the transport retries them), rather than
    refusing these points (``ValueError``: their content) or a setting
    (``ConfigurationError``)."""
    return not isinstance(exc, (ConfigurationError, ValueError, TypeError))


_worker: MetricsWorker | None = None
_worker_lock = threading.Lock()
_settings = Settings()
_atexit_registered = False


def worker() -> MetricsWorker:
    """The process's worker (created, and its thread started, at first call)."""
    global _worker, _atexit_registered
    with _worker_lock:
        if _worker is None or _worker.pid != os.getpid():
            _worker = MetricsWorker(REGISTRY, _settings)
            _worker.start()
            if not _atexit_registered:
                atexit.register(_flush_at_exit)
                _atexit_registered = True
        return _worker


def _flush_at_exit() -> None:
    w = _worker
    if w is None or w.pid != os.getpid():
        return
    try:
        w.stop(timeout=0.5)
        w.flush(EXIT_FLUSH_SECONDS)
    except Exception:
        pass


def _after_fork_in_child() -> None:
    global _worker, _worker_lock
    _worker_lock = threading.Lock()
    REGISTRY._reinit_after_fork()
    if _worker is not None:
        _worker = None
        worker()  # the parent had one: so does the child


os.register_at_fork(after_in_child=_after_fork_in_child)
