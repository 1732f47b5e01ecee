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
import logging
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage import _sql, _sql_ddl, _sql_query, _sql_write
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._sql import Secrets, StoreError, describe
from llamonitor.storage._sql_types import mysql_accepts
from llamonitor.storage._sql_types import mysql_type as sql_type
from llamonitor.storage._sql_write import ContentError
from llamonitor.storage.base import RowsRejected, StorageBackend

logger = logging.getLogger("llamonitor.storage.mysql")

T = TypeVar("T")

SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
"""Strict (bad values raise), and without ANSI_QUOTES / NO_BACKSLASH_ESCAPES,
which the statements' quoting relies on."""

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

# sql_notes = 0: no "already exists" notes (aiomysql turns them into Python warnings).
_INIT = f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}', sql_notes = 0"
_TS = "timestamp"
_CONTENT_CODES = frozenset(
    {1048, 1062, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1451, 1452, 1690, 3140, 3819, 4025}
)
_MISSING_CODES = frozenset({1054, 1146})
# Too many connections, shutdown, lock wait timeout, deadlock, connection
# killed, client-side connection errors (cannot connect, gone away, lost).
_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055})
# The connection is gone: shutdown, killed, cannot connect, gone away, lost.
_CONNECTION_CODES = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2055})
_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")
_SPECIAL = r"[\\'\x00\x1a]"
_ESCAPES = (("\\", "\\\\"), ("'", "\\'"), ("\x00", "\\0"), ("\x1a", "\\Z"))


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ssl_context(value: Any) -> Any:
    if value is None or value is False or isinstance(value, _ssl.SSLContext):
        return value or None
    if value is True:
        return _ssl.create_default_context()
    if isinstance(value, dict):
        unknown = set(value) - {"ca", "cert", "key", "check_hostname", "verify"}
        if unknown:
            raise ConfigurationError(
                "storage.options", f"ssl: unknown key(s) {', '.join(sorted(unknown))}"
            )
        ctx = _ssl.create_default_context(cafile=value.get("ca"))
        if value.get("cert"):
            ctx.load_cert_chain(value["cert"], value.get("key"))
        ctx.check_hostname = bool(value.get("check_hostname", True))
        if not value.get("verify", True):
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
        return ctx
    raise ConfigurationError("storage.options", "ssl: an SSLContext, True or a dict")


