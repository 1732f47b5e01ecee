"""The PostgreSQL span table's setup: create it (optionally partitioned by
month) or migrate it, its indexes and meta row, and the month partitions a
batch needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import _sql, _sql_ddl
from llamonitor.storage._postgres_target import TS, Target, q
from llamonitor.storage._sql_types import postgres_accepts, postgres_narrow, postgres_type

logger = logging.getLogger("llamonitor.storage.postgres")  # the store's one logger


async def setup(conn: Any, t: Target) -> str:
    """Create or migrate the span table, its indexes and its meta row, in the
    transaction of ``conn`` (under an advisory lock on the table). Sets
    ``t.columns`` to the table's columns.

    Returns:
        The ``ON CONFLICT`` target of the table's primary key.

    Raises:
        ConfigurationError: the table cannot be a span table (see
            :func:`~llamonitor.storage._sql_ddl.plan_migration`), or does not
            match the ``partition`` option.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _sql.lock_key(t.qualified))
    if t.schema:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q(t.schema)}")
    version, recorded = await _meta(conn, t)
    existing = await _columns(conn, t)
    if not existing:
        conflict = await _create(conn, t)
        existing = {f.name: postgres_type(f) for f in SCHEMA}
    else:
        conflict = await _migrate(conn, t, existing, version)
        existing = await _columns(conn, t)
    t.columns = set(existing)
    have = await _index_columns(conn, t)
    for suffix, cols in _sql_ddl.INDEXES:
        if _sql_ddl.same_columns_index(cols, have):
            continue  # the original system's own index on these columns
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS {q(t.name(suffix))} ON {t.qualified} "
            f"({_sql_ddl.index_columns(cols, q)})"
        )
    kept = {k: v for k, v in recorded.items() if k in existing}
    await _record(conn, t, _sql_ddl.extensions_text(kept, ()))
    return conflict


async def _meta(conn: Any, t: Target) -> tuple[int | None, dict[str, str]]:
    """The meta table (created if missing): the table's version and extensions."""
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {t.meta()} (table_name text PRIMARY KEY, "
        "schema_version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
        "extensions text)"
    )
    await conn.execute(f"ALTER TABLE {t.meta()} ADD COLUMN IF NOT EXISTS extensions text")
    row = await conn.fetchrow(
        f"SELECT schema_version, extensions FROM {t.meta()} WHERE table_name = $1", t.table
    )
    if row is None:
        return None, {}
    return row[0], _sql_ddl.recorded_extensions(row[1])


async def _record(conn: Any, t: Target, extensions: str) -> None:
    await conn.execute(
        f"INSERT INTO {t.meta()} (table_name, schema_version, extensions) VALUES ($1, $2, $3) "
        "ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version, "
        "extensions = EXCLUDED.extensions, updated_at = now()",
        t.table,
        SCHEMA_VERSION,
        extensions,
    )


async def _columns(conn: Any, t: Target) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        t.qualified,
    )
    return {r[0]: r[1] for r in rows}


async def _index_columns(conn: Any, t: Target) -> list[list[str]]:
    """The column lists of the table's indexes."""
    rows = await conn.fetch(
        "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x "
        "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) "
        "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
        "WHERE x.indrelid = to_regclass($1) GROUP BY x.indexrelid",
        t.qualified,
    )
    return [list(r[0]) for r in rows]


