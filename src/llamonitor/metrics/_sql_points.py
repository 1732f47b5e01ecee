"""Metric points in the SQL stores: the ``metric_points`` table.

The table is derived from :data:`~llamonitor.metrics._schema.METRIC_SCHEMA`
with the span table's dialect type maps (``storage._sql_types``) and column
definitions (``storage._sql_ddl.column_defs``); connection settings, driver
checks, secrets scrubbing and error classification are the span stores'
(``Target`` of each dialect, ``sqlite.database_path``). It is created on first
write (``CREATE TABLE IF NOT EXISTS`` with an index on ``(name, timestamp)``).

Each write is one transaction (PostgreSQL: ``COPY``; MySQL: a multi-row
``INSERT``; SQLite: ``executemany``). The table has no primary key: a batch
is all or nothing, and the worker retries only a batch that failed, so a
point is duplicated only if a commit succeeded and its acknowledgement was
lost. NaN and infinite values are stored as NULL in MySQL (which has no such
doubles) and SQLite (which turns NaN into NULL itself); PostgreSQL keeps them.
Timestamps: PostgreSQL ``timestamptz``, MySQL ``DATETIME(6)`` in UTC, SQLite
UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (sorts in time order).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.metrics._schema import METRIC_SCHEMA, empty_points
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_ddl, _sql_types
from llamonitor.storage._sql import StoreError

POINTS_TABLE = "metric_points"
INDEX_COLUMNS = ("name", "timestamp")
CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 60.0

_NAMES = METRIC_SCHEMA.names
_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()


def _config(storage: StorageConfig) -> StorageConfig:
    return storage.model_copy(update={"table_name": POINTS_TABLE})


def _mysql_type(field: pa.Field) -> str:
    if pa.types.is_string(field.type) and field.name in INDEX_COLUMNS:
        return "VARCHAR(255)"  # indexed text: within InnoDB's key limit
    return _sql_types.mysql_type(field)


def _finite_or_none(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_float64(f.type):
            col = table.column(i)
            finite = pc.is_finite(col)
            if not pc.all(pc.or_kleene(finite, pc.is_null(col))).as_py():
                table = table.set_column(i, f, pc.if_else(finite, col, None))
    return table


def _once(key: tuple[str, str]) -> bool:
    with _created_lock:
        return key not in _created


def _done(key: tuple[str, str]) -> None:
    with _created_lock:
        _created.add(key)


def _forget(key: tuple[str, str]) -> None:
    with _created_lock:
        _created.discard(key)


# -- writes ---------------------------------------------------------------------


def write(storage: StorageConfig, kind: str, points: pa.Table) -> None:
    """Insert ``points`` (conformed) in one transaction.

    Raises:
        StoreError: the database failed (``transient`` says whether to retry).
        ConfigurationError: a bad connection string or a missing driver.
    """
    if kind == "sqlite":
        _write_sqlite(storage, points)
    elif kind == "postgres":
        _write_postgres(storage, points)
    else:
        _write_mysql(storage, points)


def _sqlite_rows(points: pa.Table) -> list[tuple[Any, ...]]:
    ts = pc.strftime(points.column("timestamp"), format="%Y-%m-%d %H:%M:%S", locale="C")
    table = _finite_or_none(points).set_column(0, "timestamp", ts)
    columns = [table.column(n).to_pylist() for n in _NAMES]
    return list(zip(*columns, strict=True))


def _sqlite_target(storage: StorageConfig) -> Any:
    from llamonitor.storage import sqlite as sqlite_store

    return sqlite_store._Target(_config(storage))


def _sqlite_connect(t: Any) -> Any:
    t.path.parent.mkdir(parents=True, exist_ok=True)
    conn = t.sqlite3.connect(str(t.path), timeout=t.timeout, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _sqlite_create(conn: Any) -> None:
    q = _sqlite_q
    cols = _sql_ddl.column_defs(_sql_types.sqlite_type, q, METRIC_SCHEMA)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {q(POINTS_TABLE)} ({', '.join(cols)})")
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {q(POINTS_TABLE + '_name_ts')} ON {q(POINTS_TABLE)} "
        f"({', '.join(q(c) for c in INDEX_COLUMNS)})"
    )


def _sqlite_q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_sqlite(storage: StorageConfig, points: pa.Table) -> None:
    t = _sqlite_target(storage)
    rows = _sqlite_rows(points)
    q = _sqlite_q
    sql = (
        f"INSERT INTO {q(POINTS_TABLE)} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('?' for _ in _NAMES)})"
    )
    try:
        conn = _sqlite_connect(t)
    except Exception as exc:
        raise t.error("connect", exc) from None
    try:
        _sqlite_create(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except StoreError:
        raise
    except Exception as exc:
        raise t.error("write metric points", exc) from None
    finally:
        conn.close()


def _postgres_target(storage: StorageConfig) -> Any:
    from llamonitor.storage._postgres_target import Target

    return Target(_config(storage))


def _write_postgres(storage: StorageConfig, points: pa.Table) -> None:
    from llamonitor.storage._postgres_query import LoopThread

    t = _postgres_target(storage)
    records = list(zip(*(points.column(n).to_pylist() for n in _NAMES), strict=True))
    LoopThread.run(_postgres_write(t, records))


def _pg_create_sql(t: Any) -> list[str]:
    from llamonitor.storage._postgres_target import q

    cols = _sql_ddl.column_defs(_sql_types.postgres_type, q, METRIC_SCHEMA)
    out = []
    if t.schema:
        out.append(f"CREATE SCHEMA IF NOT EXISTS {q(t.schema)}")
    out.append(f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)})")
    out.append(
        f"CREATE INDEX IF NOT EXISTS {q(POINTS_TABLE + '_name_ts')} ON {t.qualified} "
        f"({', '.join(q(c) for c in INDEX_COLUMNS)})"
    )
    return out


async def _postgres_write(t: Any, records: list[tuple[Any, ...]]) -> None:
    conn: Any = None
    try:
        conn = await t.asyncpg.connect(
            t.dsn, **{"timeout": CONNECT_TIMEOUT_SECONDS, **t.connect_kwargs}
        )
        key = ("postgres", t.secrets.masked + t.qualified)
        if _once(key):
            for statement in _pg_create_sql(t):
                try:
                    await conn.execute(statement, timeout=COMMAND_TIMEOUT_SECONDS)
                except t.asyncpg.UniqueViolationError:
                    pass  # two writers created it at once
            _done(key)
        async with conn.transaction():
            await conn.copy_records_to_table(
                POINTS_TABLE,
                records=records,
                columns=list(_NAMES),
                schema_name=t.schema,
                timeout=COMMAND_TIMEOUT_SECONDS,
            )
    except Exception as exc:
        if t.kind(exc) == "missing":
            _forget(key)
        raise t.error("write metric points", exc) from None
    finally:
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()


def _mysql_target(storage: StorageConfig) -> Any:
    from llamonitor.storage._mysql_target import Target

    return Target(
        _config(storage),
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
    )


def _mysql_connect(t: Any, **extra: Any) -> Any:
    kwargs = {**t.connect_kwargs, "database": t.connect_kwargs["db"]}
    del kwargs["db"]
    if t.command_timeout is not None:
        kwargs["read_timeout"] = kwargs["write_timeout"] = t.command_timeout
    return t.pymysql.connect(**kwargs, **extra)


def _write_mysql(storage: StorageConfig, points: pa.Table) -> None:
    from llamonitor.storage._mysql_target import q

    t = _mysql_target(storage)
    naive = pc.cast(points.column("timestamp"), pa.timestamp("us"))
    table = _finite_or_none(points).set_column(0, "timestamp", naive)
    rows = list(zip(*(table.column(n).to_pylist() for n in _NAMES), strict=True))
    cols = _sql_ddl.column_defs(_mysql_type, q, METRIC_SCHEMA)
    index = f"INDEX {q(POINTS_TABLE + '_name_ts')} ({', '.join(q(c) for c in INDEX_COLUMNS)})"
    insert = (
        f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('%s' for _ in _NAMES)})"
    )
    conn: Any = None
    try:
        conn = _mysql_connect(t, autocommit=False)
        with conn.cursor() as cur:
            key = ("mysql", t.secrets.masked + t.qualified)
            if _once(key):
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)}, {index}) "
                    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
                _done(key)
            cur.executemany(insert, rows)  # pymysql sends one multi-row INSERT
        conn.commit()
    except Exception as exc:
        if conn is not None:
            try:
                conn.rollback()
            except Exception:
                pass
        if t.kind(exc) == "missing":
            _forget(("mysql", t.secrets.masked + t.qualified))
        raise t.error("write metric points", exc) from None
    finally:
        if conn is not None:
            conn.close()


# -- reads ----------------------------------------------------------------------


def _where(
    placeholder: Any,
    quote: Any,
    name: str | None,
    start: datetime | None,
    end: datetime | None,
    resolution: int | None,
    ts: Any,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("name", "=", name),
        ("timestamp", ">=", None if start is None else ts(_utc(start))),
        ("timestamp", "<", None if end is None else ts(_utc(end))),
        ("resolution_seconds", "=", resolution),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{quote(column)} {op} {placeholder(len(params))}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _table(rows: list[Any]) -> pa.Table:
    columns: list[list[Any]] = (
        [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in _NAMES]
    )
    arrays = []
    for f, values in zip(METRIC_SCHEMA, columns, strict=True):
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(list(values), pa.timestamp("us")).cast(f.type))
        else:
            arrays.append(pa.array(list(values), f.type))
    return pa.Table.from_arrays(arrays, schema=METRIC_SCHEMA)


def fetch(
    storage: StorageConfig,
    kind: str,
    name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: int | None = None,
) -> pa.Table:
    """The points matching the filters (a table of :data:`METRIC_SCHEMA`;
    empty when the table does not exist yet).

    Raises:
        StoreError: the database failed.
    """
    if kind == "sqlite":
        return _fetch_sqlite(storage, name, start, end, resolution)
    if kind == "postgres":
        from llamonitor.storage._postgres_query import LoopThread

        t = _postgres_target(storage)
        return LoopThread.run(_fetch_postgres(t, name, start, end, resolution))
    return _fetch_mysql(storage, name, start, end, resolution)


def _fetch_sqlite(
    storage: StorageConfig,
    name: str | None,
    start: datetime | None,
    end: datetime | None,
    resolution: int | None,
) -> pa.Table:
    t = _sqlite_target(storage)
    if not t.path.exists():
        return empty_points()
    where, params = _where(
        lambda _i: "?",
        _sqlite_q,
        name,
        start,
        end,
        resolution,
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    q = _sqlite_q
    try:
        conn = t.sqlite3.connect(str(t.path), timeout=t.timeout)
        try:
            rows = conn.execute(
                f"SELECT {', '.join(q(n) for n in _NAMES)} FROM {q(POINTS_TABLE)} {where}", params
            ).fetchall()
        finally:
            conn.close()
    except t.sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty_points()
        raise t.error("read metric points", exc) from None
    return _fix_sqlite(rows)


def _fix_sqlite(rows: list[Any]) -> pa.Table:
    fixed = []
    for r in rows:
        row = list(r)
        row[0] = datetime.fromisoformat(row[0]).replace(tzinfo=timezone.utc)
        fixed.append(tuple(row))
    return _table(fixed)


async def _fetch_postgres(
    t: Any,
    name: str | None,
    start: datetime | None,
    end: datetime | None,
    resolution: int | None,
) -> pa.Table:
    from llamonitor.storage._postgres_target import q

    where, params = _where(lambda i: f"${i}", q, name, start, end, resolution, lambda d: d)
    conn: Any = None
    try:
        conn = await t.asyncpg.connect(
            t.dsn, **{"timeout": CONNECT_TIMEOUT_SECONDS, **t.connect_kwargs}
        )
        exists = await conn.fetchval("SELECT to_regclass($1)", t.qualified)
        if exists is None:
            return empty_points()
        rows = await conn.fetch(
            f"SELECT {', '.join(q(n) for n in _NAMES)} FROM {t.qualified} {where}", *params
        )
    except Exception as exc:
        raise t.error("read metric points", exc) from None
    finally:
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
    return _table([tuple(_utc(r[0]) if i == 0 else v for i, v in enumerate(r)) for r in rows])


def _fetch_mysql(
    storage: StorageConfig,
    name: str | None,
    start: datetime | None,
    end: datetime | None,
    resolution: int | None,
) -> pa.Table:
    from llamonitor.storage._mysql_target import q

    t = _mysql_target(storage)
    where, params = _where(
        lambda _i: "%s", q, name, start, end, resolution, lambda d: d.replace(tzinfo=None)
    )
    conn: Any = None
    try:
        conn = _mysql_connect(t, autocommit=True)
        with conn.cursor() as cur:
            try:
                cur.execute(
                    f"SELECT {', '.join(q(n) for n in _NAMES)} FROM {t.qualified} {where}", params
                )
            except t.pymysql.err.ProgrammingError as exc:
                if exc.args and exc.args[0] == 1146:  # no such table
                    return empty_points()
                raise
            rows = cur.fetchall()
    except Exception as exc:
        raise t.error("read metric points", exc) from None
    finally:
        if conn is not None:
            conn.close()
    return _table(
        [
            tuple(r[0].replace(tzinfo=timezone.utc) if i == 0 else v for i, v in enumerate(r))
            for r in rows
        ]
    )
