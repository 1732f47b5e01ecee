"""The MySQL/MariaDB store's query side (pymysql, unbuffered): the filters go
into MySQL's ``WHERE``, rows stream to DuckDB in chunks.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from llamonitor.storage import _sql_query
from llamonitor.storage._duckdb import Filters
from llamonitor.storage._mysql_target import Target, q
from llamonitor.storage._sql import StoreError
from llamonitor.storage._sql_ddl import META_TABLE, recorded_extensions


def _decode(field: pa.Field, values: list[Any]) -> pa.Array:
    if pa.types.is_boolean(field.type):
        return pa.array(values, pa.int64()).cast(pa.bool_())
    return pa.array(values, type=field.type)  # naive DATETIMEs are UTC


_PUSHDOWN = _sql_query.Pushdown(
    quote=q,
    placeholder=lambda _i: "%s",
    timestamp=lambda t: t.replace(tzinfo=None),
    original={
        "error": "CASE WHEN `error` IS NULL THEN NULL ELSE 1 END",
        "error_message": "`error`",
    },
)


def open_reader(t: Target, filters: Filters) -> pa.RecordBatchReader | None:
    """A reader of the rows ``filters`` select, or ``None`` if the table is
    not there.

    Raises:
        StoreError: connecting or the query failed (scrubbed).
    """
    pymysql = t.pymysql
    kwargs = {**t.connect_kwargs, "database": t.connect_kwargs["db"]}
    del kwargs["db"]
    conn: Any = None
    error: StoreError | None = None
    try:
        conn = pymysql.connect(**kwargs, autocommit=True, cursorclass=pymysql.cursors.SSCursor)
        cur = conn.cursor()
        schema_sql = "%s" if t.schema else "DATABASE()"
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = %s",
            (t.schema, t.table) if t.schema else (t.table,),
        )
        present = [r[0] for r in cur.fetchall()]
        if not present:
            conn.close()
            return None
        try:
            cur.execute(
                f"SELECT extensions FROM {t.qualify(META_TABLE)} WHERE table_name = %s",
                (t.table,),
            )
            found = cur.fetchall()
        except pymysql.err.MySQLError:  # no meta table, or an older llamonitor's
            found = []
        recorded = recorded_extensions(found[0][0] if found else None)
        extra = _sql_query.extension_fields(recorded, present)
        sql, params = _PUSHDOWN.select(t.qualified, present, filters, extra)
        cur.execute(sql, params)
        first = cur.fetchmany(_sql_query.CHUNK_ROWS)
    except Exception as exc:
        error = t.error("query", exc)
    if error is not None:
        if conn is not None:
            conn.close()
        raise error
    return _sql_query.stream(
        first,
        lambda: cur.fetchmany(_sql_query.CHUNK_ROWS),
        conn.close,
        _decode,
        t.secrets.scrub,
        _sql_query.read_schema(extra),
    )