async def add_columns(conn: Any, t: Target, fields: list[pa.Field]) -> None:
    """Add extension columns (nullable) a batch brings, and record them, in the
    transaction of ``conn`` (under the table's advisory lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _sql.lock_key(t.qualified))
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {q(f.name)} {postgres_type(f)}" for f in fields)
    await conn.execute(f"ALTER TABLE {t.qualified} {adds}")
    _, recorded = await _meta(conn, t)
    await _record(conn, t, _sql_ddl.extensions_text(recorded, fields))
    t.columns.update(f.name for f in fields)
    logger.info(
        "llamonitor: %s: added the column(s) %s", t.label, ", ".join(f.name for f in fields)
    )


async def _create(conn: Any, t: Target) -> str:
    defs = _sql_ddl.column_defs(postgres_type, q, SCHEMA)
    key = [*_sql_ddl.PRIMARY_KEY, TS] if t.partitioned else list(_sql_ddl.PRIMARY_KEY)
    ddl = f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(defs)}, " + (
        f"PRIMARY KEY ({', '.join(q(c) for c in key)}))"
    )
    if t.partitioned:
        ddl += f" PARTITION BY RANGE ({q(TS)})"
    await conn.execute(ddl)
    if t.partitioned:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t.qualify(t.name('default'))} "
            f"PARTITION OF {t.qualified} DEFAULT"
        )
    logger.info("llamonitor: created %s (schema version %d)", t.label, SCHEMA_VERSION)
    return ", ".join(q(c) for c in key)


async def _migrate(conn: Any, t: Target, existing: dict[str, str], version: int | None) -> str:
    plan = _sql_ddl.plan_migration(
        t.label, existing, postgres_accepts, version, narrow=postgres_narrow
    )
    if plan.original:
        await conn.execute(f'ALTER TABLE {t.qualified} RENAME COLUMN "error" TO "error_message"')
    steps = [f"ADD COLUMN IF NOT EXISTS {q(f.name)} {postgres_type(f)}" for f in plan.add]
    for f in plan.retype:
        to = postgres_type(f)
        how = f"{q(f.name)} AT TIME ZONE 'UTC'" if f.name == TS else f"{q(f.name)}::{to}"
        steps.append(f"ALTER COLUMN {q(f.name)} TYPE {to} USING {how}")
    steps += [f"ALTER COLUMN {q(c)} DROP NOT NULL" for c in plan.relax if c in existing]
    if steps:  # one statement: the original's table is rewritten once
        await conn.execute(f"ALTER TABLE {t.qualified} {', '.join(steps)}")
    if plan.original:
        await conn.execute(
            f'UPDATE {t.qualified} SET "error" = TRUE WHERE "error_message" IS NOT NULL'
        )
    if plan.null_false_errors:
        await conn.execute(f'UPDATE {t.qualified} SET "error" = NULL WHERE "error" = FALSE')
    plan.log(logger, t.label)
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
        wanted = [*_sql_ddl.PRIMARY_KEY, TS] if relkind == "p" else list(_sql_ddl.PRIMARY_KEY)
        await conn.execute(
            f"ALTER TABLE {t.qualified} ADD PRIMARY KEY ({', '.join(q(c) for c in wanted)})"
        )
        columns = set(wanted)
    if columns not in ({"event_id"}, {"event_id", TS}):
        raise ConfigurationError(
            "storage.table_name",
            f"{t.label} has the primary key ({', '.join(sorted(columns))}); "
            "llamonitor needs (event_id) or (event_id, timestamp)",
        )
    return ", ".join(q(c) for c in ("event_id", TS) if c in columns)


class Partitions:
    """The month partitions of a partitioned span table this process made
    sure of (created, or found taken over by the DEFAULT partition)."""

    def __init__(self, t: Target) -> None:
        self._t = t
        self._months: set[str] = set()
        self._warned_default = False

    def forget(self) -> None:
        """After a (re)setup: the table may be new, check every month again."""
        self._months.clear()

    async def ensure(
        self, table: pa.Table, connection: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> None:
        """Create the partitions of the months ``table``'s rows fall in, each
        on a connection of its own (``connection()``)."""
        ts = table.column(TS)
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
                async with connection() as conn:
                    await conn.execute(ddl)
            except (
                t.asyncpg.DuplicateTableError,
                t.asyncpg.UniqueViolationError,
            ):
                pass  # another process created it meanwhile
            except t.asyncpg.CheckViolationError:
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
