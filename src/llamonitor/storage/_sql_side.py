"""A second table beside the spans in every SQL store: its definition, its
connections, its creation and migration, and its reads.

``metric_points`` (``metrics._sql_points``) and ``llamonitor_scores``
(``_sql_scores``) are both a :class:`SideTable`: an Arrow schema made into a
table with the span table's dialect type maps (``_sql_types``) and column
definitions (``_sql_ddl.column_defs``), reached with the span stores'
connection settings, driver checks, secrets scrubbing and error
classification (the ``Target`` of each dialect). What differs (the insert:
an upsert, a ``COPY``) stays in their modules.

Creation and migration, at the first write of a process to a database: the
table is created if missing (with its primary key and indexes), and the
columns of the schema it lacks (a table of an older llamonitor) are added,
nullable. Timestamps: PostgreSQL ``timestamptz``, MySQL ``DATETIME(6)`` in
UTC, SQLite UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (sorts in time order).
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa

from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_ddl, _sql_types
from llamonitor.storage._sql import describe

CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 60.0
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"
"""The text of a timestamp in SQLite (and of a bound in its ``WHERE``)."""

T = TypeVar("T")

Clause = tuple[str, str, Any]
"""``(column, operator, value)`` of a ``WHERE`` (``None`` values are left out)."""


@dataclass(frozen=True)
class SideTable:
    """One table beside the spans.

    Args:
        name: the table's name (in ``storage.schema_name`` if set).
        schema: its columns.
        what: what its rows are, for messages ("metric points", "scores").
        indexes: ``(suffix, columns)``: an index ``<name>_<suffix>`` each.
        varchar: text columns MySQL keys (``VARCHAR(255)``, not ``TEXT``).
        primary_key: the key column, if any.
    """

    name: str
    schema: pa.Schema
    what: str
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    varchar: frozenset[str] = frozenset()
    primary_key: str | None = None
    created: set[str] = field(default_factory=set, compare=False)
    """Databases created or migrated by this process (``dialect + masked DSN + table``)."""
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)

    def config(self, storage: StorageConfig) -> StorageConfig:
        return storage.model_copy(update={"table_name": self.name})

    def mysql_type(self, f: pa.Field) -> str:
        if pa.types.is_string(f.type) and f.name in self.varchar:
            return "VARCHAR(255)"  # a key: within InnoDB's limit
        return _sql_types.mysql_type(f)

    def first(self, key: str) -> bool:
        """Whether this process has not created/migrated ``key`` yet."""
        with self.lock:
            return key not in self.created

    def mark(self, key: str, done: bool = True) -> None:
        with self.lock:
            (self.created.add if done else self.created.discard)(key)

    def refused(self, t: Any, exc: BaseException, doing: str, error: type[Exception]) -> Exception:
        """``error`` (the caller's ``...Refused``) for the rows' content, else ``StoreError``."""
        if t.kind(exc) == "content":
            return error(t.secrets.scrub(f"{t.label}: refused the {self.what}: {describe(exc)}"))
        failed: Exception = t.error(doing, exc)
        return failed

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """The result of ``coro``, which must never suspend (an ``async`` function
    that only calls blocking code: SQLite and PyMySQL attempts given to
    ``_sql_write.write_isolating``); runs on the caller's thread, also one
    that runs an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("run_sync: the coroutine suspended")


def select_sql(spec: SideTable, quote: Any, qualified: str, where: str) -> str:
    return f"SELECT {', '.join(quote(n) for n in spec.names)} FROM {qualified} {where}"


def where_sql(
    clauses: Sequence[Clause], placeholder: Any, quote: Any, ts: Any
) -> tuple[str, list[Any]]:
    """``WHERE ...`` and its parameters; datetimes become UTC and then ``ts(value)``."""
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in clauses:
        if value is None:
            continue
        if isinstance(value, datetime):
            value = ts(utc(value))
        params.append(value)
        parts.append(f"{quote(column)} {op} {placeholder(len(params))}")
    return ("WHERE " + " AND ".join(parts)) if parts else "", params


def utc(value: datetime) -> datetime:
    """``value`` in UTC (naive: taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def to_table(spec: SideTable, rows: Sequence[Sequence[Any]], fix_ts: Any) -> pa.Table:
    """Rows in ``spec.schema``'s column order as a table; ``fix_ts`` turns a
    timestamp as the driver returns it into an aware UTC datetime."""
    columns: list[list[Any]] = (
        [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in spec.names]
    )
    arrays = []
    for f, values in zip(spec.schema, columns, strict=True):
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array([None if v is None else fix_ts(v) for v in values], f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=spec.schema)


# -- SQLite ---------------------------------------------------------------------


def sq(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_target(spec: SideTable, storage: StorageConfig) -> Any:
    from llamonitor.storage import sqlite as sqlite_store

    return sqlite_store._Target(spec.config(storage))


def sqlite_connect(t: Any) -> Any:
    """A connection in autocommit mode (the caller says ``BEGIN``), WAL journal."""
    t.path.parent.mkdir(parents=True, exist_ok=True)
    conn = t.sqlite3.connect(str(t.path), timeout=t.timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _indexes(spec: SideTable, quote: Any, qualified: str) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS {quote(spec.name + '_' + suffix)} ON {qualified} "
        f"({', '.join(quote(c) for c in cols)})"
        for suffix, cols in spec.indexes
    ]


def _key(spec: SideTable, quote: Any) -> str:
    return f", PRIMARY KEY ({quote(spec.primary_key)})" if spec.primary_key else ""


def sqlite_create(spec: SideTable, conn: Any) -> None:
    """Create or migrate the table (on every write: SQLite's checks are local)."""
    cols = _sql_ddl.column_defs(_sql_types.sqlite_type, sq, spec.schema)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {sq(spec.name)} ({', '.join(cols)}{_key(spec, sq)})")
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({sq(spec.name)})")}
    for f in spec.schema:
        if f.name not in have:
            conn.execute(
                f"ALTER TABLE {sq(spec.name)} ADD COLUMN {sq(f.name)} {_sql_types.sqlite_type(f)}"
            )
    for statement in _indexes(spec, sq, sq(spec.name)):
        conn.execute(statement)


def sqlite_fetch(spec: SideTable, storage: StorageConfig, clauses: Sequence[Clause]) -> pa.Table:
    t = sqlite_target(spec, storage)
    if not t.path.exists():
        return spec.empty()
    where, params = where_sql(clauses, lambda _i: "?", sq, lambda d: d.strftime(SQLITE_TS))
    try:
        conn = t.sqlite3.connect(str(t.path), timeout=t.timeout)
        try:
            rows = conn.execute(select_sql(spec, sq, sq(spec.name), where), params).fetchall()
        finally:
            conn.close()
    except t.sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return spec.empty()
        raise t.error(f"read {spec.what}", exc) from None
    return to_table(spec, rows, lambda v: datetime.fromisoformat(v).replace(tzinfo=timezone.utc))


# -- PostgreSQL -----------------------------------------------------------------


def postgres_target(spec: SideTable, storage: StorageConfig) -> Any:
    from llamonitor.storage._postgres_target import Target

    return Target(spec.config(storage))


async def pg_connect(t: Any) -> Any:
    return await t.asyncpg.connect(
        t.dsn, **{"timeout": CONNECT_TIMEOUT_SECONDS, **t.connect_kwargs}
    )


async def pg_close(conn: Any) -> None:
    if conn is not None:
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()


async def pg_create(spec: SideTable, t: Any, conn: Any) -> None:
    """Create or migrate the table (two writers at once: the loser's error is ignored)."""
    from llamonitor.storage._postgres_target import q

    cols = _sql_ddl.column_defs(_sql_types.postgres_type, q, spec.schema)
    statements = [f"CREATE SCHEMA IF NOT EXISTS {q(t.schema)}"] if t.schema else []
    statements.append(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)}{_key(spec, q)})"
    )
    races = (t.asyncpg.UniqueViolationError, t.asyncpg.DuplicateTableError)
    for statement in statements:
        try:
            await conn.execute(statement, timeout=COMMAND_TIMEOUT_SECONDS)
        except races:
            pass
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND table_schema = coalesce($2, current_schema())",
        spec.name,
        t.schema,
    )
    have = {r[0] for r in rows}
    for f in spec.schema:
        if f.name not in have:
            await conn.execute(
                f"ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS {q(f.name)} "
                f"{_sql_types.postgres_type(f)}"
            )
    for statement in _indexes(spec, q, t.qualified):
        try:
            await conn.execute(statement, timeout=COMMAND_TIMEOUT_SECONDS)
        except races:
            pass


