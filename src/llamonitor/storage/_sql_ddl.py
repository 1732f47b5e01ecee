"""The span table's definition and its versioned migration, for every SQL store.

The table is derived from :data:`~llamonitor.schema._columns.SCHEMA` (each
dialect maps an Arrow field to a column type, see :mod:`._sql_types`; nothing
lists columns). A small meta table records the schema version of each span
table; an older table gets the missing columns (nullable), a table with an
incompatible column or a newer version is a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import pyarrow as pa

from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError

PRIMARY_KEY = ("event_id",)
"""A replayed batch never duplicates a row: inserts skip existing event ids."""

INDEXES: tuple[tuple[str, tuple[tuple[str, bool], ...]], ...] = (
    ("session_ts", (("session_id", False), ("timestamp", True))),
    ("trace_ts", (("trace_id", False), ("timestamp", True))),
    ("parent", (("parent_span_id", False),)),
    ("operation_ts", (("operation_name", False), ("timestamp", True))),
)
"""(name suffix, ((column, descending), ...)) of each index (the seed's four)."""

INDEXED_COLUMNS = frozenset([*PRIMARY_KEY, *(col for _, cols in INDEXES for col, _ in cols)])

META_TABLE = "llamonitor_schema_version"
"""One row per span table: its name and the schema version it was migrated to."""


def column_defs(
    type_of: Callable[[pa.Field], str], quote: Callable[[str], str], fields: Iterable[pa.Field]
) -> list[str]:
    """``"name" TYPE [NOT NULL]`` for each field."""
    return [f"{quote(f.name)} {type_of(f)}{'' if f.nullable else ' NOT NULL'}" for f in fields]


def index_columns(columns: Sequence[tuple[str, bool]], quote: Callable[[str], str]) -> str:
    return ", ".join(f"{quote(c)}{' DESC' if desc else ''}" for c, desc in columns)


def plan_migration(
    label: str,
    existing: Mapping[str, str],
    accepts: Callable[[str, pa.Field], bool],
    stored_version: int | None,
) -> list[pa.Field]:
    """The fields to add to an existing span table (nullable, in schema order).

    Args:
        label: the table, for messages.
        existing: its columns, name -> the database's type.
        accepts: whether a database type holds a field's values.
        stored_version: the version in the meta table, if any.

    Raises:
        ConfigurationError: a newer schema version, a column of an
            incompatible type, or not a span table at all (naming
            ``storage.table_name``).
    """
    if stored_version is not None and stored_version > SCHEMA_VERSION:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} has schema version {stored_version}, newer than this llamonitor "
            f"knows ({SCHEMA_VERSION}): upgrade llamonitor to write to it",
        )
    lacking_v1 = [name for name in COLUMNS_V1 if name not in existing]
    if lacking_v1:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} exists but is not a llamonitor span table (it has no "
            f"{', '.join(lacking_v1[:5])}{', ...' if len(lacking_v1) > 5 else ''} column): "
            "choose another table_name",
        )
    wrong = [
        f"{f.name} is {existing[f.name]} (expected {f.type})"
        for f in SCHEMA
        if f.name in existing and not accepts(existing[f.name], f)
    ]
    if wrong:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} has columns of an incompatible type: {'; '.join(wrong)}",
        )
    return [f.with_nullable(True) for f in SCHEMA if f.name not in existing]
