"""The storage backend interface (seed 000) and the backend registry."""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llamonitor.schema._rejected import (
    RowsRejected as RowsRejected,
)  # re-exported here (its old home)
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent

if TYPE_CHECKING:
    import pyarrow as pa


class StorageBackend(ABC):
    """Where spans are written. Subclass it to plug in your own store.

    Methods may be ``async def`` or plain ``def``: the transport runs them on
    the sink's own thread (coroutines on that thread's private event loop), so
    blocking I/O in them never blocks the application. A method signals
    failure by raising; the transport retries with backoff.

    Built-in backends override :meth:`write_table` (a columnar batch); a user
    backend usually implements :meth:`write_batch` and receives validated
    :class:`~llamonitor.MetricEvent` objects.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        self.config = config if config is not None else StorageConfig()

    async def initialize(self) -> None:  # noqa: B027 - optional hook
        """Create directories, tables, connections. Raise on bad configuration."""

    async def write_event(self, event: MetricEvent) -> None:
        """Write one event (defaults to a batch of one)."""
        await self.write_batch([event])

    @abstractmethod
    async def write_batch(self, events: list[MetricEvent]) -> None:
        """Write several events, all or nothing."""

    async def write_table(self, table: pa.Table) -> None:
        """Write an Arrow batch (``llamonitor.schema.SCHEMA``). Defaults to
        :meth:`write_batch` with one ``MetricEvent`` per row, or to one
        :meth:`write_event` per row when :meth:`supports_batch_writes` is False."""
        events = [MetricEvent.from_row(row) for row in table.to_pylist()]
        if self.supports_batch_writes():
            await self.write_batch(events)
        else:
            for event in events:
                await self.write_event(event)

    def supports_batch_writes(self) -> bool:
        """Whether :meth:`write_batch` is the way to write several events (default
        True); False makes the default :meth:`write_table` call :meth:`write_event`
        once per event."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    async def health_check(self) -> bool:
        """True if the backend can take writes."""
        return True


_REGISTRY: dict[str, str | Callable[[StorageConfig], StorageBackend]] = {
    "parquet": "llamonitor.storage.parquet:ParquetBackend",
    "jsonl": "llamonitor.storage.jsonl:JSONLBackend",
    "memory": "llamonitor.storage.memory:InMemoryBackend",
    "postgres": "llamonitor.storage.postgres:PostgresBackend",
    "postgresql": "llamonitor.storage.postgres:PostgresBackend",
    "mysql": "llamonitor.storage.mysql:MySQLBackend",
    "mariadb": "llamonitor.storage.mysql:MySQLBackend",
    "sqlite": "llamonitor.storage.sqlite:SQLiteBackend",
    "redis-streams": "llamonitor.export._redis_streams:RedisStreamsBackend",
    "nats": "llamonitor.export._nats:NatsBackend",
    "clickhouse": "llamonitor.storage.clickhouse:ClickHouseBackend",
}


def register_backend(name: str, factory: str | Callable[[StorageConfig], StorageBackend]) -> None:
    """Make ``StorageConfig(backend=name)`` build ``factory(config)``.

    ``factory`` is a class, a callable, or ``"package.module:Name"``.
    """
    _REGISTRY[name.lower()] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def _load(path: str, setting: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(setting, f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(setting, f"{module_name!r} has no attribute {attr!r}") from None


def create_backend(config: StorageConfig, setting: str = "storage.backend") -> Any:
    """Build the backend a ``StorageConfig`` names.

    Raises:
        ConfigurationError: unknown name, unimportable path, not a backend.
    """
    spec = config.backend
    if isinstance(spec, str):
        if spec in _REGISTRY:
            spec = _REGISTRY[spec]
        elif ":" not in spec:
            raise ConfigurationError(
                setting,
                f"unknown backend {spec!r}; available: {', '.join(available_backends())}, "
                "or 'package.module:ClassName'",
            )
        if isinstance(spec, str):
            spec = _load(spec, setting)
    if isinstance(spec, type) or (callable(spec) and not hasattr(spec, "write_table")):
        spec = spec(config)
    if not callable(getattr(spec, "write_table", None)) and not callable(
        getattr(spec, "write_batch", None)
    ):
        raise ConfigurationError(
            setting, f"{spec!r} is not a StorageBackend (it has no write_batch)"
        )
    if not callable(getattr(spec, "write_table", None)):
        spec = _EventsOnly(spec)
    return spec


class _EventsOnly:
    """Adapts a duck-typed backend that has only ``write_batch``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def initialize(self) -> Any:
        fn = getattr(self.inner, "initialize", None)
        return fn() if fn else None

    def write_table(self, table: pa.Table) -> Any:
        events = [MetricEvent.from_row(r) for r in table.to_pylist()]
        batches = getattr(self.inner, "supports_batch_writes", None)
        if batches is None or batches():
            return self.inner.write_batch(events)
        return self._one_by_one(events)

    async def _one_by_one(self, events: list[MetricEvent]) -> None:
        for event in events:
            done = self.inner.write_event(event)
            if inspect.isawaitable(done):
                await done

    def close(self) -> Any:
        fn = getattr(self.inner, "close", None)
        return fn() if fn else None

    def __repr__(self) -> str:
        return repr(self.inner)
