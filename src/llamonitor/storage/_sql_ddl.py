"""The span table's definition and its versioned migration, for every SQL store.

The table is derived from :data:`~llamonitor.schema._columns.SCHEMA` (each
dialect maps an Arrow field to a column type, see :mod:`._sql_types`; nothing
lists columns). A small meta table records the schema version of each span
table and its extension columns (metric groups, added when a batch brings
one). :func:`plan_migration` says what brings an existing table to the
current version: the missing columns (nullable); before version 3, ``error``
FALSE becomes NULL; a table of the original system (llamonitor-async) is
converted in place (its ``error`` message moves to ``error_message``, its
types to ours). A table with an incompatible column or a newer version is a
clear error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from llamonitor.schema import _extensions
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


ORIGINAL_VERSION = 0
"""The version a table of the original system (llamonitor-async) is taken to be at."""

RELAXED_IN_V3 = ("duration_ms", "error")
"""Columns NOT NULL before schema version 3 (``error`` is TRUE or NULL since)."""


@dataclass
class Migration:
    """The steps that bring an existing span table to :data:`SCHEMA_VERSION`.

    Attributes:
        from_version: the table's version; :data:`ORIGINAL_VERSION` for the
            original system's ``metric_events`` (its ``error`` is the message).
        add: fields to add, nullable, in schema order (``error`` is among them
            for the original's table, whose ``error`` becomes ``error_message``).
        retype: the original's columns of ours to convert to our type
            (``uuid``, naive timestamps, 32-bit integers, short ``VARCHAR``s).
        relax: columns whose NOT NULL goes (``error`` and ``duration_ms``
            before version 3; the original's ``schema_version``, which we
            do not write).
    """

    from_version: int
    add: list[pa.Field] = field(default_factory=list)
    retype: list[pa.Field] = field(default_factory=list)
    relax: list[str] = field(default_factory=list)

    @property
    def original(self) -> bool:
        """The table is the original system's: rename ``error`` to
        ``error_message``, then set ``error`` TRUE where it is not null."""
        return self.from_version == ORIGINAL_VERSION

    @property
    def null_false_errors(self) -> bool:
        """``UPDATE ... SET error = NULL WHERE error = FALSE`` (versions 1 and 2)."""
        return ORIGINAL_VERSION < self.from_version < 3

    @property
    def needed(self) -> bool:
        return self.from_version < SCHEMA_VERSION or bool(self.add or self.retype or self.relax)

    def log(self, logger: logging.Logger, label: str) -> None:
        """Say what the migration did (nothing when there was nothing to do)."""
        if self.needed:
            logger.info(
                "llamonitor: migrated %s to schema version %d: %s",
                label,
                SCHEMA_VERSION,
                self.describe(),
            )

    def describe(self) -> str:
        done = []
        if self.original:
            done.append("the llamonitor-async table's error moved to error_message")
        if self.add:
            done.append("added " + ", ".join(f.name for f in self.add))
        if self.retype:
            done.append("converted " + ", ".join(f.name for f in self.retype))
        if self.null_false_errors:
            done.append("error FALSE set to NULL")
        return "; ".join(done) or "nothing to change"


def is_original_table(
    existing: Mapping[str, str], accepts: Callable[[str, pa.Field], bool]
) -> bool:
    """Is this the original system's ``metric_events`` (llamonitor-async):
    a ``schema_version`` column and ``error`` holding the message?"""
    error = existing.get("error")
    return (
        "schema_version" in existing
        and "error_message" not in existing
        and error is not None
        and accepts(error, pa.field("error", pa.string()))
    )


def plan_migration(
    label: str,
    existing: Mapping[str, str],
    accepts: Callable[[str, pa.Field], bool],
    stored_version: int | None,
    narrow: Callable[[str, pa.Field], bool] = lambda _t, _f: False,
) -> Migration:
    """What to change in an existing span table.

    Args:
        label: the table, for messages.
        existing: its columns, name -> the database's type.
        accepts: whether a database type holds a field's values.
        stored_version: the version in the meta table, if any.
        narrow: whether a database type, accepted, is narrower than ours (the
            original's ``VARCHAR(50)``): converted in the original's table only.

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
    if stored_version is None and is_original_table(existing, accepts):
        retype = [
            f
            for f in SCHEMA
            if f.name in existing
            and f.name != "error"
            and (not accepts(existing[f.name], f) or narrow(existing[f.name], f))
        ]
        add = [f.with_nullable(True) for f in SCHEMA if f.name not in existing or f.name == "error"]
        add = [f for f in add if f.name != "error_message"]
        return Migration(ORIGINAL_VERSION, add, retype, ["schema_version"])
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
    add = [f.with_nullable(True) for f in SCHEMA if f.name not in existing]
    version = stored_version if stored_version is not None else (2 if not add else 1)
    relax = list(RELAXED_IN_V3) if version < 3 else []
    return Migration(version, add, [], relax)


def missing_columns(table: pa.Table, have: Iterable[str]) -> list[pa.Field]:
    """The extension columns (metric groups) with values in ``table`` that the
    span table lacks (``have``): added before the batch is written."""
    known = set(have)
    n = table.num_rows
    return [
        f
        for f in table.schema
        if f.name not in known and f.name not in _BASE and table.column(f.name).null_count < n
    ]


_BASE = frozenset(SCHEMA.names)


def recorded_extensions(text: str | None) -> dict[str, str]:
    """The meta table's ``extensions`` (JSON ``{column: kind}``), ``{}`` if unset or bad."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def extensions_text(recorded: Mapping[str, str], added: Iterable[pa.Field]) -> str:
    """``recorded`` with the ``added`` columns, as the meta table keeps it."""
    out = dict(recorded)
    for f in added:
        out[f.name] = extension_kind(f)
    return json.dumps(out, sort_keys=True)


def extension_kind(f: pa.Field) -> str:
    """How an extension column is recorded (``json`` for a metric group's JSON field)."""
    if _extensions.is_json(f.name):
        return "json"
    return _extensions.extensions_of(pa.schema([f])).get(f.name, "string")


def extension_field(name: str, kind: str) -> pa.Field:
    """The Arrow field a recorded extension column is read as."""
    t = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}.get(kind, pa.string())
    return pa.field(name, t, nullable=True)


def same_columns_index(
    wanted: Sequence[tuple[str, bool]], indexes: Iterable[Sequence[str]]
) -> bool:
    """Does an index on the same columns (in order, any direction) exist? The
    original system's tables have their own indexes on the seed's columns: a
    second, identical one would only slow every insert."""
    columns = [c for c, _ in wanted]
    return any(list(ix) == columns for ix in indexes)
