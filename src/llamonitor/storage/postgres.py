"""PostgreSQL store (asyncpg, the ``[postgres]`` extra): writer and query side.

Rows go in by binary ``COPY`` (a stream built from the batch's Arrow columns,
see :mod:`._postgres_binary`), one transaction per batch (a batch of
``2 * MIN_PART_ROWS`` rows or more: two concurrent transactions, see
:data:`WRITE_CONNECTIONS`), so a connection lost mid-batch leaves no
half-written transaction. ``event_id`` is the primary key: a batch that holds
rows already written (a retry whose first attempt did commit, a spool replay)
fails on it, and is then written again through a per-connection temporary
staging table: ``COPY`` into it, then ``INSERT ... SELECT ... ON CONFLICT
(event_id) DO NOTHING``, so a replay never duplicates a row. (``COPY``
straight into the table comes first because it costs the server about a
quarter less per row, and replays are rare.)

``options={"partition": "monthly"}`` makes the table ``PARTITION BY RANGE
(timestamp)`` (primary key ``(event_id, timestamp)``) with a DEFAULT
partition; the month partitions a batch needs are created on demand. Every
other key of ``options`` goes to ``asyncpg.connect`` (``ssl``,
``direct_tls``, ``server_settings``, ``command_timeout``,
``statement_cache_size``, ``timeout``...); ``sslmode`` & co. in the
connection string are asyncpg's own.

Faults: every connect and every statement of the writer has a time limit
(:data:`CONNECT_TIMEOUT_SECONDS`, :data:`COMMAND_TIMEOUT_SECONDS`, unless
``options`` set ``timeout`` / ``command_timeout``), so a network that stops
delivering (no error, no reset) fails the write instead of holding the sink
forever. A connection that failed other than by an error the server sent (a
timeout, a reset) is terminated at once (not rolled back: that would wait on
the dead network again), and the whole pool with it: after a server restart
or a stall every pooled connection is suspect, and the next attempt connects
afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pyarrow as pa

from llamonitor.schema._extensions import rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage import _postgres_query, _sql_ddl, _sql_write
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._postgres_copy import Batch, Copy, writer_connection
from llamonitor.storage._postgres_ddl import Partitions, add_columns, setup
from llamonitor.storage._postgres_target import Target, q
from llamonitor.storage._sql import StoreError, describe
from llamonitor.storage._sql_types import postgres_type as sql_type
from llamonitor.storage._sql_write import ContentError
from llamonitor.storage.base import RowsRejected, StorageBackend

__all__ = [
    "CLOSE_TIMEOUT_SECONDS",
    "COMMAND_TIMEOUT_SECONDS",
    "CONNECT_TIMEOUT_SECONDS",
    "WRITE_CONNECTIONS",
    "PostgresBackend",
    "query",
    "sql_type",
]

T = TypeVar("T")

CLOSE_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
"""asyncpg's ``timeout`` (connect, TLS and login) unless ``options`` sets it
(asyncpg's own default is 60 s)."""
COMMAND_TIMEOUT_SECONDS = 30.0
"""The writer's ``command_timeout`` (each statement: a ``COPY``, a DDL, a
commit) unless ``options`` sets it (``None``: no limit; asyncpg's default). A
batch of 1,000 spans takes tens of milliseconds; a statement still running
after this long is on a connection that stopped answering, or waits on a lock
(the batch is retried, then spooled; the primary key makes the retry safe)."""
WRITE_CONNECTIONS = 2
"""A large batch is written as this many concurrent COPYs, one per pool
connection: the client encodes one part while the server stores the other
(10-30% more rows per second than one in the benchmark, on two cores; three
were slower). If one part fails, the retry of the batch skips what the other
wrote."""


class PostgresBackend(StorageBackend):
    """Writes spans to a PostgreSQL table (default ``metric_events``).

    ``StorageConfig(backend="postgres", connection_string="postgresql://...",
    table_name=..., schema_name=..., pool_size=..., options=...)``.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = Target(self.config)
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._conflict = ", ".join(q(c) for c in _sql_ddl.PRIMARY_KEY)
        self._partitions = Partitions(self._t)
        self._copier = Copy(self._t)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._t.secrets.masked}, {self._t.label})"

    # -- connections -----------------------------------------------------

    async def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is not loop:
            pool, self._pool = self._pool, None  # a pool belongs to the loop that made it
            try:
                pool.terminate()
            except Exception:
                pass  # that loop is closed: its sockets went with it
        if self._pool is None:
            self._pool = await self._t.asyncpg.create_pool(
                dsn=self._t.dsn,
                # No connection floor: asyncpg (0.32+) would otherwise reconnect
                # in the background during an outage and log each failure.
                min_size=0,
                max_size=self.config.pool_size,
                init=writer_connection,
                **{
                    "timeout": CONNECT_TIMEOUT_SECONDS,
                    "command_timeout": COMMAND_TIMEOUT_SECONDS,
                    **self._t.connect_kwargs,
                },
            )
            self._loop = loop
        return self._pool

    def _discard_pool(self) -> None:
        """Close every pooled connection at once (no goodbye to the server)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                pool.terminate()
            except Exception:
                pass  # its loop is closed: its sockets went with it

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pool connection; terminated (not returned to the pool) after a
        failure the server did not report itself: a timeout, a connection
        reset, a cancellation. Releasing it normally would first wait for the
        timed-out statement to be cancelled, over the same dead network."""
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            try:
                yield conn
            except BaseException as exc:
                if not isinstance(exc, self._t.asyncpg.PostgresError):
                    _terminate(conn)
                raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A pool connection in a transaction: committed, rolled back after an
        error the server reported, or (any other failure) ended with the
        connection (see :meth:`_connection`); the server rolls it back."""
        async with self._connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                yield conn
            except self._t.asyncpg.PostgresError:
                try:
                    await transaction.rollback()
                except Exception:
                    _terminate(conn)
                raise
            await transaction.commit()

    async def _guard(self, doing: str, work: Awaitable[T]) -> T:
        """Await ``work``; driver errors become a scrubbed :class:`StoreError`.
        After a failure of the connection rather than of the statement, the
        pool is discarded: the next attempt connects afresh."""
        error: StoreError | None = None
        try:
            return await work
        except (ConfigurationError, RowsRejected, StoreError):
            raise
        except Exception as exc:
            if self._t.kind(exc) == "missing":
                self._ready = False
            if self._t.connection_failed(exc):
                self._discard_pool()
            error = self._t.error(doing, exc)
        raise error

    # -- setup -------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect, create the schema, table, indexes and meta row, or migrate."""
        try:
            await self._guard("initialize", self._setup())
        except BaseException:
            await self.close()  # the transport does not close a backend that failed here
            raise

    async def _setup(self) -> None:
        async with self._transaction() as conn:
            self._conflict = await setup(conn, self._t)
        self._partitions.forget()
        self._copier.forget()
        self._ready = True

    # -- writing -----------------------------------------------------------

    async def write_table(self, table: pa.Table) -> None:
        """Write a batch; rows refused for their content raise
        :class:`RowsRejected` after the others are written."""
        if table.num_rows == 0:
            return
        table = _sql_write.conform(table)
        await self._guard("write", self._write(table))

    async def _write(self, table: pa.Table) -> None:
        if not self._ready:
            await self._setup()
        missing = _sql_ddl.missing_columns(table, self._t.columns)
        if missing:  # a metric group's columns the table does not have yet
            async with self._transaction() as conn:
                await add_columns(conn, self._t, missing)
            self._copier.forget()
        if self._t.partitioned:
            await self._partitions.ensure(table, self._connection)
        parts = min(WRITE_CONNECTIONS, self.config.pool_size)
        await _sql_write.write_in_parts(table, self._attempt, parts)

    async def _attempt(self, part: pa.Table) -> None:
        content: ContentError | None = None
        batch = Batch.of(part)
        try:
            try:
                await self._copy(batch, dedup=False)
            except self._t.asyncpg.UniqueViolationError:
                await self._copy(batch, dedup=True)  # rows already there: skip them
        except Exception as exc:
            if self._t.kind(exc) != "content":
                raise
            content = ContentError(self._t.secrets.scrub(describe(exc)))
        if content is not None:
            raise content

    async def _copy(self, batch: Batch, dedup: bool) -> None:
        """One transaction: COPY into the table, or (``dedup``) through the
        staging table (see :class:`~llamonitor.storage._postgres_copy.Copy`)."""
        async with self._transaction() as conn:
            await self._copier.run(conn, batch, dedup, self._conflict)

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))

    async def health_check(self) -> bool:
        try:
            async with self._connection() as conn:
                await conn.fetchval("SELECT 1")
            return True
        except Exception:
            return False

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            if self._loop is asyncio.get_running_loop():
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_SECONDS)
                return
        except Exception:
            pass
        try:
            pool.terminate()
        except Exception:
            pass  # its loop is closed: its sockets went with it


def _terminate(conn: Any) -> None:
    """Close a pool connection at once, unless it is gone already (a lost
    connection is handed back to its pool by asyncpg itself)."""
    try:
        if not conn.is_closed():
            conn.terminate()
    except Exception:
        pass  # released back to the pool: closed already


def query(config: StorageConfig) -> DuckDBQuery:
    """The query side of a PostgreSQL span table.

    Each query opens a connection, reads the rows its filters select (pushed
    into PostgreSQL's ``WHERE``) through a server-side cursor in chunks of
    :data:`~llamonitor.storage._sql_query.CHUNK_ROWS`, and hands them to DuckDB as a
    stream; a missing table is an empty store.

    Raises:
        ConfigurationError: a missing driver or a bad connection string.
    """
    t = Target(config)

    def source(filters: Filters) -> pa.RecordBatchReader | None:
        return _postgres_query.LoopThread.run(
            _postgres_query.open_reader(t, filters, CONNECT_TIMEOUT_SECONDS)
        )

    return DuckDBQuery(source)
