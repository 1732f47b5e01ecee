"""``MonitoringWriter`` and the module-level lifecycle functions.

Every function here works both called and awaited::

    initialize_monitoring(config)          # from sync code
    await initialize_monitoring(config)    # from async code (seed style)

The work is done at call time (it is short: start threads, open the store);
the awaitable form exists so async code reads naturally.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from llamonitor import _handoff, _internal
from llamonitor._records import RECORD_BASE_BYTES, row_bytes, table_row_bytes
from llamonitor.llm import _settings as llm_settings
from llamonitor.schema.config import (
    ConfigurationError,
    ExporterConfig,
    MonitorConfig,
    StorageConfig,
)
from llamonitor.schema.events import MetricEvent
from llamonitor.storage.base import create_backend
from llamonitor.transport import _children
from llamonitor.transport._pipeline import Pipeline
from llamonitor.transport._sinks import SinkRunner
from llamonitor.transport.spool import Spool, sink_dir_name, sink_identity

logger = logging.getLogger("llamonitor.transport")

T = TypeVar("T")

_lifecycle = threading.RLock()
_atexit_registered = False

SERVER_MODULE = "llamonitor.server._run"
"""Where ``initialize_monitoring(serve=...)`` finds ``start_server``: imported by
name when asked for, so the transport never imports the server."""


class Completed(Generic[T]):
    """A finished result that can also be awaited (``await flush()``).

    ``spooled``: for ``flush``/``shutdown``, how many of this process's events
    were in the primary sink's spool then (durably on disk, written when the
    store is back) rather than written; 0 when everything was written.
    """

    __slots__ = ("spooled", "value")

    def __init__(self, value: T, spooled: int = 0) -> None:
        self.value = value
        self.spooled = spooled

    def __await__(self) -> Generator[Any, None, T]:
        return self.value
        yield  # pragma: no cover - makes this a generator

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:
        extra = f", spooled={self.spooled}" if self.spooled else ""
        return f"Completed({self.value!r}{extra})"


class HealthReport(dict[str, Any]):
    """``health_check()``'s dict; also awaitable, as in seed 000."""

    def __await__(self) -> Generator[Any, None, HealthReport]:
        return self
        yield  # pragma: no cover


def _sink_name(cfg: StorageConfig, index: int) -> str:
    base = cfg.backend if isinstance(cfg.backend, str) else type(cfg.backend).__name__
    return base if index == 0 else f"{base}#{index}"


def _exporter_backend(exporter: ExporterConfig, setting: str) -> Any:
    """The backend of an exporter, checked like a storage backend is."""
    try:
        check = getattr(exporter, "check", None)
        if callable(check):
            check(setting)
        backend = exporter.create_backend()
    except ConfigurationError:
        raise
    except ImportError as exc:
        raise ConfigurationError(setting, f"{type(exporter).__name__}: {exc}") from exc
    if not callable(getattr(backend, "write_table", None)):
        raise ConfigurationError(
            setting,
            f"{type(exporter).__name__}.create_backend() returned {backend!r}, "
            "which has no write_table(table)",
        )
    if not (
        callable(getattr(backend, "initialize", None)) and callable(getattr(backend, "close", None))
    ):
        backend = _Optional(backend)
    return backend