def pg_fetch(spec: SideTable, storage: StorageConfig, clauses: Sequence[Clause]) -> pa.Table:
    from llamonitor.storage._postgres_query import LoopThread

    return LoopThread.run(_pg_fetch(spec, postgres_target(spec, storage), clauses))


async def _pg_fetch(spec: SideTable, t: Any, clauses: Sequence[Clause]) -> pa.Table:
    from llamonitor.storage._postgres_target import q

    where, params = where_sql(clauses, lambda i: f"${i}", q, lambda d: d)
    conn: Any = None
    try:
        conn = await pg_connect(t)
        if await conn.fetchval("SELECT to_regclass($1)", t.qualified) is None:
            return spec.empty()
        rows = await conn.fetch(select_sql(spec, q, t.qualified, where), *params)
    except Exception as exc:
        raise t.error(f"read {spec.what}", exc) from None
    finally:
        await pg_close(conn)
    return to_table(spec, [tuple(r) for r in rows], utc)


# -- MySQL / MariaDB ------------------------------------------------------------


def mysql_target(spec: SideTable, storage: StorageConfig) -> Any:
    from llamonitor.storage._mysql_target import Target

    return Target(
        spec.config(storage),
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
    )


def mysql_connect(t: Any, **extra: Any) -> Any:
    kwargs = {**t.connect_kwargs, "database": t.connect_kwargs["db"]}
    del kwargs["db"]
    if t.command_timeout is not None:
        kwargs["read_timeout"] = kwargs["write_timeout"] = t.command_timeout
    return t.pymysql.connect(**kwargs, **extra)