class _Target:
    """Connection parameters, names and error handling of one span table."""

    def __init__(self, config: StorageConfig) -> None:
        dsn = _sql.connection_string(config, "mysql")
        self.aiomysql = _sql.require_driver("aiomysql", "mysql", "mysql")
        self.pymysql = _sql.require_driver("pymysql", "mysql", "mysql")
        self.secrets = Secrets(dsn)
        bad = ConfigurationError(
            "storage.connection_string",
            f"{self.secrets.masked!r} is not mysql://user:password@host:port/database",
        )
        try:
            parts = urlsplit(dsn)
            port = parts.port or 3306
            params = dict(parse_qsl(parts.query))
        except ValueError:
            raise bad from None
        database = unquote(parts.path.lstrip("/")) or None
        self.schema = (
            _sql.check_identifier("storage.schema_name", config.schema_name)
            if config.schema_name
            else None
        )
        if not database and not self.schema:
            raise ConfigurationError(
                "storage.connection_string",
                f"{self.secrets.masked!r} names no database: mysql://user:password@host:3306/"
                "<database> (or set storage.schema_name)",
            )
        unknown = set(params) - {"unix_socket", "connect_timeout"}
        if unknown:
            raise ConfigurationError(
                "storage.connection_string",
                f"unsupported parameter(s) {', '.join(sorted(unknown))}; TLS and the rest go "
                "in storage.options",
            )
        options = dict(config.options)
        extra = set(options) - {"ssl", "connect_timeout", "command_timeout", "pool_recycle"}
        if extra:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(sorted(extra))} for the mysql backend; it takes "
                "ssl, connect_timeout, command_timeout, pool_recycle",
            )
        self.pool_recycle = int(options.pop("pool_recycle", 3600))
        command = options.get("command_timeout", COMMAND_TIMEOUT_SECONDS)
        if command is not None and (
            isinstance(command, bool) or not isinstance(command, (int, float)) or command <= 0
        ):
            raise ConfigurationError(
                "storage.options", f"command_timeout: {command!r} is not a number of seconds > 0"
            )
        self.command_timeout: float | None = None if command is None else float(command)
        timeout = options.get("connect_timeout", params.get("connect_timeout"))
        self.connect_kwargs: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": port,
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else "",
            "db": database,
            "unix_socket": params.get("unix_socket"),
            "charset": "utf8mb4",
            "init_command": _INIT,
            "connect_timeout": float(timeout) if timeout is not None else CONNECT_TIMEOUT_SECONDS,
            "ssl": _ssl_context(options.get("ssl")),
        }
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        self.qualified = (f"{_q(self.schema)}." if self.schema else "") + _q(self.table)
        self.label = f"table {(self.schema + '.') if self.schema else ''}{self.table}"

    def qualify(self, name: str) -> str:
        return (f"{_q(self.schema)}." if self.schema else "") + _q(name)

    def kind(self, exc: BaseException) -> str:
        err = self.pymysql.err
        code = exc.args[0] if isinstance(exc, err.MySQLError) and exc.args else None
        if code in _MISSING_CODES:
            return "missing"
        if code in _CONTENT_CODES or isinstance(exc, (err.DataError, err.IntegrityError)):
            return "content"
        return "other"

    def connection_failed(self, exc: BaseException) -> bool:
        """Did the connection fail (timed out, lost, refused), rather than a
        statement on a working one?"""
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return (
            _sql.network_error(exc)
            or code in _CONNECTION_CODES
            or isinstance(exc, self.pymysql.err.InterfaceError)
        )

    def error(self, doing: str, exc: BaseException) -> StoreError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        transient = _sql.network_error(exc) or code in _TRANSIENT_CODES or code in _MISSING_CODES
        return StoreError(
            self.secrets.scrub(
                f"mysql {self.secrets.masked} {self.label}: {doing}: {describe(exc)}"
            ),
            sqlstate=str(code) if code is not None else None,
            transient=transient,
        )


