"""The MySQL/MariaDB span table's setup: create or migrate the table (and the
database named by ``schema_name``), its indexes and its meta row.
"""

from __future__ import annotations

import logging
from typing import Any

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import _sql, _sql_ddl
from llamonitor.storage._mysql_target import Target, q
from llamonitor.storage._sql_types import mysql_accepts, mysql_type

logger = logging.getLogger("llamonitor.storage.mysql")  # the store's one logger

_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


async def setup(cur: Any, t: Target) -> int:
    """Create or migrate the span table, its indexes and its meta row with
    ``cur`` (the caller holds the table's lock and commits).

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
    meta = t.qualify(_sql_ddl.META_TABLE)
    await cur.execute(
        f"CREATE TABLE IF NOT EXISTS {meta} (table_name VARCHAR(255) NOT NULL PRIMARY KEY, "
        f"schema_version INT NOT NULL, updated_at DATETIME(6) NOT NULL) {table_opts}"
    )
    await cur.execute(f"SELECT schema_version FROM {meta} WHERE table_name = %s", (t.table,))
    row = await cur.fetchone()
    schema_sql = "%s" if t.schema else "DATABASE()"
    where = f"TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s"
    args = (t.schema, t.table) if t.schema else (t.table,)
    await cur.execute(
        f"SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE {where}", args
    )
    existing = {r[0]: r[1] for r in await cur.fetchall()}
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
    else:
        version = row[0] if row else None
        missing = _sql_ddl.plan_migration(t.label, existing, mysql_accepts, version)
        if missing:
            adds = ", ".join(f"ADD COLUMN {q(f.name)} {mysql_type(f)}" for f in missing)
            await cur.execute(f"ALTER TABLE {t.qualified} {adds}")
            logger.info(
                "llamonitor: migrated %s to schema version %d: added %s",
                t.label,
                SCHEMA_VERSION,
                ", ".join(f.name for f in missing),
            )
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
        for (suffix, _), ddl in zip(_sql_ddl.INDEXES, indexes, strict=True):
            if _sql.derived_name(t.table, suffix) not in have:
                await cur.execute(f"ALTER TABLE {t.qualified} ADD {ddl}")
    await cur.execute(
        f"INSERT INTO {meta} (table_name, schema_version, updated_at) "
        "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
        "schema_version = VALUES(schema_version), updated_at = VALUES(updated_at)",
        (t.table, SCHEMA_VERSION),
    )
    return int(packet)
