"""Retention's PostgreSQL executor (see ``_retention_sql``): batched deletes by
``ctid`` and month partitions dropped whole, on one asyncpg connection driven
from the store's private event loop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llamonitor.metrics._retention_plan import POINTS, SPANS, Cutoff
from llamonitor.metrics._retention_sql import _UPPER, INDEX_SUFFIX, LOCK_TIMEOUT_MS, _cols
from llamonitor.schema.config import StorageConfig


class Postgres:
    kind = "postgres"

    def __init__(self, storage: StorageConfig) -> None:
        from llamonitor.metrics import _sql_points
        from llamonitor.storage._postgres_query import LoopThread
        from llamonitor.storage._postgres_target import Target, q

        self.q = q
        self.run = LoopThread.run
        self.t = Target(storage)
        self.tables = {SPANS: self.t.table, POINTS: _sql_points.POINTS_TABLE}
        self.conn: Any = None

    def open(self) -> None:
        self.conn = self.run(self._connect())

    async def _connect(self) -> Any:
        kwargs = {"timeout": 10.0, **self.t.connect_kwargs}
        conn = await self.t.asyncpg.connect(self.t.dsn, **kwargs)
        await conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.run(self.conn.close(timeout=5))

    def qualified(self, table: str) -> str:
        return self.t.qualify(table)

    def exists(self, table: str) -> bool:
        found = self.run(self.conn.fetchval("SELECT to_regclass($1)", self.qualified(table)))
        return found is not None

    def where(self, c: Cutoff) -> tuple[str, list[Any]]:
        sql = '"timestamp" < $1::timestamptz'
        params: list[Any] = [c.before]
        if c.resolution is not None:
            sql += " AND resolution_seconds = $2"
            params.append(c.resolution)
        return sql, params

    def count(self, table: str, c: Cutoff) -> int:
        where, params = self.where(c)
        sql = f"SELECT count(*) FROM {self.qualified(table)} WHERE {where}"
        return int(self.run(self.conn.fetchval(sql, *params)))

    def row_bytes(self, table: str) -> float | None:
        row = self.run(
            self.conn.fetchrow(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), "
                "coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_class c "
                "WHERE c.oid = to_regclass($1) OR c.oid IN "
                "(SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass($1))",
                self.qualified(table),
            )
        )
        return float(row[0]) / float(row[1]) if row and row[1] else None

    def ensure_index(self, table: str, c: Cutoff) -> None:
        cols = list(_cols(c))
        have = self.run(
            self.conn.fetch(
                "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x "
                "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) "
                "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
                "WHERE x.indrelid = to_regclass($1) GROUP BY x.indexrelid",
                self.qualified(table),
            )
        )
        if any(list(r[0])[: len(cols)] == cols for r in have):
            return
        from llamonitor.storage import _sql

        name = self.q(_sql.derived_name(table, INDEX_SUFFIX))
        self.run(
            self.conn.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {self.qualified(table)} "
                f"({', '.join(self.q(x) for x in cols)})"
            )
        )

    def delete_batch(self, table: str, c: Cutoff, n: int) -> int:
        where, params = self.where(c)
        t = self.qualified(table)
        limit = f"${len(params) + 1}"
        sql = (
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {where} "
            f"LIMIT {limit})) AND {where}"
        )
        status = self.run(self.conn.execute(sql, *params, n))
        return int(str(status).rsplit(" ", 1)[-1])

    def partitions(self, table: str) -> list[tuple[str, datetime | None]]:
        """Each partition of ``table`` and its upper bound (``None``: DEFAULT).

        None unless the table is range-partitioned by ``timestamp``: a partition of a
        table keyed on another column may hold rows the policy keeps."""
        key = self.run(
            self.conn.fetchval("SELECT pg_get_partkeydef(to_regclass($1))", self.qualified(table))
        )
        if str(key or "").replace('"', "").replace(" ", "").lower() != "range(timestamp)":
            return []
        rows = self.run(
            self.conn.fetch(
                "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass($1)",
                self.qualified(table),
            )
        )
        out: list[tuple[str, datetime | None]] = []
        for name, bound in rows:
            m = _UPPER.search(bound or "")
            upper = None
            if m and m.group(1) != "MAXVALUE":
                upper = self.run(self.conn.fetchval("SELECT $1::text::timestamptz", m.group(1)))
            out.append((str(name), upper))
        return out

    def partition_rows(self, name: str) -> tuple[int, int]:
        row = self.run(
            self.conn.fetchrow(
                f"SELECT count(*), pg_total_relation_size($1::regclass) FROM {name}", name
            )
        )
        return int(row[0]), int(row[1])

    def drop_partition(self, name: str) -> None:
        async def drop() -> None:
            async with self.conn.transaction():
                await self.conn.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                await self.conn.execute(f"DROP TABLE {name}")

        self.run(drop())
