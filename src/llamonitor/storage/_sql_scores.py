"""Scores in the SQL stores: the ``llamonitor_scores`` table.

A :class:`~llamonitor.storage._sql_side.SideTable` of
:data:`~llamonitor.schema._scores.SCORE_SCHEMA`, as ``metric_points`` is
(its definition, connections, creation, migration and reads are there).

``score_id`` is the primary key and every write an upsert, so writing a score
again (an evaluator re-run, a batch replayed from the spool) replaces it: the
row with the later ``timestamp`` stays. Migration, at the first write of a
process: the table is created if missing, and the columns of
``SCORE_SCHEMA`` it lacks (a table of an older llamonitor) are added,
nullable (``_sql_side``); each row says the ``schema_version`` it was written with.
Timestamps: PostgreSQL ``timestamptz``, MySQL ``DATETIME(6)`` in UTC, SQLite
UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._scores import SCORE_SCHEMA
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_side as side
from llamonitor.storage._sql import StoreError

SCORES_TABLE = "llamonitor_scores"
SCORES = side.SideTable(
    SCORES_TABLE,
    SCORE_SCHEMA,
    "scores",
    indexes=(("trace", ("trace_id",)), ("name_ts", ("name", "timestamp"))),
    varchar=frozenset({"score_id", "name", "trace_id", "span_id", "session_id", "timestamp"}),
    primary_key="score_id",
)
CONNECT_TIMEOUT_SECONDS = side.CONNECT_TIMEOUT_SECONDS
COMMAND_TIMEOUT_SECONDS = side.COMMAND_TIMEOUT_SECONDS
_NAMES = SCORE_SCHEMA.names
_UPDATED = [n for n in _NAMES if n != "score_id"]
_migrated = SCORES.created


class ScoresRefused(ValueError):
    """The database refused the scores for their content (not worth retrying)."""


def _fail(t: Any, what: str, exc: BaseException) -> Exception:
    return SCORES.refused(t, exc, what, ScoresRefused)


def _rows(points: pa.Table, ts: Any) -> list[tuple[Any, ...]]:
    table = points.set_column(1, "timestamp", ts(points.column("timestamp")))
    return list(zip(*(table.column(n).to_pylist() for n in _NAMES), strict=True))


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

        t = side.postgres_target(SCORES, storage)
        rows = _rows(scores, lambda c: c)
        LoopThread.run(_postgres_write(t, rows))
    else:
        _write_mysql(storage, scores)


def _write_sqlite(storage: StorageConfig, scores: pa.Table) -> None:
    t = side.sqlite_target(SCORES, storage)
    fmt = "%Y-%m-%d %H:%M:%S"
    rows = _rows(scores, lambda c: pc.strftime(c, format=fmt, locale="C"))
    q = side.sq
    sql = (
        f"INSERT INTO {q(SCORES_TABLE)} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('?' for _ in _NAMES)}) ON CONFLICT({q('score_id')}) DO UPDATE SET "
        + ", ".join(f"{q(n)} = excluded.{q(n)}" for n in _UPDATED)
        + f" WHERE excluded.{q('timestamp')} >= {q(SCORES_TABLE)}.{q('timestamp')}"
    )
    try:
        conn = side.sqlite_connect(t)
    except Exception as exc:
        raise t.error("connect", exc) from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            side.sqlite_create(SCORES, conn)
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
        conn = await side.pg_connect(t)
        if SCORES.first(key):
            await side.pg_create(SCORES, t, conn)
            SCORES.mark(key)
        async with conn.transaction():
            await conn.executemany(sql, rows, timeout=COMMAND_TIMEOUT_SECONDS)
    except Exception as exc:
        if t.kind(exc) == "missing":
            SCORES.mark(key, done=False)
        raise _fail(t, "write scores", exc) from None
    finally:
        await side.pg_close(conn)


def _write_mysql(storage: StorageConfig, scores: pa.Table) -> None:
    from llamonitor.storage._mysql_target import q

    t = side.mysql_target(SCORES, storage)
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
        conn = side.mysql_connect(t, autocommit=False)
        with conn.cursor() as cur:
            if SCORES.first(key):
                side.mysql_create(SCORES, t, cur)
                SCORES.mark(key)
            cur.executemany(sql, rows)
        conn.commit()
    except Exception as exc:
        side.mysql_rollback(conn)
        if t.kind(exc) == "missing":
            SCORES.mark(key, done=False)
        raise _fail(t, "write scores", exc) from None
    finally:
        if conn is not None:
            conn.close()


def fetch(storage: StorageConfig, kind: str, since: datetime | None = None) -> pa.Table:
    """The scores given at or after ``since`` (all without), a table of
    :data:`SCORE_SCHEMA` (empty when the table does not exist yet).

    Raises:
        StoreError: the database failed.
    """
    return side.fetch(SCORES, storage, kind, [("timestamp", ">=", since)])
