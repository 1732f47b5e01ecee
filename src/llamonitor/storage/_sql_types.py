"""The column types of the SQL dialects, in one place.

For each dialect (PostgreSQL, MySQL/MariaDB, SQLite): the column type a
field of :data:`~llamonitor.schema._columns.SCHEMA` gets in a new table, and
whether a column an existing table already has accepts the field's values
(the migration's check, see :func:`~llamonitor.storage._sql_ddl.plan_migration`).
A new Arrow type in the schema is one row in each map below.
"""

from __future__ import annotations

import pyarrow as pa

from llamonitor.storage._sql_ddl import INDEXED_COLUMNS

JSON_COLUMNS = frozenset({"custom_attributes"})
"""String columns holding JSON text (Arrow has no JSON type here); a dialect
may store them in a JSON type that keeps the text as written."""


def _kind(field: pa.Field, dialect: str) -> str:
    t = field.type
    if pa.types.is_string(t):
        return "string"
    if pa.types.is_int64(t):
        return "int64"
    if pa.types.is_int32(t):
        return "int32"
    if pa.types.is_float64(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_binary(t):
        return "binary"
    raise TypeError(f"no {dialect} type for {field}")  # pragma: no cover - schema is fixed


# -- PostgreSQL ---------------------------------------------------------------

_POSTGRES = {
    "string": "text",
    "int64": "bigint",
    "float64": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamp with time zone",
    "int32": "integer",
    "binary": "bytea",
}
_POSTGRES_ACCEPTS = {
    "string": ("text", "character varying", "character", "json", "jsonb"),
    "int64": ("bigint",),
    "float64": ("double precision",),
    "boolean": ("boolean",),
    "timestamp": ("timestamp with time zone",),
    "int32": ("integer", "bigint"),
    "binary": ("bytea",),
}


def postgres_type(field: pa.Field) -> str:
    """The PostgreSQL type of a schema field."""
    kind = _kind(field, "PostgreSQL")
    if kind == "string" and field.name in JSON_COLUMNS:
        return "json"
    return _POSTGRES[kind]


def postgres_accepts(db_type: str, field: pa.Field) -> bool:
    """Does a column of ``db_type`` (``format_type``'s text) hold ``field``?"""
    return db_type.split("(")[0].strip() in _POSTGRES_ACCEPTS[_kind(field, "PostgreSQL")]


def postgres_narrow(db_type: str, field: pa.Field) -> bool:
    """A ``character varying(n)`` or ``character(n)`` column where ours is ``text``."""
    return _kind(field, "PostgreSQL") == "string" and db_type.startswith("character")


# -- MySQL / MariaDB ------------------------------------------------------------

_MYSQL = {
    "string": "LONGTEXT",
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "DATETIME(6)",
    "int32": "INT",
    "binary": "LONGBLOB",
}
_MYSQL_ACCEPTS = {
    "string": ("varchar", "char", "text", "tinytext", "mediumtext", "longtext", "json"),
    "int64": ("bigint",),
    "float64": ("double",),
    "boolean": ("tinyint", "boolean", "bool"),
    "int32": ("int", "bigint"),
    "binary": ("blob", "mediumblob", "longblob", "varbinary"),
}


def mysql_type(field: pa.Field) -> str:
    """The MySQL column type of a schema field."""
    kind = _kind(field, "MySQL")
    if kind == "string" and field.name in INDEXED_COLUMNS:
        # Indexed text must be VARCHAR (255 utf8mb4 characters fit InnoDB's key limit).
        return "VARCHAR(255)"
    return _MYSQL[kind]


def mysql_accepts(column_type: str, field: pa.Field) -> bool:
    """Does a column of ``column_type`` (``information_schema``'s
    ``COLUMN_TYPE``) hold ``field``?"""
    base = column_type.lower().split("(")[0].split()[0]
    kind = _kind(field, "MySQL")
    if kind == "timestamp":
        return column_type.lower().startswith("datetime(6)")  # fewer digits lose microseconds
    return base in _MYSQL_ACCEPTS[kind]


def mysql_narrow(column_type: str, field: pa.Field) -> bool:
    """A ``CHAR(n)``, a shorter ``VARCHAR`` or ``TEXT`` where ours is longer."""
    if _kind(field, "MySQL") != "string":
        return False
    base = column_type.lower().split("(")[0].split()[0]
    ours = mysql_type(field).lower()
    return base in ("char", "varchar", "tinytext", "text", "mediumtext") and (
        column_type.lower().split()[0] != ours
    )


# -- SQLite ---------------------------------------------------------------------

_SQLITE = {
    "string": "TEXT",
    "int64": "INTEGER",
    "float64": "REAL",
    "boolean": "INTEGER",
    "timestamp": "TEXT",
    "int32": "INTEGER",
    "binary": "BLOB",
}


def sqlite_type(field: pa.Field) -> str:
    """The SQLite column type of a schema field."""
    return _SQLITE[_kind(field, "SQLite")]


def _affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (section 3.1 of its docs)."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not d or "BLOB" in d:
        return "BLOB"
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def sqlite_accepts(declared: str, field: pa.Field) -> bool:
    """Does a column declared ``declared`` hold ``field`` (by its affinity)?"""
    return _affinity(declared) == sqlite_type(field)
