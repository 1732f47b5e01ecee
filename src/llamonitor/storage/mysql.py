"""MySQL / MariaDB store (aiomysql, the ``[mysql]`` extra): writer and query side.

``mysql://user:password@host:3306/database`` (or ``mariadb://``;
``?unix_socket=/path`` for a socket). The table is InnoDB, utf8mb4 with a
binary collation (ids compare byte for byte), timestamps ``DATETIME(6)`` in
UTC, ``custom_attributes`` LONGTEXT (the JSON text as written). Sessions use
strict SQL mode, so a value the column cannot hold is an error, never
silently truncated.

A batch is one transaction (a large one two, see :data:`WRITE_CONNECTIONS`) of
multi-row ``INSERT ... ON DUPLICATE KEY UPDATE event_id = event_id``
statements (a replay skips existing rows; unlike ``INSERT IGNORE``, data
errors still raise), each kept under ``max_allowed_packet``. The VALUES text
is built column-wise by Arrow.
MySQL cannot store NaN or infinity: such rows are rejected up front.

``options``: ``ssl`` (an ``ssl.SSLContext``, ``True`` for the default
context, or a dict ``{"ca": path, "cert": path, "key": path,
"check_hostname": bool, "verify": bool}``), ``connect_timeout`` (seconds),
``command_timeout`` (seconds, default :data:`COMMAND_TIMEOUT_SECONDS`; ``None``:
no limit), ``pool_recycle`` (seconds, default 3600).

Faults: aiomysql has no read timeout (and its ``connect_timeout`` bounds only
the TCP connect), so the writer bounds each unit of its work itself: getting a
connection (``connect_timeout + command_timeout``), and each transaction or
setup (``command_timeout``). Past it, the connection's socket is aborted under
the statement, which then fails as a transient ``TimeoutError``; a network
that stops delivering never holds the sink forever. After a failure of the
connection (a timeout, a connection lost) the pool is discarded, and the next
attempt connects afresh.
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
from llamonitor.storage import _mysql_ddl, _mysql_query, _sql_ddl, _sql_write
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._mysql_insert import Rows
from llamonitor.storage._mysql_target import SQL_MODE, Target
from llamonitor.storage._sql import StoreError, describe
from llamonitor.storage._sql_types import mysql_type as sql_type
from llamonitor.storage._sql_write import ContentError
from llamonitor.storage.base import RowsRejected, StorageBackend

__all__ = [
    "CLOSE_TIMEOUT_SECONDS",
    "COMMAND_TIMEOUT_SECONDS",
    "CONNECT_TIMEOUT_SECONDS",
    "LOCK_WAIT_SECONDS",
    "MAX_STATEMENT_BYTES",
    "SQL_MODE",
    "WRITE_CONNECTIONS",
    "MySQLBackend",
    "query",
    "sql_type",
]

T = TypeVar("T")

CLOSE_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
"""``connect_timeout`` unless set (in ``options`` or the connection string)."""
COMMAND_TIMEOUT_SECONDS = 30.0
"""The longest one transaction of the writer (a batch's INSERTs and commit) may
take, unless ``options`` sets ``command_timeout``; the table's setup gets
:data:`LOCK_WAIT_SECONDS` more (it may wait for another process's setup)."""
LOCK_WAIT_SECONDS = 60
"""``GET_LOCK``'s wait for another process setting up the same table."""
WRITE_CONNECTIONS = 2
"""A large batch is written as this many concurrent transactions, one per pool
connection: the client builds one part while the server stores the other
(about a quarter more rows per second than one in the benchmark). If one part
fails, the retry of the batch skips what the other wrote."""

MAX_STATEMENT_BYTES = 4 * 1024 * 1024
"""Largest INSERT sent (also kept under the server's ``max_allowed_packet``)."""


class MySQLBackend(StorageBackend):
    """Writes spans to a MySQL or MariaDB table (default ``metric_events``)."""

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = _target(self.config)
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._max_statement = MAX_STATEMENT_BYTES

    def __repr__(self) -> str:
        return f"MySQLBackend({self._t.secrets.masked}, {self._t.label})"

    async def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is not loop:
            pool, self._pool = self._pool, None  # a pool belongs to the loop that made it
            try:
                pool.terminate()
            except Exception:
                pass  # that loop is closed: its sockets went with it
        if self._pool is None:
            self._pool = await self._t.aiomysql.create_pool(
                # No connection at creation: every connect happens in
                # _connection(), under its time limit.
                minsize=0,
                maxsize=self.config.pool_size,
                pool_recycle=self._t.pool_recycle,
                autocommit=False,
                **self._t.connect_kwargs,
            )
            self._loop = loop
        return self._pool

    def _discard_pool(self) -> None:
        """Close every pooled connection at once."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                pool.terminate()
            except Exception:
                pass  # its loop is closed: its sockets went with it

    @asynccontextmanager
    async def _connection(self, extra: float = 0.0) -> AsyncIterator[Any]:
        """A pool connection whose use must end within ``command_timeout`` (+
        ``extra``) seconds: past it, its socket is aborted under the statement
        (see the module docstring), and the failure raised as ``TimeoutError``."""
        pool = await self._get_pool()
        limit = self._t.command_timeout
        if limit is None:
            async with pool.acquire() as conn:
                yield conn
            return
        limit += extra
        connect = self._t.connect_kwargs["connect_timeout"] + limit
        try:
            conn = await asyncio.wait_for(_acquire(pool), connect)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no connection within {connect:g} s") from None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            _abort(conn)

        timer = asyncio.get_running_loop().call_later(limit, expire)
        try:
            yield conn
        except Exception as exc:
            if expired:
                raise TimeoutError(f"the server did not answer within {limit:g} s") from exc
            raise
        finally:
            timer.cancel()
            await pool.release(conn)

    async def _guard(self, doing: str, work: Awaitable[T]) -> T:
        """Await ``work``; driver errors become a scrubbed :class:`StoreError`.
        After a failure of the connection rather than of a statement, the pool
        is discarded: the next attempt connects afresh."""
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
        """Connect, create the database (schema_name), table, indexes and meta
        row, or migrate."""
        try:
            await self._guard("initialize", self._setup())
        except BaseException:
            await self.close()  # the transport does not close a backend that failed here
            raise

    async def _setup(self) -> None:
        t = self._t
        lock = _mysql_ddl.lock_name(t)
        async with self._connection(LOCK_WAIT_SECONDS) as conn, conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (lock, LOCK_WAIT_SECONDS))
            try:
                packet = await _mysql_ddl.setup(cur, t)
                self._max_statement = max(64 * 1024, min(MAX_STATEMENT_BYTES, packet - 4096))
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
                await conn.commit()
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
            async with self._connection(LOCK_WAIT_SECONDS) as conn, conn.cursor() as cur:
                await _mysql_ddl.add_columns(cur, self._t, missing)
                await conn.commit()
        rows = Rows(table, self._t.qualified, self._max_statement)

        async def attempt(part: pa.Table) -> None:
            # The slice's rows, by the index column kept for this purpose.
            ids = part.column("__row").to_pylist()
            await self._attempt(rows.statements(ids, self._max_statement))

        indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
        parts = min(WRITE_CONNECTIONS, self.config.pool_size)
        try:
            await _sql_write.write_in_parts(indexed, attempt, parts, rows.refused)
        except RowsRejected as exc:
            raise RowsRejected(exc.rejected.drop_columns(["__row"]), exc.errors) from None

    async def _attempt(self, statements: list[str]) -> None:
        """One transaction of ``statements``."""
        content: ContentError | None = None
        async with self._connection() as conn:
            try:
                await conn.begin()
                async with conn.cursor() as cur:
                    for sql in statements:
                        await cur.execute(sql)
                await conn.commit()
                return
            except Exception as exc:
                try:
                    await conn.rollback()
                except Exception:
                    conn.close()  # broken: the pool drops it
                if self._t.kind(exc) != "content":
                    raise
                content = ContentError(self._t.secrets.scrub(describe(exc)))
        raise content

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))

    async def health_check(self) -> bool:
        try:
            async with self._connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 1")
            return True
        except Exception:
            return False

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            if self._loop is asyncio.get_running_loop():
                pool.close()
                await asyncio.wait_for(pool.wait_closed(), CLOSE_TIMEOUT_SECONDS)
                return
        except Exception:
            pass
        try:
            pool.terminate()
        except Exception:
            pass  # its loop is closed: its sockets went with it


async def _acquire(pool: Any) -> Any:
    conn = await pool.acquire()
    return conn


def _abort(conn: Any) -> None:
    """Close ``conn``'s socket at once: its pending read fails. (aiomysql's
    ``close()`` closes the transport only after unsent data went out, which a
    stalled network never takes.)"""
    writer = getattr(conn, "_writer", None)
    try:
        if writer is not None:
            writer.transport.abort()
    except Exception:
        pass
    try:
        conn.close()
    except Exception:
        pass


def query(config: StorageConfig) -> DuckDBQuery:
    """The query side of a MySQL/MariaDB span table (pymysql, unbuffered):
    filters go into MySQL's ``WHERE``, rows stream to DuckDB in chunks; a
    missing table is an empty store.

    Raises:
        ConfigurationError: a missing driver or a bad connection string.
    """
    t = _target(config)

    def source(filters: Filters) -> pa.RecordBatchReader | None:
        return _mysql_query.open_reader(t, filters)

    return DuckDBQuery(source)


def _target(config: StorageConfig) -> Target:
    """The table of ``config``, with this module's default timeouts (read at
    each call: a changed constant applies to the next backend or query)."""
    return Target(
        config, connect_timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS
    )
