"""Metric points in the SQL stores: the ``metric_points`` table.

A :class:`~llamonitor.storage._sql_side.SideTable` of
:data:`~llamonitor.metrics._schema.METRIC_SCHEMA` (created and migrated on
first write, with an index on ``(name, timestamp)``; connections, secrets
scrubbing and error classification are the span stores').

A batch goes in one transaction (PostgreSQL: ``COPY``; MySQL: a multi-row
``INSERT``; SQLite: ``executemany``). Points the database refuses for their
content (a NUL byte in PostgreSQL text, a name longer than MySQL's 255
characters, a row a ``CHECK`` of the table fails) are isolated as the span
stores isolate spans (``storage._sql_write.write_isolating``: the batch is
bisected, every other point written) and raised in
:class:`~llamonitor.storage.base.RowsRejected` with the database's error per
point. The table has no primary key: the worker retries only a batch that
failed for the store (not its content), so a point is duplicated only if a
commit succeeded and its acknowledgement was lost. NaN and infinite values
are stored as NULL in MySQL (which has no such doubles) and SQLite (which
turns NaN into NULL itself); PostgreSQL keeps them. Timestamps: PostgreSQL
``timestamptz``, MySQL ``DATETIME(6)`` in UTC, SQLite UTC text
``YYYY-MM-DD HH:MM:SS.ffffff`` (sorts in time order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.metrics._schema import METRIC_SCHEMA
from llamonitor.schema._rejected import RowsRejected
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_side as side
from llamonitor.storage._sql import StoreError, describe
from llamonitor.storage._sql_write import ContentError, write_isolating

POINTS_TABLE = "metric_points"
INDEX_COLUMNS = ("name", "timestamp")
POINTS = side.SideTable(
    POINTS_TABLE,
    METRIC_SCHEMA,
    "metric points",
    indexes=(("name_ts", INDEX_COLUMNS),),
    varchar=frozenset(INDEX_COLUMNS),
)
CONNECT_TIMEOUT_SECONDS = side.CONNECT_TIMEOUT_SECONDS
COMMAND_TIMEOUT_SECONDS = side.COMMAND_TIMEOUT_SECONDS

_NAMES = METRIC_SCHEMA.names


def _finite_or_none(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_float64(f.type):
            col = table.column(i)
            finite = pc.is_finite(col)
            if not pc.all(pc.or_kleene(finite, pc.is_null(col))).as_py():
                table = table.set_column(i, f, pc.if_else(finite, col, None))
    return table


def _numbered(table: pa.Table) -> pa.Table:
    """``table`` with its row numbers (``__row``: what a rejection maps back by)."""
    return table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))


def _original(exc: RowsRejected, points: pa.Table) -> RowsRejected:
    """``exc`` with the caller's rows (the written form's timestamps were text or naive)."""
    rows = exc.rejected.column("__row").to_pylist()
    return RowsRejected(points.take(rows), list(exc.errors))


def _records(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(n).to_pylist() for n in _NAMES), strict=True))


def _content(t: Any, exc: BaseException) -> ContentError:
    """The database refused a slice for its content: what ``write_isolating`` bisects on."""
    return ContentError(t.secrets.scrub(f"{t.label}: refused the point: {describe(exc)}"))


# -- writes ---------------------------------------------------------------------


def write(storage: StorageConfig, kind: str, points: pa.Table) -> None:
    """Insert ``points`` (conformed), one transaction a slice.

    Raises:
        RowsRejected: after every other point is written, the points the
            database refused for their content (with its error for each).
        StoreError: the database failed (``transient`` says whether to retry).
        ConfigurationError: a bad connection string or a missing driver.
    """
    if kind == "sqlite":
        _write_sqlite(storage, points)
    elif kind == "postgres":
        from llamonitor.storage._postgres_query import LoopThread

        t = side.postgres_target(POINTS, storage)
        LoopThread.run(_postgres_write(t, points))
    else:
        _write_mysql(storage, points)


def _write_sqlite(storage: StorageConfig, points: pa.Table) -> None:
    t = side.sqlite_target(POINTS, storage)
    ts = pc.strftime(points.column("timestamp"), format="%Y-%m-%d %H:%M:%S", locale="C")
    table = _numbered(_finite_or_none(points).set_column(0, "timestamp", ts))
    q = side.sq
    sql = (
        f"INSERT INTO {q(POINTS_TABLE)} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('?' for _ in _NAMES)})"
    )
    try:
        conn = side.sqlite_connect(t)
    except Exception as exc:
        raise t.error("connect", exc) from None

    async def attempt(part: pa.Table) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, _records(part))
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if t.kind(exc) == "content":
                raise _content(t, exc) from None
            raise
        conn.execute("COMMIT")

    try:
        side.sqlite_create(POINTS, conn)
        side.run_sync(write_isolating(table, attempt))
    except RowsRejected as exc:
        raise _original(exc, points) from None
    except StoreError:
        raise
    except Exception as exc:
        raise t.error("write metric points", exc) from None
    finally:
        conn.close()


async def _postgres_write(t: Any, points: pa.Table) -> None:
    key = "postgres" + t.secrets.masked + t.qualified
    conn: Any = None
    try:
        conn = await side.pg_connect(t)
        if POINTS.first(key):
            await side.pg_create(POINTS, t, conn)
            POINTS.mark(key)

        async def attempt(part: pa.Table) -> None:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        POINTS_TABLE,
                        records=_records(part),
                        columns=list(_NAMES),
                        schema_name=t.schema,
                        timeout=COMMAND_TIMEOUT_SECONDS,
                    )
            except Exception as exc:
                if t.kind(exc) == "content":
                    raise _content(t, exc) from None
                raise

        await write_isolating(points, attempt)
    except RowsRejected:
        raise
    except Exception as exc:
        if t.kind(exc) == "missing":
            POINTS.mark(key, done=False)
        raise t.error("write metric points", exc) from None
    finally:
        await side.pg_close(conn)


def _write_mysql(storage: StorageConfig, points: pa.Table) -> None:
    from llamonitor.storage._mysql_target import q

    t = side.mysql_target(POINTS, storage)
    naive = pc.cast(points.column("timestamp"), pa.timestamp("us"))
    table = _numbered(_finite_or_none(points).set_column(0, "timestamp", naive))
    insert = (
        f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in _NAMES)}) "
        f"VALUES ({', '.join('%s' for _ in _NAMES)})"
    )
    key = "mysql" + t.secrets.masked + t.qualified
    conn: Any = None

    async def attempt(part: pa.Table) -> None:
        try:
            with conn.cursor() as cur:
                cur.executemany(insert, _records(part))  # one multi-row INSERT
            conn.commit()
        except Exception as exc:
            side.mysql_rollback(conn)
            if t.kind(exc) == "content":
                raise _content(t, exc) from None
            raise

    try:
        conn = side.mysql_connect(t, autocommit=False)
        if POINTS.first(key):
            with conn.cursor() as cur:
                side.mysql_create(POINTS, t, cur)
            POINTS.mark(key)
        side.run_sync(write_isolating(table, attempt))
    except RowsRejected as exc:
        raise _original(exc, points) from None
    except Exception as exc:
        side.mysql_rollback(conn)
        if t.kind(exc) == "missing":
            POINTS.mark(key, done=False)
        raise t.error("write metric points", exc) from None
    finally:
        if conn is not None:
            conn.close()


# -- reads ----------------------------------------------------------------------


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
    clauses = [
        ("name", "=", name),
        ("timestamp", ">=", start),
        ("timestamp", "<", end),
        ("resolution_seconds", "=", resolution),
    ]
    return side.fetch(POINTS, storage, kind, clauses)
