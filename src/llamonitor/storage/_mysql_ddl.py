"""The MySQL/MariaDB span table's setup: create or migrate the table (and the
database named by ``schema_name``), its indexes and its meta row; add the
extension columns a batch brings.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import _sql, _sql_ddl
from llamonitor.storage._mysql_target import Target, q
from llamonitor.storage._sql_types import mysql_accepts, mysql_narrow, mysql_type

logger = logging.getLogger("llamonitor.storage.mysql")  # the store's one logger

_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")
_DUPLICATE_COLUMN = 1060


def lock_name(t: Target) -> str:
    """The ``GET_LOCK`` name of the table's setup."""
    return f"llamonitor:{t.schema or ''}.{t.table}"[:64]


async def setup(cur: Any, t: Target) -> int:
    """Create or migrate the span table, its indexes and its meta row with
    ``cur`` (the caller holds the table's lock and commits). Sets
    ``t.columns`` to the table's columns.

    Returns:
    The server's ``max_allowed_packet`` (bytes).

    Raises:
    ConfigurationError: the table cannot be a span table (see
        :func:`~llamonitor.storage._sql_ddl.plan_migration`).
    """
    if t.schema:
        await cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(t.schema)}")
    await cur.execute("SELECT @@max_allowed_packet")
    (packet,) = await cur.fetchone()
    await cur.execute(
        "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN "
        f"({', '.join(['%s'] * len(_COLLATIONS))})",
        _COLLATIONS,
    )
    found = {r[0] for r in await cur.fetchall()}
    collation = next((c for c in _COLLATIONS if c in found), "utf8mb4_bin")
    table_opts = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
    version, recorded = await _meta(cur, t, table_opts)
    existing = await _columns(cur, t)
    indexes = [
        f"KEY {q(_sql.derived_name(t.table, s))} ({_sql_ddl.index_columns(c, q)})"
        for s, c in _sql_ddl.INDEXES
    ]
    if not existing:
        defs = _sql_ddl.column_defs(mysql_type, q, SCHEMA)
        await cur.execute(
            f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(defs)}, "
            f"PRIMARY KEY ({', '.join(q(c) for c in _sql_ddl.PRIMARY_KEY)}), "
            f"{', '.join(indexes)}) {table_opts}"
        )
        logger.info("llamonitor: created %s (schema version %d)", t.label, SCHEMA_VERSION)
        existing = {f.name: mysql_type(f) for f in SCHEMA}
    else:
        await _migrate(cur, t, existing, version)
        existing = await _columns(cur, t)
        await _indexes(cur, t, indexes)
    t.columns = set(existing)
    kept = {k: v for k, v in recorded.items() if k in existing}
    await _record(cur, t, _sql_ddl.extensions_text(kept, ()))
    return int(packet)


async def _migrate(cur: Any, t: Target, existing: dict[str, str], version: int | None) -> None:
    plan = _sql_ddl.plan_migration(t.label, existing, mysql_accepts, version, narrow=mysql_narrow)
    if plan.original:
        # The original's error (its message) is our error_message.
        await cur.execute(
            f"ALTER TABLE {t.qualified} CHANGE COLUMN `error` `error_message` LONGTEXT"
        )
    steps = [f"ADD COLUMN {q(f.name)} {mysql_type(f)}" for f in plan.add]
    for f in plan.retype:
        steps.append(
            f"MODIFY COLUMN {q(f.name)} {mysql_type(f)}{'' if f.nullable else ' NOT NULL'}"
        )
    steps += [f"MODIFY COLUMN {q(c)} {existing[c]} NULL" for c in plan.relax if c in existing]
    if steps:  # one statement: the table is rebuilt at most once
        await cur.execute(f"ALTER TABLE {t.qualified} {', '.join(steps)}")
    if plan.original:
        await cur.execute(
            f"UPDATE {t.qualified} SET `error` = TRUE WHERE `error_message` IS NOT NULL"
        )
    if plan.null_false_errors:
        await cur.execute(f"UPDATE {t.qualified} SET `error` = NULL WHERE `error` = FALSE")
    plan.log(logger, t.label)


