"""The rows of the file stores as DuckDB table expressions (*relations*):
Parquet files (ours of every schema version, and the original system's,
normalised) and JSON Lines. A :data:`Relation` is the SQL of a table
expression and its ``?`` parameters; :class:`~llamonitor.storage._duckdb.DuckDBQuery`
puts it where a query says ``{rel}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamonitor.schema._columns import SCHEMA
from llamonitor.storage._layout import ForeignFile, split_by_writer

Relation = tuple[str, list[Any]]
"""The SQL of a table expression and its ``?`` parameters."""


_DUCK_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}


def _empty_schema_sql() -> str:
    cols = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[str(f.type)]}) AS "{f.name}"' for f in SCHEMA)
    return f"SELECT {cols} WHERE false"


_EMPTY_SCHEMA_SQL = _empty_schema_sql()


def parquet_relation(files: Sequence[str | Path]) -> Relation | None:
    """``read_parquet`` over ``files`` (``None`` when there are none).

    Files of an older schema version lack the newer columns: the union with an
    empty table of the current schema reads them as nulls, and their ``error``
    FALSE as NULL (schema version 3). Files the original system wrote (see
    :func:`~llamonitor.storage._layout.split_by_writer`) are read apart and
    normalised: timestamps to UTC, ``error`` (its message) into
    ``error_message`` and ``error`` TRUE or NULL, counts to integers.
    """
    if not files:
        return None
    ours, foreign = split_by_writer([Path(f) for f in files])
    parts: list[str] = []
    params: list[Any] = []
    if ours:
        parts.append(
            "SELECT * REPLACE (NULLIF(error, false) AS error) FROM read_parquet(?, "
            "union_by_name = true, hive_partitioning = false)"
        )
        params.append([str(f) for f in ours])
    for aware in (False, True):
        group = [f for f in foreign if f.aware is aware]
        if group:
            parts.append(_foreign_sql(group))
            params.append([str(f.path) for f in group])
    return "(" + " UNION ALL BY NAME ".join([*parts, _EMPTY_SCHEMA_SQL]) + ")", params


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_BASE_TYPES = {f.name: _DUCK_TYPES[str(f.type)] for f in SCHEMA}
_PANDAS_INDEX = "__index_level_0__"  # the original wrote its DataFrame's index too


def _foreign_sql(files: Sequence[ForeignFile]) -> str:
    """The original system's files as our columns (their other columns kept)."""
    columns = list(dict.fromkeys(c for f in files for c in f.columns))
    replace = []
    for name in columns:
        col = _quote(name)
        if name == "timestamp":
            expr = (
                f"CAST({col} AS TIMESTAMPTZ)"
                if files[0].aware
                else f"timezone('UTC', CAST({col} AS TIMESTAMP))"  # naive: UTC (utcnow)
            )
        elif name == "error":
            expr = f"CASE WHEN {col} IS NULL THEN NULL ELSE TRUE END"
        elif name in _BASE_TYPES:
            expr = f"CAST({col} AS {_BASE_TYPES[name]})"
        elif name in ("text_custom_metrics", "image_custom_metrics"):
            expr = f"CAST({col} AS VARCHAR)"
        else:
            continue
        replace.append(f"{expr} AS {col}")
    sql = "SELECT *"
    if _PANDAS_INDEX in columns:
        sql += f" EXCLUDE ({_quote(_PANDAS_INDEX)})"
    if replace:
        sql += f" REPLACE ({', '.join(replace)})"
    if "error" in columns and "error_message" not in columns:
        sql += ", CAST(error AS VARCHAR) AS error_message"  # the original's error is the message
    return sql + " FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"


def jsonl_relation(path: str | Path) -> Relation | None:
    """``read_json`` over one JSON Lines file written by ``JSONLBackend``.

    Column types come from the Arrow schema (not sniffed), so a file where
    some keys are always null still reads with the right types.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return None
    except OSError:
        return None
    columns = ", ".join(
        f"'{f.name}': '{'JSON' if f.name == 'custom_attributes' else _DUCK_TYPES[str(f.type)]}'"
        for f in SCHEMA
    )
    sql = (
        "(SELECT * REPLACE (CAST(custom_attributes AS VARCHAR) AS custom_attributes, "
        "NULLIF(error, false) AS error) "
        f"FROM read_json(?, format = 'newline_delimited', columns = {{{columns}}}))"
    )
    return sql, [str(p)]
