"""PostgreSQL store (asyncpg, the ``[postgres]`` extra): writer and query side.

Rows go in by binary ``COPY``, one transaction per batch (a batch of
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
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage import _sql, _sql_ddl, _sql_query, _sql_write
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._sql import Secrets, StoreError, describe
from llamonitor.storage._sql_types import postgres_accepts
from llamonitor.storage._sql_types import postgres_type as sql_type
from llamonitor.storage._sql_write import ContentError
from llamonitor.storage.base import RowsRejected, StorageBackend

logger = logging.getLogger("llamonitor.storage.postgres")

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
_FIXED_OPTIONS = ("dsn", "loop", "connection_class", "record_class", "database", "host")
_SERVER_SETTINGS = {"application_name": "llamonitor"}
# SQLSTATEs: undefined table / column / schema mean the table was dropped or
# altered under us: set it up again before the next attempt.
_MISSING = ("42P01", "42703", "3F000")
_TS = "timestamp"
# Connection lost, out of resources (connections, disk), shutting down, a
# serialization failure or deadlock: worth retrying, and not a setting.
_TRANSIENT_CLASSES = ("08", "53", "57", "40")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Timestamps travel as PostgreSQL's own binary value, microseconds since
# 2000-01-01 UTC, computed by Arrow for the whole column: making a datetime
# object per row costs more than the whole COPY. The writer's connections get
# this codec (the query side's connections keep asyncpg's default).
_PG_EPOCH_US = 946_684_800_000_000


def _encode_timestamp(micros: int) -> tuple[int]:
    return (micros,)


def _decode_timestamp(value: tuple[int]) -> int:
    return value[0]


async def _writer_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamp,
        decoder=_decode_timestamp,
        format="tuple",
    )


class _Target:
    """Names and statements of one span table, from a ``StorageConfig``."""

    def __init__(self, config: StorageConfig) -> None:
        dsn = _sql.connection_string(config, "postgres")
        self.secrets = Secrets(dsn, [config.options.get("password")])
        # asyncpg takes postgresql:// or postgres:// only (not SQLAlchemy's +driver).
        self.dsn = "postgresql" + dsn[dsn.index("://") :]
        self.asyncpg = _sql.require_driver("asyncpg", "postgres", "postgres")
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        self.schema = (
            _sql.check_identifier("storage.schema_name", config.schema_name)
            if config.schema_name
            else None
        )
        self.qualified = (f"{_q(self.schema)}." if self.schema else "") + _q(self.table)
        self.label = f"table {(self.schema + '.') if self.schema else ''}{self.table}"
        options = dict(config.options)
        partition = options.pop("partition", None)
        if partition not in (None, "monthly"):
            raise ConfigurationError(
                "storage.options", f"partition: {partition!r} is not supported; use 'monthly'"
            )
        self.partitioned = partition == "monthly"
        allowed = set(inspect.signature(self.asyncpg.connect).parameters) - set(_FIXED_OPTIONS)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(unknown)} for the postgres backend; "
                f"it takes 'partition' and asyncpg.connect's: {', '.join(sorted(allowed))}",
            )
        settings = {**_SERVER_SETTINGS, **dict(options.pop("server_settings", None) or {})}
        self.connect_kwargs: dict[str, Any] = {**options, "server_settings": settings}

    def name(self, suffix: str) -> str:
        return _sql.derived_name(self.table, suffix)

    def qualify(self, name: str) -> str:
        return (f"{_q(self.schema)}." if self.schema else "") + _q(name)

    def meta(self) -> str:
        return self.qualify(_sql_ddl.META_TABLE)

    def kind(self, exc: BaseException) -> str:
        """``content``, ``missing`` (table/column gone) or ``other``."""
        pg = self.asyncpg
        if isinstance(exc, pg.PostgresError):
            state = str(getattr(exc, "sqlstate", "") or "")
            if state in _MISSING:
                return "missing"
            if state[:2] in ("22", "23") or state == "54000":
                return "content"
            return "other"
        if isinstance(exc, pg.exceptions._base.DataError):
            return "content"  # a value the client could not encode
        return "other"

    def connection_failed(self, exc: BaseException) -> bool:
        """Did the connection fail (timed out, lost, closed by the server),
        rather than a statement on a working one?"""
        state = str(getattr(exc, "sqlstate", "") or "")
        if isinstance(exc, self.asyncpg.PostgresError):
            return state[:2] == "08" or state in ("57P01", "57P02", "57P03")
        return not isinstance(exc, self.asyncpg.exceptions._base.DataError)

    def error(self, doing: str, exc: BaseException) -> StoreError:
        state = str(getattr(exc, "sqlstate", "") or "")
        pg = self.asyncpg
        transient = (
            _sql.network_error(exc)
            or state[:2] in _TRANSIENT_CLASSES
            or state in ("55P03", *_MISSING)
            or isinstance(exc, pg.ConnectionDoesNotExistError)
            or (isinstance(exc, pg.InterfaceError) and "closed" in str(exc))
        )
        return StoreError(
            self.secrets.scrub(
                f"postgres {self.secrets.masked} {self.label}: {doing}: {describe(exc)}"
            ),
            sqlstate=state or None,
            transient=transient,
        )


class PostgresBackend(StorageBackend):
    """Writes spans to a PostgreSQL table (default ``metric_events``).

    ``StorageConfig(backend="postgres", connection_string="postgresql://...",
    table_name=..., schema_name=..., pool_size=..., options=...)``.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = _Target(self.config)
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._conflict = ", ".join(_q(c) for c in _sql_ddl.PRIMARY_KEY)
        self._months: set[str] = set()
        self._warned_default = False
        names = list(SCHEMA.names)
        self._stage = (
            "llamonitor_stage_"
            + hex(_sql.lock_key(f"{self._t.qualified}/{SCHEMA_VERSION}") & 0xFFFFFFFFFFFF)[2:]
        )
        self._stage_ddl = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_q(self._stage)} ("
            + ", ".join(f"{_q(f.name)} {sql_type(f)}" for f in SCHEMA)
            + ") ON COMMIT DELETE ROWS"
        )
        self._columns = ", ".join(_q(n) for n in names)

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
                init=_writer_connection,
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
        t = self._t
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _sql.lock_key(t.qualified))
            if t.schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(t.schema)}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t.meta()} (table_name text PRIMARY KEY, "
                "schema_version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            )
            version = await conn.fetchval(
                f"SELECT schema_version FROM {t.meta()} WHERE table_name = $1", t.table
            )
            rows = await conn.fetch(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                t.qualified,
            )
            existing = {r[0]: r[1] for r in rows}
            if not existing:
                await self._create(conn)
            else:
                await self._migrate(conn, existing, version)
            for suffix, cols in _sql_ddl.INDEXES:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_q(t.name(suffix))} ON {t.qualified} "
                    f"({_sql_ddl.index_columns(cols, _q)})"
                )
            await conn.execute(
                f"INSERT INTO {t.meta()} (table_name, schema_version) VALUES ($1, $2) "
                "ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version, "
                "updated_at = now()",
                t.table,
                SCHEMA_VERSION,
            )
        self._months.clear()
        self._ready = True

    async def _create(self, conn: Any) -> None:
        t = self._t
        defs = _sql_ddl.column_defs(sql_type, _q, SCHEMA)
        key = [*_sql_ddl.PRIMARY_KEY, _TS] if t.partitioned else list(_sql_ddl.PRIMARY_KEY)
        ddl = f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(defs)}, " + (
            f"PRIMARY KEY ({', '.join(_q(c) for c in key)}))"
        )
        if t.partitioned:
            ddl += f" PARTITION BY RANGE ({_q(_TS)})"
        await conn.execute(ddl)
        if t.partitioned:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t.qualify(t.name('default'))} "
                f"PARTITION OF {t.qualified} DEFAULT"
            )
        self._conflict = ", ".join(_q(c) for c in key)
        logger.info("llamonitor: created %s (schema version %d)", t.label, SCHEMA_VERSION)

    async def _migrate(self, conn: Any, existing: dict[str, str], version: int | None) -> None:
        t = self._t
        missing = _sql_ddl.plan_migration(t.label, existing, postgres_accepts, version)
        for f in missing:
            await conn.execute(
                f"ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS {_q(f.name)} {sql_type(f)}"
            )
        if missing:
            logger.info(
                "llamonitor: migrated %s to schema version %d: added %s",
                t.label,
                SCHEMA_VERSION,
                ", ".join(f.name for f in missing),
            )
        relkind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", t.qualified
        )
        if t.partitioned and relkind != "p":
            raise ConfigurationError(
                "storage.options",
                f"partition: {t.label} exists and is not partitioned; drop the option, "
                "or move the table away so a partitioned one is created",
            )
        key = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            t.qualified,
        )
        columns = {r[0] for r in key}
        if not columns:
            wanted = [*_sql_ddl.PRIMARY_KEY, _TS] if relkind == "p" else list(_sql_ddl.PRIMARY_KEY)
            await conn.execute(
                f"ALTER TABLE {t.qualified} ADD PRIMARY KEY ({', '.join(_q(c) for c in wanted)})"
            )
            columns = set(wanted)
        if columns not in ({"event_id"}, {"event_id", _TS}):
            raise ConfigurationError(
                "storage.table_name",
                f"{t.label} has the primary key ({', '.join(sorted(columns))}); "
                "llamonitor needs (event_id) or (event_id, timestamp)",
            )
        self._conflict = ", ".join(_q(c) for c in ("event_id", _TS) if c in columns)

    async def _ensure_partitions(self, table: pa.Table) -> None:
        ts = table.column(_TS)
        keys = pc.unique(pc.add(pc.multiply(pc.year(ts), 12), pc.subtract(pc.month(ts), 1)))
        t = self._t
        for key in sorted(k for k in keys.to_pylist() if k is not None):
            year, mo = divmod(key, 12)
            month = f"{year:04d}-{mo + 1:02d}"
            if month in self._months:
                continue
            mo += 1
            try:
                start = datetime(year, mo, 1, tzinfo=timezone.utc)
                end = datetime(year + mo // 12, mo % 12 + 1, 1, tzinfo=timezone.utc)
            except ValueError:
                self._months.add(month)  # beyond year 9999: the DEFAULT partition
                continue
            part = t.qualify(t.name(f"p{year:04d}_{mo:02d}"))
            ddl = (
                f"CREATE TABLE IF NOT EXISTS {part} PARTITION OF {t.qualified} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            try:
                async with self._connection() as conn:
                    await conn.execute(ddl)
            except (
                self._t.asyncpg.DuplicateTableError,
                self._t.asyncpg.UniqueViolationError,
            ):
                pass  # another process created it meanwhile
            except self._t.asyncpg.CheckViolationError:
                # The DEFAULT partition already holds rows of that month (written
                # before the month had a partition): they and new ones stay there.
                if not self._warned_default:
                    self._warned_default = True
                    logger.warning(
                        "llamonitor: %s: the default partition holds rows of %s, so its "
                        "month partition cannot be created; rows of that month go to the "
                        "default partition",
                        t.label,
                        month,
                    )
            self._months.add(month)

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
        if self._t.partitioned:
            await self._ensure_partitions(table)
        parts = min(WRITE_CONNECTIONS, self.config.pool_size)
        await _sql_write.write_in_parts(table, self._attempt, parts)

    async def _attempt(self, part: pa.Table) -> None:
        content: ContentError | None = None
        columns, records = _records(part)
        try:
            try:
                await self._copy(columns, records, dedup=False)
            except self._t.asyncpg.UniqueViolationError:
                await self._copy(columns, records, dedup=True)  # rows already there: skip them
        except Exception as exc:
            if self._t.kind(exc) != "content":
                raise
            content = ContentError(self._t.secrets.scrub(describe(exc)))
        if content is not None:
            raise content

    async def _copy(self, columns: list[str], records: list[tuple[Any, ...]], dedup: bool) -> None:
        """One transaction: COPY into the table, or (``dedup``) into the staging
        table and from there every row whose key is not in the table yet."""
        async with self._transaction() as conn:
            if not dedup:
                await conn.copy_records_to_table(
                    self._t.table, schema_name=self._t.schema, records=records, columns=columns
                )
                return
            await conn.execute(self._stage_ddl)
            await conn.copy_records_to_table(self._stage, records=records, columns=columns)
            await conn.execute(
                f"INSERT INTO {self._t.qualified} ({self._columns}) SELECT {self._columns} "
                f"FROM {_q(self._stage)} ON CONFLICT ({self._conflict}) DO NOTHING"
            )

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(pa.Table.from_pylist([e.to_row() for e in events], schema=SCHEMA))

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


def _records(table: pa.Table) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns to COPY (see :func:`~llamonitor.storage._sql_write.present_fields`)
    and the rows."""
    fields = _sql_write.present_fields(table)
    values = []
    for f in fields:
        col = table.column(f.name)
        if f.name == _TS:
            col = pc.subtract(col.cast(pa.int64()), _PG_EPOCH_US)
        values.append(col.to_pylist())
    return [f.name for f in fields], list(zip(*values, strict=True))


# -- query side ----------------------------------------------------------------


class _LoopThread:
    """A private event loop on a daemon thread: the query side is called
    synchronously, from any thread (also one running its own loop)."""

    _instance: _LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="llamonitor-postgres-query", daemon=True
        ).start()

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = _LoopThread()  # none yet, or a forked child's
            loop = cls._instance.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_PUSHDOWN = _sql_query.Pushdown(quote=_q, placeholder=lambda i: f"${i}", timestamp=lambda t: t)


def query(config: StorageConfig) -> DuckDBQuery:
    """The query side of a PostgreSQL span table.

    Each query opens a connection, reads the rows its filters select (pushed
    into PostgreSQL's ``WHERE``) through a server-side cursor in chunks of
    :data:`~llamonitor.storage._sql_query.CHUNK_ROWS`, and hands them to DuckDB as a
    stream; a missing table is an empty store.

    Raises:
        ConfigurationError: a missing driver or a bad connection string.
    """
    t = _Target(config)

    def source(filters: Filters) -> pa.RecordBatchReader | None:
        return _LoopThread.run(_open(t, filters))

    return DuckDBQuery(source)


async def _open(t: _Target, filters: Filters) -> pa.RecordBatchReader | None:
    conn: Any = None
    error: StoreError | None = None
    try:
        conn = await t.asyncpg.connect(
            t.dsn, **{"timeout": CONNECT_TIMEOUT_SECONDS, **t.connect_kwargs}
        )
        rows = await conn.fetch(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            t.qualified,
        )
        if not rows:
            await conn.close()
            return None
        sql, params = _PUSHDOWN.select(t.qualified, (r[0] for r in rows), filters)
        transaction = conn.transaction(readonly=True)
        await transaction.start()
        cursor = await conn.cursor(sql, *params)
        first = await cursor.fetch(_sql_query.CHUNK_ROWS)
    except Exception as exc:
        error = t.error("query", exc)
    if error is not None:
        if conn is not None:
            conn.terminate()
        raise error

    def fetch() -> list[Any]:
        rows: list[Any] = _LoopThread.run(cursor.fetch(_sql_query.CHUNK_ROWS))
        return rows

    def close() -> None:
        try:
            _LoopThread.run(conn.close(timeout=5))
        except Exception:
            conn.terminate()

    return _sql_query.stream(first, fetch, close, scrub=t.secrets.scrub)