async def _indexes(cur: Any, t: Target, indexes: list[str]) -> None:
    """The primary key and the seed's four indexes on an existing table (an
    index of the original system on the same columns counts)."""
    schema_sql = "%s" if t.schema else "DATABASE()"
    where = f"TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s"
    args = (t.schema, t.table) if t.schema else (t.table,)
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
    for (suffix, cols), ddl in zip(_sql_ddl.INDEXES, indexes, strict=True):
        if _sql.derived_name(t.table, suffix) in have:
            continue
        if _sql_ddl.same_columns_index(cols, have.values()):
            continue  # the original system's own index on these columns
        await cur.execute(f"ALTER TABLE {t.qualified} ADD {ddl}")


async def _meta(cur: Any, t: Target, table_opts: str) -> tuple[int | None, dict[str, str]]:
    """The meta table (created if missing): the table's version and extensions."""
    meta = t.qualify(_sql_ddl.META_TABLE)
    await cur.execute(
        f"CREATE TABLE IF NOT EXISTS {meta} (table_name VARCHAR(255) NOT NULL PRIMARY KEY, "
        f"schema_version INT NOT NULL, updated_at DATETIME(6) NOT NULL, extensions LONGTEXT) "
        f"{table_opts}"
    )
    schema_sql = "%s" if t.schema else "DATABASE()"
    await cur.execute(
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
        f"TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s AND COLUMN_NAME = 'extensions'",
        (t.schema, _sql_ddl.META_TABLE) if t.schema else (_sql_ddl.META_TABLE,),
    )
    if not (await cur.fetchone())[0]:  # a meta table of an older llamonitor
        await _add_ignoring_duplicates(cur, f"ALTER TABLE {meta} ADD COLUMN extensions LONGTEXT")
    await cur.execute(
        f"SELECT schema_version, extensions FROM {meta} WHERE table_name = %s", (t.table,)
    )
    row = await cur.fetchone()
    if row is None:
        return None, {}
    return row[0], _sql_ddl.recorded_extensions(row[1])


async def _record(cur: Any, t: Target, extensions: str) -> None:
    await cur.execute(
        f"INSERT INTO {t.qualify(_sql_ddl.META_TABLE)} "
        "(table_name, schema_version, updated_at, extensions) "
        "VALUES (%s, %s, UTC_TIMESTAMP(6), %s) ON DUPLICATE KEY UPDATE "
        "schema_version = VALUES(schema_version), updated_at = VALUES(updated_at), "
        "extensions = VALUES(extensions)",
        (t.table, SCHEMA_VERSION, extensions),
    )


async def _columns(cur: Any, t: Target) -> dict[str, str]:
    schema_sql = "%s" if t.schema else "DATABASE()"
    await cur.execute(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s",
        (t.schema, t.table) if t.schema else (t.table,),
    )
    return {r[0]: r[1] for r in await cur.fetchall()}


async def _add_ignoring_duplicates(cur: Any, sql: str) -> None:
    """Run an ``ADD COLUMN`` another process may have run first (MySQL has no
    ``ADD COLUMN IF NOT EXISTS``)."""
    try:
        await cur.execute(sql)
    except Exception as exc:
        if not (exc.args and exc.args[0] == _DUPLICATE_COLUMN):
            raise


async def add_columns(cur: Any, t: Target, fields: list[pa.Field]) -> None:
    """Add the extension columns (nullable) a batch brings, and record them,
    under the table's lock (the caller commits)."""
    lock = lock_name(t)
    await cur.execute("SELECT GET_LOCK(%s, %s)", (lock, 60))
    try:
        have = await _columns(cur, t)
        for f in fields:
            if f.name not in have:
                await _add_ignoring_duplicates(
                    cur, f"ALTER TABLE {t.qualified} ADD COLUMN {q(f.name)} {mysql_type(f)}"
                )
        await cur.execute(
            f"SELECT extensions FROM {t.qualify(_sql_ddl.META_TABLE)} WHERE table_name = %s",
            (t.table,),
        )
        row = await cur.fetchone()
        recorded = _sql_ddl.recorded_extensions(row[0] if row else None)
        await _record(cur, t, _sql_ddl.extensions_text(recorded, fields))
    finally:
        await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
    t.columns.update(f.name for f in fields)
    logger.info(
        "llamonitor: %s: added the column(s) %s", t.label, ", ".join(f.name for f in fields)
    )