class MySQLBackend(StorageBackend):
    """Writes spans to a MySQL or MariaDB table (default ``metric_events``)."""

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = _Target(self.config)
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._max_statement = MAX_STATEMENT_BYTES
        self._suffix = " ON DUPLICATE KEY UPDATE `event_id` = `event_id`"

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
        lock = f"llamonitor:{t.schema or ''}.{t.table}"[:64]
        async with self._connection(LOCK_WAIT_SECONDS) as conn, conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (lock, LOCK_WAIT_SECONDS))
            try:
                await self._ddl(cur)
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
                await conn.commit()
        self._ready = True

    async def _ddl(self, cur: Any) -> None:
        t = self._t
        if t.schema:
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS {_q(t.schema)}")
        await cur.execute("SELECT @@max_allowed_packet")
        (packet,) = await cur.fetchone()
        self._max_statement = max(64 * 1024, min(MAX_STATEMENT_BYTES, int(packet) - 4096))
        await cur.execute(
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN "
            f"({', '.join(['%s'] * len(_COLLATIONS))})",
            _COLLATIONS,
        )
        found = {r[0] for r in await cur.fetchall()}
        collation = next((c for c in _COLLATIONS if c in found), "utf8mb4_bin")
        table_opts = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
        meta = t.qualify(_sql_ddl.META_TABLE)
        await cur.execute(
            f"CREATE TABLE IF NOT EXISTS {meta} (table_name VARCHAR(255) NOT NULL PRIMARY KEY, "
            f"schema_version INT NOT NULL, updated_at DATETIME(6) NOT NULL) {table_opts}"
        )
        await cur.execute(f"SELECT schema_version FROM {meta} WHERE table_name = %s", (t.table,))
        row = await cur.fetchone()
        schema_sql = "%s" if t.schema else "DATABASE()"
        where = f"TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s"
        args = (t.schema, t.table) if t.schema else (t.table,)
        await cur.execute(
            f"SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE {where}", args
        )
        existing = {r[0]: r[1] for r in await cur.fetchall()}
        indexes = [
            f"KEY {_q(_sql.derived_name(t.table, s))} ({_sql_ddl.index_columns(c, _q)})"
            for s, c in _sql_ddl.INDEXES
        ]
        if not existing:
            defs = _sql_ddl.column_defs(sql_type, _q, SCHEMA)
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(defs)}, "
                f"PRIMARY KEY ({', '.join(_q(c) for c in _sql_ddl.PRIMARY_KEY)}), "
                f"{', '.join(indexes)}) {table_opts}"
            )
            logger.info("llamonitor: created %s (schema version %d)", t.label, SCHEMA_VERSION)
        else:
            version = row[0] if row else None
            missing = _sql_ddl.plan_migration(t.label, existing, mysql_accepts, version)
            if missing:
                adds = ", ".join(f"ADD COLUMN {_q(f.name)} {sql_type(f)}" for f in missing)
                await cur.execute(f"ALTER TABLE {t.qualified} {adds}")
                logger.info(
                    "llamonitor: migrated %s to schema version %d: added %s",
                    t.label,
                    SCHEMA_VERSION,
                    ", ".join(f.name for f in missing),
                )
            await cur.execute(
                f"SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE {where} "
                "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                args,
            )
            have: dict[str, list[str]] = {}
            for name, column in await cur.fetchall():
                have.setdefault(name, []).append(column)
            if "PRIMARY" not in have:
                await cur.execute(f"ALTER TABLE {t.qualified} ADD PRIMARY KEY (`event_id`)")
            elif have["PRIMARY"] != list(_sql_ddl.PRIMARY_KEY):
                raise ConfigurationError(
                    "storage.table_name",
                    f"{t.label} has the primary key ({', '.join(have['PRIMARY'])}); "
                    "llamonitor needs (event_id)",
                )
            for (suffix, _), ddl in zip(_sql_ddl.INDEXES, indexes, strict=True):
                if _sql.derived_name(t.table, suffix) not in have:
                    await cur.execute(f"ALTER TABLE {t.qualified} ADD {ddl}")
        await cur.execute(
            f"INSERT INTO {meta} (table_name, schema_version, updated_at) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
            "schema_version = VALUES(schema_version), updated_at = VALUES(updated_at)",
            (t.table, SCHEMA_VERSION),
        )

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
        fields = _sql_write.present_fields(table)
        prefix = (
            f"INSERT INTO {self._t.qualified} ({', '.join(_q(f.name) for f in fields)}) VALUES "
        )
        rows = _values(table, fields)
        sizes = pc.binary_length(rows).to_pylist()
        refused = _non_finite(table)
        limit = self._max_statement - len(prefix) - len(self._suffix)
        refused += [
            (i, f"the row is {n} bytes of SQL, more than max_allowed_packet allows")
            for i, n in enumerate(sizes)
            if n > limit
        ]
        literals = rows.to_pylist()

        async def attempt(part: pa.Table) -> None:
            # The slice's rows, by the index column kept for this purpose.
            ids = part.column("__row").to_pylist()
            await self._attempt(prefix, [literals[i] for i in ids], [sizes[i] for i in ids])

        indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
        parts = min(WRITE_CONNECTIONS, self.config.pool_size)
        try:
            await _sql_write.write_in_parts(indexed, attempt, parts, sorted(set(refused)))
        except RowsRejected as exc:
            raise RowsRejected(exc.rejected.drop_columns(["__row"]), exc.errors) from None

    async def _attempt(self, prefix: str, literals: list[str], sizes: list[int]) -> None:
        """One transaction of INSERTs of ``literals``, each statement under the limit."""
        room = self._max_statement - len(prefix) - len(self._suffix)
        statements: list[str] = []
        start, size = 0, 0
        for i, n in enumerate(sizes):
            if i > start and size + n + 1 > room:
                statements.append(prefix + ",".join(literals[start:i]) + self._suffix)
                start, size = i, 0
            size += n + 1
        statements.append(prefix + ",".join(literals[start:]) + self._suffix)
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
        await self.write_table(pa.Table.from_pylist([e.to_row() for e in events], schema=SCHEMA))

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