def mysql_rollback(conn: Any) -> None:
    if conn is not None:
        try:
            conn.rollback()
        except Exception:
            pass


def mysql_create(spec: SideTable, t: Any, cur: Any) -> None:
    """Create or migrate the table."""
    from llamonitor.storage._mysql_target import q

    cols = _sql_ddl.column_defs(spec.mysql_type, q, spec.schema)
    index = "".join(
        f", INDEX {q(spec.name + '_' + s)} ({', '.join(q(c) for c in cs)})"
        for s, cs in spec.indexes
    )
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)}{_key(spec, q)}{index}) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = coalesce(%s, DATABASE())",
        (spec.name, t.schema or None),
    )
    have = {r[0] for r in cur.fetchall()}
    for f in spec.schema:
        if f.name not in have:
            cur.execute(f"ALTER TABLE {t.qualified} ADD COLUMN {q(f.name)} {spec.mysql_type(f)}")


def mysql_fetch(spec: SideTable, storage: StorageConfig, clauses: Sequence[Clause]) -> pa.Table:
    from llamonitor.storage._mysql_target import q

    t = mysql_target(spec, storage)
    where, params = where_sql(clauses, lambda _i: "%s", q, lambda d: d.replace(tzinfo=None))
    conn: Any = None
    try:
        conn = mysql_connect(t, autocommit=True)
        with conn.cursor() as cur:
            try:
                cur.execute(select_sql(spec, q, t.qualified, where), params)
            except t.pymysql.err.ProgrammingError as exc:
                if exc.args and exc.args[0] == 1146:  # no such table
                    return spec.empty()
                raise
            rows = cur.fetchall()
    except Exception as exc:
        raise t.error(f"read {spec.what}", exc) from None
    finally:
        if conn is not None:
            conn.close()
    return to_table(spec, list(rows), lambda v: v.replace(tzinfo=timezone.utc))


def fetch(
    spec: SideTable, storage: StorageConfig, kind: str, clauses: Sequence[Clause]
) -> pa.Table:
    """The rows matching ``clauses`` (an empty table when there is no table yet).

    Raises:
        StoreError: the database failed.
    """
    if kind == "sqlite":
        return sqlite_fetch(spec, storage, clauses)
    if kind == "postgres":
        return pg_fetch(spec, storage, clauses)
    return mysql_fetch(spec, storage, clauses)