class _Optional:
    """An exporter's backend whose ``initialize`` or ``close`` is left out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.write_table = inner.write_table

    def initialize(self) -> Any:
        fn = getattr(self.inner, "initialize", None)
        return fn() if callable(fn) else None

    def close(self) -> Any:
        fn = getattr(self.inner, "close", None)
        return fn() if callable(fn) else None

    def __repr__(self) -> str:
        return repr(self.inner)


TYPICAL_TEXT_BYTES = 1024
"""The text a queued event is sized with when ``max_queue_bytes`` follows an
explicit ``max_queue_size``."""


def fit_queue_bounds(config: MonitorConfig) -> MonitorConfig:
    """Honour an explicit ``max_queue_size``.

    Each queued event counts ``RECORD_BASE_BYTES`` plus the text it keeps.
    With ``max_queue_size`` set and ``max_queue_bytes`` left to its default, the
    byte bound is raised to hold that many events of 1 KB text (a copy of the
    configuration is returned). With both set, a size that cannot fit even
    events without text would be capped by the byte bound, silently: refuse it,
    saying what to set.

    Raises:
        ConfigurationError: naming ``max_queue_bytes``.
    """
    size, limit = config.max_queue_size, config.max_queue_bytes
    given = config.model_fields_set
    if "max_queue_size" not in given:
        return config
    if "max_queue_bytes" not in given:
        fitted = size * (RECORD_BASE_BYTES + TYPICAL_TEXT_BYTES)
        if fitted <= limit:
            return config
        logger.info(
            "llamonitor: max_queue_bytes raised to %s to hold max_queue_size=%s events",
            f"{fitted:,}",
            f"{size:,}",
        )
        return config.model_copy(update={"max_queue_bytes": fitted})
    need = size * RECORD_BASE_BYTES
    if need <= limit:
        return config
    typical = size * (RECORD_BASE_BYTES + TYPICAL_TEXT_BYTES)
    raise ConfigurationError(
        "max_queue_bytes",
        f"max_queue_size={size:,} does not fit in max_queue_bytes={limit:,}: each queued "
        f"event counts {RECORD_BASE_BYTES} bytes plus its text, so {size:,} events need at "
        f"least {need:,} bytes ({typical:,} with 1 KB of text each); raise max_queue_bytes "
        "(or leave it out: it then follows max_queue_size) or lower max_queue_size",
    )


def _spooled(pipeline: Pipeline) -> int:
    """This process's events in the primary sink's spool, as on disk now."""
    primary = pipeline.primary
    if primary is None:
        return 0
    primary.refresh()
    return primary.spooled


class MonitoringWriter:
    """Owns the transport for one configuration (a process-wide singleton)."""

    _instance: ClassVar[MonitoringWriter | None] = None

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._pipeline: Pipeline | None = None
        self.server: Any = None
        """The server started by ``initialize_monitoring(serve=...)`` (a
        ``llamonitor.server.ServerHandle``), stopped with the writer."""

    # -- seed API -----------------------------------------------------------

    @classmethod
    def get_instance(cls, config: MonitorConfig | None = None) -> MonitoringWriter:
        """The running writer, started from ``config`` (or the environment) if none."""
        if cls._instance is None or (config is not None and cls._instance.config is not config):
            return initialize_monitoring(config)
        return cls._instance

    @classmethod
    def get_instance_sync(cls) -> MonitoringWriter | None:
        """The running writer, or ``None``."""
        return cls._instance

    def __await__(self) -> Generator[Any, None, MonitoringWriter]:
        return self
        yield  # pragma: no cover

    def _make_sinks(self) -> list[SinkRunner]:
        cfg = self.config
        runners = []
        for i, storage in enumerate([cfg.storage, *cfg.extra_backends]):
            setting = "storage.backend" if i == 0 else f"extra_backends[{i - 1}].backend"
            spool = None
            if cfg.spool_on(storage):
                spool = Spool(
                    cfg.spool_root() / sink_dir_name(storage),
                    cfg.spool_max_bytes,
                    sink_identity(storage),
                    cfg.spool_rejected_max_bytes,
                )
            runners.append(
                SinkRunner(
                    _sink_name(storage, i),
                    create_backend(storage, setting),
                    primary=i == 0,
                    max_retries=cfg.max_retries,
                    backoff_seconds=cfg.retry_backoff_seconds,
                    max_backoff_seconds=cfg.retry_max_backoff_seconds,
                    spool=spool,
                    outage_on_refusal=cfg.fail_silently,
                )
            )
        for j, exporter in enumerate(cfg.exporter_configs()):
            setting = "prometheus" if exporter is cfg.prometheus else f"exporters[{j}]"
            spool = None
            if cfg.spool_on(exporter):
                spool = Spool(
                    cfg.spool_root() / sink_dir_name(exporter),
                    cfg.spool_max_bytes,
                    sink_identity(exporter),
                    cfg.spool_rejected_max_bytes,
                )
            runners.append(
                SinkRunner(
                    f"{exporter.kind}#{j}" if j else exporter.kind,
                    _exporter_backend(exporter, setting),
                    primary=False,
                    max_retries=cfg.max_retries,
                    backoff_seconds=cfg.retry_backoff_seconds,
                    max_backoff_seconds=cfg.retry_max_backoff_seconds,
                    spool=spool,
                    outage_on_refusal=cfg.fail_silently,
                )
            )
        return runners

    def start(self, wait: bool = True) -> MonitoringWriter:
        """Open the backends and start the worker.

        Args:
            wait: wait for the backends to initialize (and raise their errors);
                without it, a backend that fails is reported and counted by its sink.

        Raises:
            ConfigurationError: a setting is invalid (the message names it).
        """
        fitted = fit_queue_bounds(self.config)  # self.config stays the user's (get_instance)
        if self.config.spool_dir is not None and Path(self.config.spool_dir).is_file():
            raise ConfigurationError(
                "spool_dir", f"{str(self.config.spool_dir)!r} is a file, not a directory"
            )
        pipeline = Pipeline(fitted, self._make_sinks)
        try:
            pipeline.start(wait)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError("storage", f"backend failed to initialize: {exc!r}") from exc
        self._pipeline = pipeline
        return self

    def stop(self, timeout: float | None = None) -> Completed[bool]:
        """Flush and stop; True if everything was written before the deadline."""
        pipeline = self._pipeline
        if pipeline is None:
            self._stop_server()
            return Completed(True)
        t = self.config.shutdown_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, t)  # one deadline for all of it
        if _handoff.ACTIVE is pipeline:
            _handoff.flush_feeders(deadline)  # what they hold, in before the doors close
        with _lifecycle:
            if _handoff.ACTIVE is pipeline:
                _handoff.activate(None)
                _children.stop_sharing()
            if MonitoringWriter._instance is self:
                MonitoringWriter._instance = None
        ok = pipeline.shutdown(max(0.0, deadline - time.monotonic()))
        self._stop_server()  # after the last write: its spans reach the live clients
        return Completed(ok, _spooled(pipeline))

    shutdown = stop

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            try:
                server.stop()
            except Exception as exc:  # the user's shutdown goes on
                logger.warning("llamonitor: stopping the server failed: %r", exc)

    def flush(self, timeout: float | None = None) -> Completed[bool]:
        """Wait until every span recorded so far is written, durably spooled
        (counted in the result's ``spooled``) or given up (counted failed);
        spans a ``llamonitor.otel.SpanProcessor`` holds are handed over first."""
        pipeline = self._pipeline
        if pipeline is None:
            return Completed(True)
        t = self.config.shutdown_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, t)  # feeders and pipeline share it
        if _handoff.feeders and _handoff.ACTIVE is pipeline:
            _handoff.flush_feeders(deadline)
        ok = pipeline.flush(max(0.0, deadline - time.monotonic()))
        return Completed(ok, _spooled(pipeline))

    def wake(self) -> None:
        """Start writing what is queued now instead of at the next batch or
        ``flush_interval_seconds``; returns at once (an OTLP receiver that went
        idle: its last spans need not wait for the interval)."""
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.wake()

    def health_check(self) -> HealthReport:
        """Queue depth, counters (received, written, dropped by reason,
        sampled out, retried, failed, spooled, rejected) and each sink's health
        (with its spool: ``spooled``, ``replayed``, ``spool_bytes``, ``spool_full``,
        ``corrupt_records``, ``outage``...)."""
        if self._pipeline is None:
            return HealthReport(running=False, queue_size=0, buffer_size=0, backend_healthy=False)
        report = HealthReport(self._pipeline.stats())
        report["internal_errors"] = _internal.internal_error_counts()
        return report

    def record(self, event: MetricEvent) -> bool:
        """Queue a ready-made event (validated already by pydantic).

        Returns False if it was dropped (queue full, shutdown); never raises.
        """
        pipeline = self._pipeline
        if pipeline is None:
            return False
        try:
            return pipeline.submit((None, event.to_row(), 0, 0, None, None, None))
        except Exception as exc:
            _internal.report_internal_error("record", exc)
            return False

    def record_rows(self, rows: list[dict[str, Any]], wait_seconds: float = 0.0) -> bool:
        """Queue stored-form rows (an OTLP receiver's spans), all or none.

        Waits up to ``wait_seconds`` for room for them all. Returns False if
        none was queued (no room, not running): the caller still holds them.
        """
        pipeline = self._pipeline
        if pipeline is None:
            return False
        records = [(None, row, 0, row_bytes(row), None, None, None) for row in rows]
        return pipeline.submit_all(records, wait_seconds)

    def record_table(self, table: Any, wait_seconds: float = 0.0) -> bool:
        """Queue the rows of a ready ``SCHEMA`` table (an OTLP receiver's
        request), all or none: one row record per row, each naming its row of
        the shared table, so the queue's bounds and counters stay per row and
        the worker only slices. Returns False if none was queued."""
        pipeline = self._pipeline
        if pipeline is None:
            return False
        size = table_row_bytes(table)  # the queue's byte bound holds real sizes
        records = [(None, table, i, size, None, None, None) for i in range(table.num_rows)]
        return pipeline.submit_all(records, wait_seconds)

    @property
    def queue_capacity(self) -> int:
        """Records the queue holds at most (0 when not running)."""
        return 0 if self._pipeline is None else self._pipeline.capacity

    @property
    def queue_byte_capacity(self) -> int:
        """Estimated bytes the queue holds at most (``max_queue_bytes``; 0 when
        not running)."""
        return 0 if self._pipeline is None else self._pipeline.byte_capacity

    def write_event(self, event: MetricEvent) -> Completed[bool]:
        """Seed 000's name of :meth:`record`, awaitable (``await writer.write_event(e)``)."""
        return Completed(self.record(event))


def initialize_monitoring(
    config: MonitorConfig | dict[str, Any] | None = None, *, serve: Any = False
) -> MonitoringWriter:
    """Start monitoring with ``config`` (default: from ``LLMOPS_*`` variables).

    A writer already running is flushed and replaced. Events still queued at
    interpreter exit are written by an ``atexit`` flush.

    Args:
        config: the configuration.
        serve: ``True`` (settings from ``LLMOPS_SERVER__*``) or a
            ``llamonitor.server.ServerConfig``: also serve the web UI, the API
            and the live tail of this store from a thread of this process (the
            ``[server]`` extra); spans this writer writes show live at once.
            The handle is ``writer.server``; ``shutdown_monitoring`` stops it.

    Returns:
        The running ``MonitoringWriter`` (awaitable, for ``await initialize_monitoring()``).

    Raises:
        ConfigurationError: a setting is invalid (the message names it), or the
            server cannot start (its port is taken: ``server.port``).
        pydantic.ValidationError: a value is out of range (names the field).
    """
    if not (isinstance(serve, bool) or serve is None or callable(getattr(serve, "check", None))):
        raise ConfigurationError(
            "serve",
            f"expected True or a llamonitor.server.ServerConfig, got {type(serve).__name__}",
        )
    writer = _initialize(config, wait=True)
    if serve is not None and serve is not False:
        try:
            start_server = importlib.import_module(SERVER_MODULE).start_server
            writer.server = start_server(None if serve is True else serve)
        except BaseException:
            writer.stop()  # all or nothing: no writer left running without its server
            raise
    return writer


def start_inherited(config: MonitorConfig) -> MonitoringWriter:
    """Start monitoring in a ``multiprocessing`` child from its parent's
    configuration, at the child's first span: without waiting for the backends
    (the span's caller would)."""
    return _initialize(config, wait=False)


def _initialize(config: MonitorConfig | dict[str, Any] | None, wait: bool) -> MonitoringWriter:
    global _atexit_registered
    if config is None:
        config = MonitorConfig.from_env()
    elif isinstance(config, dict):
        config = MonitorConfig.model_validate(config)
    elif not isinstance(config, MonitorConfig):
        raise ConfigurationError("config", f"expected MonitorConfig, got {type(config).__name__}")
    config.warn_extensions()  # keys added after the config was made (seed 000 style)
    with _lifecycle:
        old = MonitoringWriter._instance
        if old is not None:
            old.stop()
        _internal.set_fail_silently(config.fail_silently)
        _handoff.set_sample_rate(config.sample_rate)
        llm_settings.configure(config)
        writer = MonitoringWriter(config)
        if config.enabled:
            writer.start(wait)
            _handoff.activate(writer._pipeline)
            _children.share_config(config)
            _children.arrange_exit_flush()
        MonitoringWriter._instance = writer
        if not _atexit_registered:
            atexit.register(_flush_at_exit)
            _atexit_registered = True
    return writer


def shutdown_monitoring(timeout: float | None = None) -> Completed[bool]:
    """Flush and stop the running writer within ``timeout`` seconds.

    Safe to call twice or without a writer. Returns (awaitable) True if
    everything was written in time.
    """
    with _lifecycle:
        writer = MonitoringWriter._instance
    if writer is None:
        return Completed(True)
    return writer.stop(timeout)


def flush(timeout: float | None = None) -> Completed[bool]:
    """Wait until the spans recorded so far are written (awaitable)."""
    writer = MonitoringWriter._instance
    return Completed(True) if writer is None else writer.flush(timeout)


def get_writer() -> MonitoringWriter | None:
    return MonitoringWriter._instance


def _active_pipeline() -> Pipeline | None:
    pipeline = _handoff.ACTIVE
    return pipeline if isinstance(pipeline, Pipeline) else None


def _after_fork_in_child() -> None:
    # A lock some parent thread held at fork() stays held in the child: replace
    # ours before anything can wait on them (the atexit flush would hang).
    global _lifecycle
    _lifecycle = threading.RLock()
    pipeline = _active_pipeline()
    if pipeline is not None:
        pipeline.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_at_exit() -> None:
    try:
        shutdown_monitoring()
    except Exception:
        pass