def _literal(col: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    """The SQL literal of each value of a column (``NULL`` for nulls)."""
    t = field.type
    if pa.types.is_string(t):
        if pc.any(pc.match_substring_regex(col, _SPECIAL)).as_py():
            for old, new in _ESCAPES:
                col = pc.replace_substring(col, old, new)
        text = pc.binary_join_element_wise("'", col, "'", "")
    elif pa.types.is_timestamp(t):
        text = pc.binary_join_element_wise(
            "'", col.cast(pa.timestamp("us")).cast(pa.string()), "'", ""
        )
    elif pa.types.is_boolean(t):
        text = col.cast(pa.int8()).cast(pa.string())
    else:
        text = col.cast(pa.string())
    return pc.fill_null(text, "NULL")


def _values(table: pa.Table, fields: list[pa.Field]) -> pa.ChunkedArray:
    """``(v1,v2,...)`` of each row (the ``fields`` columns), built column-wise."""
    columns = [_literal(table.column(f.name), f) for f in fields]
    joined = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise("(", joined, ")", "")


def _non_finite(table: pa.Table) -> list[tuple[int, str]]:
    """Rows with NaN or infinity in a float column (MySQL cannot store them)."""
    bad: dict[int, list[str]] = {}
    for f in SCHEMA:
        if not pa.types.is_floating(f.type):
            continue
        finite = pc.fill_null(pc.is_finite(table.column(f.name)), True)
        if pc.all(finite).as_py():
            continue
        for i, ok in enumerate(finite.to_pylist()):
            if not ok:
                bad.setdefault(i, []).append(f.name)
    return [
        (i, f"MySQL cannot store NaN or infinity (column {', '.join(names)})")
        for i, names in sorted(bad.items())
    ]


# -- query side ----------------------------------------------------------------


def _decode(field: pa.Field, values: list[Any]) -> pa.Array:
    if pa.types.is_boolean(field.type):
        return pa.array(values, pa.int64()).cast(pa.bool_())
    return pa.array(values, type=field.type)  # naive DATETIMEs are UTC


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


_PUSHDOWN = _sql_query.Pushdown(
    quote=_q, placeholder=lambda _i: "%s", timestamp=lambda t: t.replace(tzinfo=None)
)


def query(config: StorageConfig) -> DuckDBQuery:
    """The query side of a MySQL/MariaDB span table (pymysql, unbuffered):
    filters go into MySQL's ``WHERE``, rows stream to DuckDB in chunks; a
    missing table is an empty store.

    Raises:
        ConfigurationError: a missing driver or a bad connection string.
    """
    t = _Target(config)

    def source(filters: Filters) -> pa.RecordBatchReader | None:
        pymysql = t.pymysql
        kwargs = {**t.connect_kwargs, "database": t.connect_kwargs["db"]}
        del kwargs["db"]
        conn: Any = None
        error: StoreError | None = None
        try:
            conn = pymysql.connect(**kwargs, autocommit=True, cursorclass=pymysql.cursors.SSCursor)
            cur = conn.cursor()
            schema_sql = "%s" if t.schema else "DATABASE()"
            cur.execute(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                f"WHERE TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s",
                (t.schema, t.table) if t.schema else (t.table,),
            )
            present = [r[0] for r in cur.fetchall()]
            if not present:
                conn.close()
                return None
            sql, params = _PUSHDOWN.select(t.qualified, present, filters)
            cur.execute(sql, params)
            first = cur.fetchmany(_sql_query.CHUNK_ROWS)
        except Exception as exc:
            error = t.error("query", exc)
        if error is not None:
            if conn is not None:
                conn.close()
            raise error
        return _sql_query.stream(
            first,
            lambda: cur.fetchmany(_sql_query.CHUNK_ROWS),
            conn.close,
            _decode,
            t.secrets.scrub,
        )

    return DuckDBQuery(source)
