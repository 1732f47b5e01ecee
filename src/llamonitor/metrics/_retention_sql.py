"""Retention on the SQL stores: batched deletes by time, and month partitions
dropped where the span table is partitioned.

Each batch is one short transaction that deletes at most ``batch_rows``
rows past the cutoff, found through an index on the time (the first apply
adds ``<table>_retention_ts`` on ``timestamp`` to the span table, and
``metric_points_retention_ts`` on ``(resolution_seconds, timestamp)`` to the
points, where no index starts with them): writers and readers wait for one
batch at most, never for the whole deletion, and a SIGKILL or a lost
connection leaves every batch either done or not.

Partitions: a PostgreSQL span table created with ``options={"partition":
"monthly"}`` has one partition per month (``<table>_pYYYY_MM``); a month
that ends at or before the cutoff is dropped whole (``DROP TABLE``, under a
``lock_timeout``), the month that straddles it and the DEFAULT partition get
batched deletes. The ``metric_points`` tables, SQLite and MySQL/MariaDB
tables are not partitioned by llamonitor: batched deletes only (a MySQL
table someone partitioned is said so in the tally's notes, not dropped).

Space: PostgreSQL and InnoDB reuse the freed pages; a dropped partition
returns its files at once; SQLite's file shrinks only after ``VACUUM``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from llamonitor.metrics._retention_plan import POINTS, SPANS, Cutoff, RetentionError, Tally
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_side as side
from llamonitor.storage._sql import StoreError

LOCK_TIMEOUT_MS = 5000
"""How long a partition drop waits for its lock before giving up (the next run retries)."""

_UPPER = re.compile(r"TO \('([^']+)'\)")
INDEX_SUFFIX = "retention_ts"


def _cols(c: Cutoff) -> tuple[str, ...]:
    return ("timestamp",) if c.table == SPANS else ("resolution_seconds", "timestamp")


def _sqlite_time(v: datetime) -> str:
    v = v.astimezone(timezone.utc)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


class _SQLite:
    kind = "sqlite"

    def __init__(self, storage: StorageConfig) -> None:
        from llamonitor.metrics import _sql_points
        from llamonitor.storage import sqlite as sqlite_store

        self.t = sqlite_store._Target(storage)
        self.tables = {SPANS: self.t.table, POINTS: _sql_points.POINTS_TABLE}
        self.conn: Any = None

    def open(self) -> None:
        if self.t.path.exists():
            self.conn = self.t.sqlite3.connect(
                str(self.t.path), timeout=self.t.timeout, isolation_level=None
            )

    @staticmethod
    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def exists(self, table: str) -> bool:
        if self.conn is None:
            return False
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return row is not None

    def where(self, c: Cutoff) -> tuple[str, list[Any]]:
        sql = '"timestamp" < ?'
        params: list[Any] = [_sqlite_time(c.before)]
        if c.resolution is not None:
            sql += " AND resolution_seconds = ?"
            params.append(c.resolution)
        return sql, params

    def count(self, table: str, c: Cutoff) -> int:
        where, params = self.where(c)
        row = self.conn.execute(f"SELECT count(*) FROM {self.q(table)} WHERE {where}", params)
        return int(row.fetchone()[0])

    def row_bytes(self, table: str) -> float | None:
        try:
            size = self.conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,)
            ).fetchone()[0]
        except self.t.sqlite3.Error:
            return None  # SQLite built without dbstat
        n = self.conn.execute(f"SELECT count(*) FROM {self.q(table)}").fetchone()[0]
        return float(size or 0) / n if n else None

    def ensure_index(self, table: str, c: Cutoff) -> None:
        cols = _cols(c)
        have = self.conn.execute(f"PRAGMA index_list({self.q(table)})").fetchall()
        for row in have:
            info = self.conn.execute(f"PRAGMA index_info({self.q(row[1])})").fetchall()
            names = tuple(r[2] for r in sorted(info))
            if names[: len(cols)] == cols:
                return
        name = self.q(f"{table}_{INDEX_SUFFIX}")
        self.conn.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {self.q(table)} "
            f"({', '.join(self.q(x) for x in cols)})"
        )

    def delete_batch(self, table: str, c: Cutoff, n: int) -> int:
        where, params = self.where(c)
        q = self.q(table)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cur = self.conn.execute(
                f"DELETE FROM {q} WHERE rowid IN (SELECT rowid FROM {q} WHERE {where} LIMIT ?)",
                [*params, n],
            )
            done = int(cur.rowcount)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return done

    def partitions(self, table: str) -> list[tuple[str, datetime | None]]:
        return []


class _MySQL:
    kind = "mysql"

    def __init__(self, storage: StorageConfig) -> None:
        from llamonitor.metrics import _sql_points
        from llamonitor.storage._mysql_target import Target, q

        self.q = q
        self.t = Target(storage, connect_timeout=10.0, command_timeout=None)
        self.pt = side.mysql_target(_sql_points.POINTS, storage)
        self.tables = {SPANS: self.t.table, POINTS: _sql_points.POINTS_TABLE}
        self.db = self.t.schema or self.t.connect_kwargs["db"]
        self.conn: Any = None

    def open(self) -> None:
        self.conn = side.mysql_connect(self.pt, autocommit=True)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def qualified(self, table: str) -> str:
        return self.t.qualify(table)

    def _one(self, sql: str, params: list[Any]) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def exists(self, table: str) -> bool:
        row = self._one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = %s",
            [self.db, table],
        )
        return bool(row and row[0])

    def where(self, c: Cutoff) -> tuple[str, list[Any]]:
        sql = "`timestamp` < %s"
        params: list[Any] = [c.before.astimezone(timezone.utc).replace(tzinfo=None)]
        if c.resolution is not None:
            sql += " AND resolution_seconds = %s"
            params.append(c.resolution)
        return sql, params

    def count(self, table: str, c: Cutoff) -> int:
        where, params = self.where(c)
        sql = f"SELECT count(*) FROM {self.qualified(table)} WHERE {where}"
        return int(self._one(sql, params)[0])

    def row_bytes(self, table: str) -> float | None:
        row = self._one(
            "SELECT data_length + index_length, table_rows FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = %s",
            [self.db, table],
        )
        if not row or not row[1]:
            return None
        return float(row[0]) / float(row[1])

    def ensure_index(self, table: str, c: Cutoff) -> None:
        cols = _cols(c)
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT index_name, column_name FROM information_schema.statistics "
                "WHERE table_schema = %s AND table_name = %s ORDER BY index_name, seq_in_index",
                [self.db, table],
            )
            indexes: dict[str, list[str]] = {}
            for name, col in cur.fetchall():
                indexes.setdefault(name, []).append(col)
            if any(tuple(v[: len(cols)]) == cols for v in indexes.values()):
                return
            cur.execute(
                f"CREATE INDEX {self.q(table + '_' + INDEX_SUFFIX)} ON {self.qualified(table)} "
                f"({', '.join(self.q(x) for x in cols)})"
            )

    def delete_batch(self, table: str, c: Cutoff, n: int) -> int:
        where, params = self.where(c)
        with self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.qualified(table)} WHERE {where} LIMIT %s", [*params, n])
            return int(cur.rowcount)

    def partitions(self, table: str) -> list[tuple[str, datetime | None]]:
        return []

    def user_partitioned(self, table: str) -> bool:
        row = self._one(
            "SELECT count(*) FROM information_schema.partitions WHERE table_schema = %s "
            "AND table_name = %s AND partition_name IS NOT NULL",
            [self.db, table],
        )
        return bool(row and row[0])


def _lock_name(kind: str, storage: StorageConfig) -> str:
    import hashlib

    where = f"{kind}:{storage.schema_name or ''}.{storage.table_name}"
    return "llamonitor-retention-" + hashlib.sha256(where.encode()).hexdigest()[:16]


@contextmanager
def exclusive(storage: StorageConfig, kind: str) -> Iterator[None]:
    """One retention per span table at a time (so two never build the same
    rollups): a ``flock`` beside a SQLite file, a PostgreSQL session advisory
    lock, a MySQL ``GET_LOCK``; each released when its holder dies.

    Raises:
        RetentionError: another retention holds it.
        StoreError: the database failed.
    """
    busy = RetentionError(f"another retention is running on the {kind} store")
    if kind == "sqlite":
        import fcntl

        from llamonitor.storage import sqlite as sqlite_store

        path = sqlite_store._Target(storage).path
        if not path.parent.is_dir():
            yield
            return
        with open(path.with_name(path.name + ".retention.lock"), "a+b") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise busy from None
            yield
        return
    ex = _executor(storage, kind)
    name = _lock_name(kind, storage)
    try:
        ex.open()
        if kind == "postgres":
            from llamonitor.storage import _sql

            key = _sql.lock_key(name)
            got = ex.run(ex.conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
        else:
            got = ex._one("SELECT GET_LOCK(%s, 0)", [name])[0] == 1
    except Exception as exc:
        ex.close()
        raise ex.t.error("lock for retention", exc) from None
    if not got:
        ex.close()
        raise busy
    try:
        yield
    finally:
        ex.close()  # the lock ends with the session


def _executor(storage: StorageConfig, kind: str) -> Any:
    if kind == "sqlite":
        return _SQLite(storage)
    if kind == "postgres":
        from llamonitor.metrics._retention_postgres import Postgres

        return Postgres(storage)
    return _MySQL(storage)


def apply(
    storage: StorageConfig, kind: str, cutoffs: list[Cutoff], dry_run: bool, batch_rows: int
) -> dict[str, Tally]:
    """Delete (or, in a dry run, count) the rows of the store past ``cutoffs``.

    Returns a tally per cutoff (``Cutoff.key``).

    Raises:
        StoreError / the driver's errors: the database failed (what was
            deleted before stays deleted; the next run goes on).
    """
    tallies: dict[str, Tally] = {c.key: Tally(bytes_estimated=True) for c in cutoffs}
    ex = _executor(storage, kind)
    try:
        ex.open()
        _run(ex, kind, cutoffs, dry_run, batch_rows, tallies)
    except StoreError:
        raise
    except Exception as exc:
        raise ex.t.error("apply retention", exc) from None
    finally:
        try:
            ex.close()
        except Exception:
            pass
    return tallies


def _run(
    ex: Any,
    kind: str,
    cutoffs: list[Cutoff],
    dry_run: bool,
    batch_rows: int,
    tallies: dict[str, Tally],
) -> None:
    for c in cutoffs:
        table = ex.tables[c.table]
        tally = tallies[c.key]
        if not ex.exists(table):
            continue
        per_row = ex.row_bytes(table)
        if c.table == SPANS:
            for name, upper in ex.partitions(table):
                if upper is None or upper > c.before:
                    continue
                rows, size = ex.partition_rows(name)
                if not dry_run:
                    ex.drop_partition(name)
                tally.rows += rows
                tally.partitions_dropped += 1
                tally.bytes += size
            if kind == "mysql" and ex.user_partitioned(table):
                tally.notes.append(
                    f"{table} is partitioned (not by llamonitor): batched deletes, "
                    "no partition dropped"
                )
        if dry_run:
            rows = ex.count(table, c)
        else:
            ex.ensure_index(table, c)
            rows = 0
            while True:
                done = ex.delete_batch(table, c, batch_rows)
                rows += done
                if done < batch_rows:
                    break
        tally.rows += rows
        if per_row is not None:
            tally.bytes += int(rows * per_row)
