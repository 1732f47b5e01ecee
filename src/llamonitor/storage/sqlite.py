"""SQLite store (the standard library's ``sqlite3``): writer and query side.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the
SQLAlchemy convention; the directory is created). ``:memory:`` is refused: the
database would vanish with the sink's connection and nothing could read it.
The file is in WAL mode with ``synchronous=NORMAL``, so readers (the CLI)
never block the writer. A batch is one ``BEGIN IMMEDIATE`` transaction of
``INSERT ... ON CONFLICT(event_id) DO NOTHING`` (not ``INSERT OR IGNORE``,
which would also hide NOT NULL violations). Timestamps are stored as UTC
text ``YYYY-MM-DD HH:MM:SS.ffffff``, which sorts in time order.
``options={"timeout": seconds}`` is how long a write waits for another
process's lock (default 30).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from llamonitor.schema._extensions import rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage import _sql, _sql_ddl, _sql_query, _sql_write, _sqlite_ddl
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._sql import Secrets, StoreError, describe
from llamonitor.storage._sql_types import sqlite_type as sql_type  # noqa: F401 - the store's type map
from llamonitor.storage._sql_write import ContentError
from llamonitor.storage.base import RowsRejected, StorageBackend

logger = logging.getLogger("llamonitor.storage.sqlite")

DEFAULT_TIMEOUT_SECONDS = 30.0
_TS = "timestamp"
_MISSING = ("no such table", "no such column", "has no column named")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def database_path(dsn: str) -> Path:
    """The file of ``sqlite:///path`` (relative) or ``sqlite:////path`` (absolute).

    Raises:
        ConfigurationError: not that form, or an in-memory database.
    """
    prefix = "sqlite:///"
    rest = dsn[len(prefix) :] if dsn.lower().startswith(prefix) else ""
    if "?" in rest or "#" in rest:
        rest = ""
    if not rest or rest == ":memory:" or rest.startswith("file:"):
        raise ConfigurationError(
            "storage.connection_string",
            f"{_sql.mask_dsn(dsn)!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (an in-memory database would vanish with the "
            "writer's connection, and nothing else could read it)",
        )
    return Path(rest)


class _Target:
    def __init__(self, config: StorageConfig) -> None:
        dsn = _sql.connection_string(config, "sqlite")
        self.sqlite3 = _sql.require_driver("sqlite3", "sqlite", None)
        self.path = database_path(dsn)
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        if config.schema_name:
            raise ConfigurationError(
                "storage.schema_name", "SQLite has no schemas; leave schema_name unset"
            )
        options = dict(config.options)
        try:
            self.timeout = float(options.pop("timeout", DEFAULT_TIMEOUT_SECONDS))
        except (TypeError, ValueError):
            raise ConfigurationError("storage.options", "timeout: a number of seconds") from None
        if options:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(sorted(options))} for the sqlite backend; "
                "it takes 'timeout'",
            )
        self.qualified = _q(self.table)
        self.label = f"table {self.table} in {self.path}"
        self.secrets = Secrets(dsn)

    def kind(self, exc: BaseException) -> str:
        sqlite3 = self.sqlite3
        if isinstance(exc, sqlite3.OperationalError) and any(m in str(exc) for m in _MISSING):
            return "missing"
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)):
            return "content"
        return "other"

    def error(self, doing: str, exc: BaseException) -> StoreError:
        code = getattr(exc, "sqlite_errorname", None)
        busy = isinstance(exc, self.sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        )
        return StoreError(
            self.secrets.scrub(f"sqlite {self.label}: {doing}: {describe(exc)}"),
            sqlstate=str(code) if code else None,
            transient=busy or self.kind(exc) == "missing",
        )


class SQLiteBackend(StorageBackend):
    """Writes spans to a table (default ``metric_events``) of a SQLite file.

    The methods are ``async def`` for the interface but do blocking work: the
    transport runs them on the sink's own thread.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = _Target(self.config)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._ready = False
        self._inserts: dict[tuple[str, ...], str] = {}
        self._columns: set[str] = set()  # the table's, as the last setup saw them

    def __repr__(self) -> str:
        return f"SQLiteBackend({self._t.label})"

    def _connect(self) -> Any:
        if self._conn is None:
            self._t.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._t.sqlite3.connect(
                str(self._t.path),
                timeout=self._t.timeout,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _guarded(self, doing: str, fn: Any, *args: Any) -> None:
        error: StoreError | None = None
        with self._lock:
            try:
                fn(*args)
                return
            except (ConfigurationError, RowsRejected, StoreError):
                raise
            except Exception as exc:
                if self._t.kind(exc) == "missing":
                    self._ready = False
                error = self._t.error(doing, exc)
        raise error

    # -- setup -------------------------------------------------------------

    async def initialize(self) -> None:
        """Open the file (WAL), create the table, indexes and meta row, or migrate."""
        self._guarded("initialize", self._setup)

    def _setup(self) -> None:
        t = self._t
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._columns = _sqlite_ddl.setup(conn, t.table, t.label)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._ready = True

    def _add_columns(self, fields: list[pa.Field]) -> None:
        """Add a metric group's columns the table does not have yet."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            _sqlite_ddl.add_columns(conn, self._t.table, fields)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._columns.update(f.name for f in fields)

    # -- writing -----------------------------------------------------------

    async def write_table(self, table: pa.Table) -> None:
        """Write a batch; rows refused for their content raise
        :class:`RowsRejected` after the others are written."""
        if table.num_rows == 0:
            return
        table = _sql_write.conform(table)
        error: StoreError | None = None
        try:
            if not self._ready:
                self._guarded("initialize", self._setup)
            missing = _sql_ddl.missing_columns(table, self._columns)
            if missing:
                self._guarded("initialize", self._add_columns, missing)
            await _sql_write.write_isolating(table, self._attempt)
            return
        except (ConfigurationError, RowsRejected, StoreError):
            raise
        except Exception as exc:
            if self._t.kind(exc) == "missing":
                self._ready = False
            error = self._t.error("write", exc)
        raise error

    async def _attempt(self, part: pa.Table) -> None:
        content: ContentError | None = None
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                names, rows = _records(part)
                conn.executemany(self._insert(names), rows)
                conn.execute("COMMIT")
                return
            except Exception as exc:
                _rollback(conn)
                if self._t.kind(exc) != "content":
                    raise
                content = ContentError(self._t.secrets.scrub(describe(exc)))
        raise content

    def _insert(self, names: tuple[str, ...]) -> str:
        sql = self._inserts.get(names)
        if sql is None:
            sql = self._inserts[names] = (
                f"INSERT INTO {self._t.qualified} ({', '.join(_q(n) for n in names)}) "
                f"VALUES ({', '.join('?' for _ in names)}) ON CONFLICT(event_id) DO NOTHING"
            )
        return sql

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))

    async def health_check(self) -> bool:
        try:
            with self._lock:
                self._connect().execute("SELECT 1").fetchone()
            return True
        except Exception:
            return False

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


def _rollback(conn: Any) -> None:
    if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
        conn.execute("ROLLBACK")


def _records(table: pa.Table) -> tuple[tuple[str, ...], Any]:
    """The columns to insert (see :func:`~llamonitor.storage._sql_write.present_fields`)
    and the rows."""
    fields = _sql_write.present_fields(table)
    columns = []
    for f in fields:
        col = table.column(f.name)
        if f.name == _TS:
            # UTC text, "YYYY-MM-DD HH:MM:SS.ffffff" (zero-padded, so it sorts by time)
            col = col.cast(pa.timestamp("us")).cast(pa.string())
        columns.append(col.to_pylist())
    return tuple(f.name for f in fields), zip(*columns, strict=True)


# -- query side ----------------------------------------------------------------


def _decode(field: pa.Field, values: list[Any]) -> pa.Array:
    if pa.types.is_timestamp(field.type):
        return pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(field.type)
    if pa.types.is_boolean(field.type):
        return pa.array(values, pa.int64()).cast(pa.bool_())
    return pa.array(values, type=field.type)


def _bind_time(v: datetime) -> str:
    # Formatted by hand: strftime("%Y") does not pad years before 1000.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


_PUSHDOWN = _sql_query.Pushdown(
    quote=_q, placeholder=lambda _i: "?", timestamp=_bind_time, native_glob=True
)


def query(config: StorageConfig) -> DuckDBQuery:
    """The query side of a SQLite span table (read-only; a missing file or
    table is an empty store). Filters go into SQLite's ``WHERE`` (GLOB for
    operation patterns) and rows stream to DuckDB in chunks.

    Raises:
        ConfigurationError: a bad connection string.
    """
    t = _Target(config)

    def source(filters: Filters) -> pa.RecordBatchReader | None:
        if not t.path.is_file():
            return None
        conn: Any = None
        error: StoreError | None = None
        try:
            uri = f"file:{quote(str(t.path.resolve()))}?mode=ro"
            conn = t.sqlite3.connect(uri, uri=True, timeout=t.timeout, check_same_thread=False)
            present = [r[1] for r in conn.execute(f"PRAGMA table_info({t.qualified})")]
            if not present:
                conn.close()
                return None
            try:
                found = conn.execute(
                    f"SELECT extensions FROM {_q(_sql_ddl.META_TABLE)} WHERE table_name = ?",
                    (t.table,),
                ).fetchall()
            except t.sqlite3.OperationalError:  # no meta table, or an older llamonitor's
                found = []
            recorded = _sql_ddl.recorded_extensions(found[0][0] if found else None)
            extra = _sql_query.extension_fields(recorded, present)
            sql, params = _PUSHDOWN.select(t.qualified, present, filters, extra)
            cursor = conn.execute(sql, params)
            first = cursor.fetchmany(_sql_query.CHUNK_ROWS)
        except Exception as exc:
            error = t.error("query", exc)
        if error is not None:
            if conn is not None:
                conn.close()
            raise error
        return _sql_query.stream(
            first,
            lambda: cursor.fetchmany(_sql_query.CHUNK_ROWS),
            conn.close,
            _decode,
            t.secrets.scrub,
            _sql_query.read_schema(extra),
        )

    return DuckDBQuery(source)
