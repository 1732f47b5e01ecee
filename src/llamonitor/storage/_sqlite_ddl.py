"""The SQLite span table's setup: create or migrate the table, its indexes and
its meta row; add the extension columns a batch brings.

SQLite cannot drop a NOT NULL constraint, so a table from before schema
version 3 (``error`` and ``duration_ms`` NOT NULL) is rebuilt once: a new table
without them, every row copied (``error`` FALSE as NULL), the old one dropped
and the new one renamed, its indexes made again -- in the setup's
``BEGIN IMMEDIATE`` transaction, so a crash leaves the old table as it was.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.storage import _sql, _sql_ddl
from llamonitor.storage._sql_types import sqlite_accepts, sqlite_type

logger = logging.getLogger("llamonitor.storage.sqlite")


def q(name: str) -> str:
    """``name`` quoted as a SQLite identifier."""
    return '"' + name.replace('"', '""') + '"'


def setup(conn: Any, table: str, label: str) -> set[str]:
    """Create or migrate the span table ``table``, its indexes and its meta
    row, in the caller's ``BEGIN IMMEDIATE`` transaction.

    Returns:
        The table's columns.

    Raises:
        ConfigurationError: the table cannot be a span table (see
            :func:`~llamonitor.storage._sql_ddl.plan_migration`).
    """
    qualified = q(table)
    version, recorded = _meta(conn, table)
    existing = _columns(conn, qualified)
    if not existing:
        defs = _sql_ddl.column_defs(sqlite_type, q, SCHEMA)
        conn.execute(
            f"CREATE TABLE {qualified} ({', '.join(defs)}, "
            f"PRIMARY KEY ({', '.join(q(c) for c in _sql_ddl.PRIMARY_KEY)}))"
        )
        logger.info("llamonitor: created %s (schema version %d)", label, SCHEMA_VERSION)
    else:
        plan = _sql_ddl.plan_migration(label, existing, sqlite_accepts, version)
        if plan.original:
            conn.execute(f'ALTER TABLE {qualified} RENAME COLUMN "error" TO "error_message"')
        for f in plan.add:
            conn.execute(f"ALTER TABLE {qualified} ADD COLUMN {q(f.name)} {sqlite_type(f)}")
        not_null = {r[1] for r in conn.execute(f"PRAGMA table_info({qualified})") if r[3]}
        relax = [c for c in plan.relax if c in not_null]
        if relax:
            _rebuild(conn, table, relax)
        elif plan.null_false_errors:
            conn.execute(f'UPDATE {qualified} SET "error" = NULL WHERE "error" = 0')
        if plan.original:
            conn.execute(f'UPDATE {qualified} SET "error" = 1 WHERE "error_message" IS NOT NULL')
        plan.log(logger, label)
        _ensure_unique_event_id(conn, table)
    for suffix, cols in _sql_ddl.INDEXES:
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {q(_sql.derived_name(table, suffix))} "
            f"ON {qualified} ({_sql_ddl.index_columns(cols, q)})"
        )
    columns = set(_columns(conn, qualified))
    kept = {k: v for k, v in recorded.items() if k in columns}
    _record(conn, table, _sql_ddl.extensions_text(kept, ()))
    return columns


def _rebuild(conn: Any, table: str, relax: list[str]) -> None:
    """Copy the table into one without NOT NULL on ``relax`` (``error`` FALSE
    as NULL), keeping every column, row and index."""
    qualified = q(table)
    info = conn.execute(f"PRAGMA table_info({qualified})").fetchall()
    indexes = [
        r[0]
        for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    ]
    defs = []
    for _cid, name, declared, notnull, default, _pk in info:
        d = f"{q(name)} {declared}"
        if notnull and name not in relax:
            d += " NOT NULL"
        if default is not None:
            d += f" DEFAULT {default}"
        defs.append(d)
    key = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
    if key:
        defs.append(f"PRIMARY KEY ({', '.join(q(c) for c in key)})")
    new = q(_sql.derived_name(table, "v3"))
    conn.execute(f"DROP TABLE IF EXISTS {new}")
    conn.execute(f"CREATE TABLE {new} ({', '.join(defs)})")
    names = [r[1] for r in info]
    select = ", ".join('NULLIF("error", 0)' if n == "error" else q(n) for n in names)
    conn.execute(
        f"INSERT INTO {new} ({', '.join(q(n) for n in names)}) SELECT {select} FROM {qualified}"
    )
    conn.execute(f"DROP TABLE {qualified}")
    conn.execute(f"ALTER TABLE {new} RENAME TO {qualified}")
    for sql in indexes:
        conn.execute(sql)


def _ensure_unique_event_id(conn: Any, table: str) -> None:
    """``ON CONFLICT(event_id)`` needs a unique index on exactly event_id."""
    for _, name, unique, *_ in conn.execute(f"PRAGMA index_list({q(table)})").fetchall():
        cols = [r[2] for r in conn.execute(f"PRAGMA index_info({q(name)})").fetchall()]
        if unique and cols == list(_sql_ddl.PRIMARY_KEY):
            return
    conn.execute(
        f"CREATE UNIQUE INDEX {q(_sql.derived_name(table, 'event_id'))} ON {q(table)} (event_id)"
    )


def _columns(conn: Any, qualified: str) -> dict[str, str]:
    return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({qualified})").fetchall()}


def _meta(conn: Any, table: str) -> tuple[int | None, dict[str, str]]:
    meta = q(_sql_ddl.META_TABLE)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {meta} (table_name TEXT PRIMARY KEY, "
        "schema_version INTEGER NOT NULL, updated_at TEXT NOT NULL, extensions TEXT)"
    )
    if "extensions" not in _columns(conn, meta):  # a meta table of an older llamonitor
        conn.execute(f"ALTER TABLE {meta} ADD COLUMN extensions TEXT")
    row = conn.execute(
        f"SELECT schema_version, extensions FROM {meta} WHERE table_name = ?", (table,)
    ).fetchone()
    if row is None:
        return None, {}
    return row[0], _sql_ddl.recorded_extensions(row[1])


def _record(conn: Any, table: str, extensions: str) -> None:
    conn.execute(
        f"INSERT INTO {q(_sql_ddl.META_TABLE)} (table_name, schema_version, updated_at, "
        "extensions) VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now'), ?) "
        "ON CONFLICT(table_name) DO UPDATE SET schema_version = excluded.schema_version, "
        "updated_at = excluded.updated_at, extensions = excluded.extensions",
        (table, SCHEMA_VERSION, extensions),
    )


def add_columns(conn: Any, table: str, fields: list[pa.Field]) -> None:
    """Add the extension columns a batch brings and record them, in the
    caller's ``BEGIN IMMEDIATE`` transaction."""
    have = _columns(conn, q(table))
    for f in fields:
        if f.name not in have:
            conn.execute(f"ALTER TABLE {q(table)} ADD COLUMN {q(f.name)} {sqlite_type(f)}")
    _, recorded = _meta(conn, table)
    _record(conn, table, _sql_ddl.extensions_text(recorded, fields))
    logger.info("llamonitor: %s: added the column(s) %s", table, ", ".join(f.name for f in fields))
