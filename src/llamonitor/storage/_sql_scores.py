"""Scores in the SQL stores: the ``llamonitor_scores`` table.

The table is derived from :data:`~llamonitor.schema._scores.SCORE_SCHEMA`
with the span table's dialect type maps (``_sql_types``) and column
definitions (``_sql_ddl.column_defs``); connection settings, driver checks,
secrets scrubbing and error classification are the span stores' (the
``Target`` of each dialect), as for ``metric_points``.

``score_id`` is the primary key and every write an upsert, so writing a score
again (an evaluator re-run, a batch replayed from the spool) replaces it: the
row with the later ``timestamp`` stays. Migration, at the first write of a
process: the table is created if missing, and the columns of
``SCORE_SCHEMA`` it lacks (a table of an older llamonitor) are added,
nullable; each row says the ``schema_version`` it was written with.
Timestamps: PostgreSQL ``timestamptz``, MySQL ``DATETIME(6)`` in UTC, SQLite
UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._scores import SCORE_SCHEMA, empty_scores
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_ddl, _sql_types
from llamonitor.storage._sql import StoreError, describe

SCORES_TABLE = "llamonitor_scores"
CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 60.0
_NAMES = SCORE_SCHEMA.names
_UPDATED = [n for n in _NAMES if n != "score_id"]
_INDEXES = (("trace", ("trace_id",)), ("name_ts", ("name", "timestamp")))
_VARCHAR = frozenset({"score_id", "name", "trace_id", "span_id", "session_id", "timestamp"})
_migrated: set[str] = set()
_lock = threading.Lock()


class ScoresRefused(ValueError):
    """The database refused the scores for their content (not worth retrying)."""


def _config(storage: StorageConfig) -> StorageConfig:
    return storage.model_copy(update={"table_name": SCORES_TABLE})


def _mysql_type(field: pa.Field) -> str:
    if pa.types.is_string(field.type) and field.name in _VARCHAR:
        return "VARCHAR(255)"
    return _sql_types.mysql_type(field)


def _fail(t: Any, what: str, exc: BaseException) -> Exception:
    if t.kind(exc) == "content":
        return ScoresRefused(t.secrets.scrub(f"{t.label}: refused the scores: {describe(exc)}"))
    error: Exception = t.error(what, exc)
    return error


def _first(key: str) -> bool:
    with _lock:
        return key not in _migrated


def _mark(key: str, done: bool = True) -> None:
    with _lock:
        (_migrated.add if done else _migrated.discard)(key)


def _rows(points: pa.Table, ts: Any) -> list[tuple[Any, ...]]:
    table = points.set_column(1, "timestamp", ts(points.column("timestamp")))
    return list(zip(*(table.column(n).to_pylist() for n in _NAMES), strict=True))


def _indexes(quote: Any, table: str, qualified: str) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS {quote(table + '_' + suffix)} ON {qualified} "
        f"({', '.join(quote(c) for c in cols)})"
        for suffix, cols in _INDEXES
    ]


def write(storage: StorageConfig, kind: str, scores: pa.Table) -> None:
    """Upsert ``scores`` (conformed) in one transaction.

    Raises:
        StoreError: the database failed (``transient`` says whether to retry).
        ScoresRefused: the database refused the rows' content.
        ConfigurationError: a bad connection string or a missing driver.
    """
    if kind == "sqlite":
        _write_sqlite(storage, scores)
    elif kind == "postgres":
        from llamonitor.storage._postgres_query import LoopThread

        t = _postgres_target(storage)
        rows = _rows(scores, lambda c: c)
        LoopThread.run(_postgres_write(t, rows))
    else:
        _write_mysql(storage, scores)


# -- SQLite ---------------------------------------------------------------------


def _sq(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_target(storage: StorageConfig) -> Any:
    from llamonitor.storage import sqlite as sqlite_store

    return sqlite_store._Target(_config(storage))


def _sqlite_migrate(conn: Any) -> None:
    cols = _sql_ddl.column_defs(_sql_types.sqlite_type, _sq, SCORE_SCHEMA)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_sq(SCORES_TABLE)} ({', '.join(cols)}, "
        f"PRIMARY KEY ({_sq('score_id')}))"
    )
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({_sq(SCORES_TABLE)})")}
    for f in SCORE_SCHEMA:
        if f.name not in have:
            conn.execute(
                f"ALTER TABLE {_sq(SCORES_TABLE)} ADD COLUMN {_sq(f.name)} "
                f"{_sql_types.sqlite_type(f)}"
            )
    for statement in _indexes(_sq, SCORES_TABLE, _sq(SCORES_TABLE)):
        conn.execute(statement)


def _write_sqlite(storage: StorageConfig, scores: pa.Table) -> None:
    t = _sqlite_target(storage)
    fmt = "%Y-%m-%d %H:%M:%S"
    rows = _rows(scores, lambda c: pc.strftime(c, format=fmt, locale="C"))
    q = _sq
    sql = (
        f"INSERT INTO {q(SCORES_TABLE)} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('?' for _ in _NAMES)}) ON CONFLICT({q('score_id')}) DO UPDATE SET "
        + ", ".join(f"{q(n)} = excluded.{q(n)}" for n in _UPDATED)
        + f" WHERE excluded.{q('timestamp')} >= {q(SCORES_TABLE)}.{q('timestamp')}"
    )
    try:
        t.path.parent.mkdir(parents=True, exist_ok=True)
        conn = t.sqlite3.connect(str(t.path), timeout=t.timeout, isolation_level=None)
    except Exception as exc:
        raise t.error("connect", exc) from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            _sqlite_migrate(conn)
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except StoreError:
        raise
    except Exception as exc:
        raise _fail(t, "write scores", exc) from None
    finally:
        conn.close()


# -- PostgreSQL -----------------------------------------------------------------


def _postgres_target(storage: StorageConfig) -> Any:
    from llamonitor.storage._postgres_target import Target

    return Target(_config(storage))


async def _pg_connect(t: Any) -> Any:
    return await t.asyncpg.connect(
        t.dsn, **{"timeout": CONNECT_TIMEOUT_SECONDS, **t.connect_kwargs}
    )


async def _pg_close(conn: Any) -> None:
    if conn is not None:
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()


async def _pg_migrate(t: Any, conn: Any) -> None:
    from llamonitor.storage._postgres_target import q

    cols = _sql_ddl.column_defs(_sql_types.postgres_type, q, SCORE_SCHEMA)
    statements = []
    if t.schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {q(t.schema)}")
    statements.append(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)}, "
        f"PRIMARY KEY ({q('score_id')}))"
    )
    for statement in statements:
        try:
            await conn.execute(statement, timeout=COMMAND_TIMEOUT_SECONDS)
        except (t.asyncpg.UniqueViolationError, t.asyncpg.DuplicateTableError):
            pass  # two writers created it at once
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND table_schema = coalesce($2, current_schema())",
        SCORES_TABLE,
        t.schema,
    )
    have = {r[0] for r in rows}
    for f in SCORE_SCHEMA:
        if f.name not in have:
            await conn.execute(
                f"ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS {q(f.name)} "
                f"{_sql_types.postgres_type(f)}"
            )
    for statement in _indexes(q, SCORES_TABLE, t.qualified):
        try:
            await conn.execute(statement, timeout=COMMAND_TIMEOUT_SECONDS)
        except t.asyncpg.UniqueViolationError:
            pass


async def _postgres_write(t: Any, rows: list[tuple[Any, ...]]) -> None:
    from llamonitor.storage._postgres_target import q

    key = "postgres" + t.secrets.masked + t.qualified
    sql = (
        f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in _NAMES)}) VALUES "
        f"({', '.join(f'${i + 1}' for i in range(len(_NAMES)))}) "
        f"ON CONFLICT ({q('score_id')}) DO UPDATE SET "
        + ", ".join(f"{q(n)} = EXCLUDED.{q(n)}" for n in _UPDATED)
        + f" WHERE EXCLUDED.{q('timestamp')} >= {t.qualified}.{q('timestamp')}"
    )
    conn: Any = None
    try:
        conn = await _pg_connect(t)
        if _first(key):
            await _pg_migrate(t, conn)
            _mark(key)
        async with conn.transaction():
            await conn.executemany(sql, rows, timeout=COMMAND_TIMEOUT_SECONDS)
    except Exception as exc:
        if t.kind(exc) == "missing":
            _mark(key, done=False)
        raise _fail(t, "write scores", exc) from None
    finally:
        await _pg_close(conn)


# -- MySQL / MariaDB ------------------------------------------------------------


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


def _mysql_migrate(t: Any, cur: Any) -> None:
    from llamonitor.storage._mysql_target import q

    cols = _sql_ddl.column_defs(_mysql_type, q, SCORE_SCHEMA)
    index = ", ".join(
        f"INDEX {q(SCORES_TABLE + '_' + s)} ({', '.join(q(c) for c in cs)})" for s, cs in _INDEXES
    )
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(cols)}, "
        f"PRIMARY KEY ({q('score_id')}), {index}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = coalesce(%s, DATABASE())",
        (SCORES_TABLE, t.schema or None),
    )
    have = {r[0] for r in cur.fetchall()}
    for f in SCORE_SCHEMA:
        if f.name not in have:
            cur.execute(f"ALTER TABLE {t.qualified} ADD COLUMN {q(f.name)} {_mysql_type(f)}")


def _write_mysql(storage: StorageConfig, scores: pa.Table) -> None:
    from llamonitor.storage._mysql_target import q

    t = _mysql_target(storage)
    rows = _rows(scores, lambda c: pc.cast(c, pa.timestamp("us")))
    newer = f"VALUES({q('timestamp')}) >= {q('timestamp')}"
    # The timestamp is assigned last: MySQL applies the assignments in order.
    assign = [f"{q(n)} = IF({newer}, VALUES({q(n)}), {q(n)})" for n in _UPDATED if n != "timestamp"]
    assign.append(f"{q('timestamp')} = GREATEST({q('timestamp')}, VALUES({q('timestamp')}))")
    sql = (
        f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('%s' for _ in _NAMES)}) ON DUPLICATE KEY UPDATE " + ", ".join(assign)
    )
    key = "mysql" + t.secrets.masked + t.qualified
    conn: Any = None
    try:
        conn = _mysql_connect(t, autocommit=False)
        with conn.cursor() as cur:
            if _first(key):
                _mysql_migrate(t, cur)
                _mark(key)
            cur.executemany(sql, rows)
        conn.commit()
    except Exception as exc:
        if conn is not None:
            try:
                conn.rollback()
            except Exception:
                pass
        if t.kind(exc) == "missing":
            _mark(key, done=False)
        raise _fail(t, "write scores", exc) from None
    finally:
        if conn is not None:
            conn.close()


# -- reads ----------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _table(rows: list[Any], fix_ts: Any) -> pa.Table:
    columns: list[list[Any]] = (
        [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in _NAMES]
    )
    arrays = []
    for f, values in zip(SCORE_SCHEMA, columns, strict=True):
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array([fix_ts(v) for v in values], f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


def _where(ph: Any, quote: Any, since: datetime | None, ts: Any) -> tuple[str, list[Any]]:
    if since is None:
        return "", []
    return f"WHERE {quote('timestamp')} >= {ph}", [ts(_utc(since).astimezone(timezone.utc))]


def fetch(storage: StorageConfig, kind: str, since: datetime | None = None) -> pa.Table:
    """The scores given at or after ``since`` (all without), a table of
    :data:`SCORE_SCHEMA` (empty when the table does not exist yet).

    Raises:
        StoreError: the database failed.
    """
    if kind == "sqlite":
        return _fetch_sqlite(storage, since)
    if kind == "postgres":
        from llamonitor.storage._postgres_query import LoopThread

        return LoopThread.run(_fetch_postgres(_postgres_target(storage), since))
    return _fetch_mysql(storage, since)


def _fetch_sqlite(storage: StorageConfig, since: datetime | None) -> pa.Table:
    t = _sqlite_target(storage)
    if not t.path.exists():
        return empty_scores()
    where, params = _where("?", _sq, since, lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"))
    try:
        conn = t.sqlite3.connect(str(t.path), timeout=t.timeout)
        try:
            rows = conn.execute(
                f"SELECT {', '.join(_sq(n) for n in _NAMES)} FROM {_sq(SCORES_TABLE)} {where}",
                params,
            ).fetchall()
        finally:
            conn.close()
    except t.sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty_scores()
        raise t.error("read scores", exc) from None
    return _table(rows, lambda v: datetime.fromisoformat(v).replace(tzinfo=timezone.utc))


async def _fetch_postgres(t: Any, since: datetime | None) -> pa.Table:
    from llamonitor.storage._postgres_target import q

    where, params = _where("$1", q, since, lambda d: d)
    conn: Any = None
    try:
        conn = await _pg_connect(t)
        if await conn.fetchval("SELECT to_regclass($1)", t.qualified) is None:
            return empty_scores()
        rows = await conn.fetch(
            f"SELECT {', '.join(q(n) for n in _NAMES)} FROM {t.qualified} {where}", *params
        )
    except Exception as exc:
        raise t.error("read scores", exc) from None
    finally:
        await _pg_close(conn)
    return _table([tuple(r) for r in rows], lambda v: v.astimezone(timezone.utc))


def _fetch_mysql(storage: StorageConfig, since: datetime | None) -> pa.Table:
    from llamonitor.storage._mysql_target import q

    t = _mysql_target(storage)
    where, params = _where("%s", q, since, lambda d: d.replace(tzinfo=None))
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
                    return empty_scores()
                raise
            rows = cur.fetchall()
    except Exception as exc:
        raise t.error("read scores", exc) from None
    finally:
        if conn is not None:
            conn.close()
    return _table(list(rows), lambda v: v.replace(tzinfo=timezone.utc))
