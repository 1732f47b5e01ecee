"""The ClickHouse span table: its definition derived from the one schema, its
meta rows, and its migration (added columns).

- Types: each Arrow field of :data:`~llamonitor.schema._columns.SCHEMA` maps
  to a ClickHouse type (``Nullable(...)`` when the field is nullable). The
  server of Debian bookworm (18.16) has no ``DateTime64``, so a timestamp is
  two columns: ``timestamp DateTime('UTC')`` (seconds: what partitions, orders and
  reads well in plain SQL) and ``timestamp_us UInt32`` (the microseconds
  within that second). A boolean is ``UInt8`` (18.16 has no ``Bool``).
- Engine: ``ReplacingMergeTree`` partitioned by ``toYYYYMM(timestamp)``,
  ordered by :data:`ORDER_BY`. A redelivered span has the same ``event_id``
  and so the same sorting key (trace, start time, event id) and partition: the
  merges keep one copy, and every read says ``FINAL``, so a copy not merged
  away yet is never counted twice.
- Meta: :data:`~llamonitor.storage._sql_ddl.META_TABLE`, a
  ``ReplacingMergeTree(updated_at)`` keyed by ``table_name``, holds the schema
  version and the extension columns (metric groups) of each span table, as in
  the other SQL stores; the latest record is the greatest
  ``(updated_at, version)``: ``updated_at`` is a second, ``version`` strictly
  increasing. The extension columns recorded are a hint: the query side reads
  the table's own columns (``system.columns``), so two writers adding columns
  at once lose none.
- Migration: :func:`~llamonitor.storage._sql_ddl.plan_migration` decides; the
  missing columns are added (``ALTER TABLE ... ADD COLUMN``, nullable), the
  columns NOT NULL before schema version 3 become ``Nullable``
  (``MODIFY COLUMN``), and before version 3 ``error`` 0 becomes NULL (a
  mutation, ``ALTER TABLE ... UPDATE``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema import _extensions
from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import _sql, _sql_ddl

logger = logging.getLogger("llamonitor.storage.clickhouse")

ORDER_BY = ("trace_id", "timestamp", "event_id")
"""The sorting key: ``llamonitor trace`` and the API's trace view read one
trace (a range of the primary index); reports read whole months (partitions).
It holds ``event_id``, so it is the identity the merges deduplicate on."""

MICROS_SUFFIX = "_us"
"""``timestamp_us``: the microseconds of ``timestamp`` within its second."""

_TYPES = {
    "string": "String",
    "int64": "Int64",
    "int32": "Int32",
    "float64": "Float64",
    "boolean": "UInt8",
    "timestamp": "DateTime('UTC')",
    "binary": "String",
}
_ACCEPTS = {
    "string": ("String", "FixedString"),
    "int64": ("Int64",),
    "int32": ("Int32", "Int64"),
    "float64": ("Float64",),
    "boolean": ("UInt8", "Int8"),
    "timestamp": ("DateTime",),
    "binary": ("String",),
}


MAX_DATETIME = 2**32 - 1
"""The last second a ``DateTime`` holds (unsigned 32-bit seconds: 1970 to 2106)."""


def out_of_range(column: str) -> str:
    """Why a row whose ``column`` a ``DateTime`` cannot hold is refused."""
    return f"{column}: outside ClickHouse's DateTime range (1970-01-01 to 2106-02-07)"


def split_times(col: pa.ChunkedArray | pa.Array) -> tuple[Any, Any]:
    """UTC seconds and the microseconds within each second (numpy ``int64``
    arrays; a null time is 0 and 0: see ``col.is_valid()``). ``col`` is a
    timestamp in microseconds."""
    us = pc.fill_null(col.cast(pa.int64()), 0)
    values = np.asarray(us.to_numpy(zero_copy_only=False), np.int64)
    return values // 1_000_000, values % 1_000_000


def outside(col: pa.ChunkedArray | pa.Array) -> Any:
    """A numpy mask: the rows whose (non-null) time a ``DateTime`` cannot hold."""
    seconds, _ = split_times(col)
    valid = np.asarray(pc.fill_null(col.is_valid(), False).to_numpy(zero_copy_only=False), bool)
    return valid & ((seconds < 0) | (seconds > MAX_DATETIME))


def time_columns(col: pa.ChunkedArray | pa.Array) -> tuple[list[Any], list[int]]:
    """A timestamp as the two columns of an ``INSERT``: epoch seconds (what
    the driver takes for a ``DateTime``; ``None`` for a null time) and the
    microseconds within them (0 for a null time)."""
    seconds, micros = split_times(col)
    out: list[Any] = seconds.tolist()
    if col.null_count:
        valid = col.is_valid().to_pylist()
        out = [s if v else None for s, v in zip(out, valid, strict=True)]
    return out, micros.tolist()


def check_type(f: pa.Field) -> None:
    """Raise ``TypeError`` unless ``f`` has a ClickHouse type here (see
    :func:`clickhouse_type`) and, if a time, is in microseconds."""
    _kind(f.type)
    if pa.types.is_timestamp(f.type) and f.type.unit != "us":
        raise TypeError(f"{f.name}: a timestamp must be in microseconds, not {f.type}")


_MICROS_COLUMNS = frozenset(f.name + MICROS_SUFFIX for f in SCHEMA if pa.types.is_timestamp(f.type))


def usable_column(name: str) -> bool:
    """Whether an extension column may be added and read: an identifier (as
    in the other SQL stores), so no ``%`` reaches the driver's parameter
    substitution, which every query with parameters goes through; and not
    the microseconds column of a schema timestamp (``timestamp_us``)."""
    return _sql._IDENTIFIER.match(name) is not None and name not in _MICROS_COLUMNS


def q(name: str) -> str:
    """``name`` quoted as a ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _kind(t: pa.DataType) -> str:
    for kind, test in (
        ("string", pa.types.is_string),
        ("int64", pa.types.is_int64),
        ("int32", pa.types.is_int32),
        ("float64", pa.types.is_float64),
        ("boolean", pa.types.is_boolean),
        ("timestamp", pa.types.is_timestamp),
        ("binary", pa.types.is_binary),
    ):
        if test(t):
            return kind
    raise TypeError(
        f"no ClickHouse type for {t} (string, int64, int32, float64, bool, timestamp, binary)"
    )


def clickhouse_type(f: pa.Field) -> str:
    """The column type a field gets in a new table (``Nullable(...)`` if nullable)."""
    base = _TYPES[_kind(f.type)]
    return f"Nullable({base})" if f.nullable else base


def base_type(declared: str) -> str:
    """``Int64`` for ``Nullable(Int64)``, ``FixedString`` for ``FixedString(16)``."""
    m = re.fullmatch(r"Nullable\((.*)\)", declared.strip())
    inner = m.group(1) if m else declared.strip()
    return inner.split("(", 1)[0]


def accepts(declared: str, f: pa.Field) -> bool:
    """Whether an existing column of type ``declared`` holds ``f``'s values."""
    return base_type(declared) in _ACCEPTS[_kind(f.type)]


def column_defs(fields: Iterable[pa.Field]) -> list[str]:
    """Each field's column(s): a timestamp is followed by its microseconds."""
    defs = []
    for f in fields:
        defs.append(f"{q(f.name)} {clickhouse_type(f)}")
        if pa.types.is_timestamp(f.type):
            defs.append(f"{q(f.name + MICROS_SUFFIX)} UInt32")
    return defs


def create_sql(qualified: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(column_defs(SCHEMA))}) "
        f"ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM({q('timestamp')}) "
        f"ORDER BY ({', '.join(q(c) for c in ORDER_BY)})"
    )


Execute = Callable[..., Any]
"""``execute(sql, params=None)`` -> rows: the driver client's ``execute``."""


def columns(execute: Execute, database: str, table: str) -> dict[str, str]:
    """The table's columns (name -> type), ``{}`` if there is no such table."""
    rows = execute(
        "SELECT name, type FROM system.columns WHERE database = %(d)s AND table = %(t)s",
        {"d": database, "t": table},
    )
    return {str(n): str(t) for n, t in rows}


def meta(execute: Execute, database: str) -> str:
    """The meta table (created if missing, ``version`` added to one without it)."""
    qualified = f"{q(database)}.{q(_sql_ddl.META_TABLE)}"
    execute(
        f"CREATE TABLE IF NOT EXISTS {qualified} (table_name String, schema_version UInt32, "
        "updated_at DateTime, extensions String, version UInt64) "
        "ENGINE = ReplacingMergeTree(updated_at) ORDER BY table_name"
    )
    if "version" not in columns(execute, database, _sql_ddl.META_TABLE):
        add_column(
            execute,
            database,
            _sql_ddl.META_TABLE,
            "version",
            f"ALTER TABLE {qualified} ADD COLUMN version UInt64",
        )
    return qualified


# The latest record: updated_at (a second) first, so a record of an earlier
# llamonitor (version 0) written later still wins; then the version, strictly
# increasing, for the records within one second.
_LATEST = "(updated_at, version)"


def read_meta(execute: Execute, database: str, table: str) -> tuple[int | None, dict[str, str]]:
    """The span table's recorded schema version and extension columns (the
    latest meta row; ``(None, {})`` when there is none). Call :func:`meta` first."""
    qualified = f"{q(database)}.{q(_sql_ddl.META_TABLE)}"
    rows = execute(
        f"SELECT argMax(schema_version, {_LATEST}), argMax(extensions, {_LATEST}) "
        f"FROM {qualified} WHERE table_name = %(t)s GROUP BY table_name",
        {"t": table},
    )
    if not rows:
        return None, {}
    return int(rows[0][0]), _sql_ddl.recorded_extensions(rows[0][1])


def _record(execute: Execute, qualified_meta: str, table: str, extensions: str) -> None:
    # updated_at has a resolution of a second: it is never earlier than the
    # latest record's, and the version is above every earlier record's (and
    # the clock's microseconds, so two writers racing rarely tie).
    execute(
        f"INSERT INTO {qualified_meta} (table_name, schema_version, updated_at, extensions, "
        f"version) SELECT %(t)s, %(v)s, greatest(now(), (SELECT max(updated_at) FROM "
        f"{qualified_meta} WHERE table_name = %(t)s)), %(e)s, greatest(toUInt64(%(now)s), "
        f"(SELECT max(version) + 1 FROM {qualified_meta} WHERE table_name = %(t)s))",
        {"t": table, "v": SCHEMA_VERSION, "e": extensions, "now": time.time_ns() // 1000},
    )


def setup(execute: Execute, database: str, table: str, label: str) -> set[str]:
    """Create or migrate the span table and its meta row.

    Returns:
        The table's columns.

    Raises:
        ConfigurationError: the table cannot be a span table (see
            :func:`~llamonitor.storage._sql_ddl.plan_migration`).
    """
    qualified = f"{q(database)}.{q(table)}"
    qualified_meta = meta(execute, database)
    version, recorded = read_meta(execute, database, table)
    existing = columns(execute, database, table)
    if not existing:
        execute(create_sql(qualified))
        logger.info("llamonitor: created %s (schema version %d)", label, SCHEMA_VERSION)
    else:
        plan = _sql_ddl.plan_migration(label, existing, accepts, version)
        if plan.original:
            raise ConfigurationError(
                "storage.table_name",
                f"{label} looks like a llamonitor-async table (error holds the message), "
                "which never was a ClickHouse table: choose another table_name",
            )
        add_missing(execute, database, table, existing, plan.add)
        for name in plan.relax:
            declared = existing.get(name, "")
            if declared and not declared.startswith("Nullable("):
                execute(f"ALTER TABLE {qualified} MODIFY COLUMN {q(name)} Nullable({declared})")
        if plan.null_false_errors:
            execute(f"ALTER TABLE {qualified} UPDATE {q('error')} = NULL WHERE {q('error')} = 0")
        plan.log(logger, label)
    have = set(columns(execute, database, table))
    kept = {k: v for k, v in recorded.items() if k in have}
    if version != SCHEMA_VERSION or kept != recorded:
        _record(execute, qualified_meta, table, _sql_ddl.extensions_text(kept, ()))
    return have


def add_column(execute: Execute, database: str, table: str, name: str, sql: str) -> None:
    """Run ``sql`` (an ``ADD COLUMN``; 18.16 has no ``IF NOT EXISTS``): a
    concurrent writer that added the column first is no failure."""
    try:
        execute(sql)
    except Exception:
        if name not in columns(execute, database, table):
            raise


def add_missing(
    execute: Execute, database: str, table: str, have: dict[str, str], fields: list[pa.Field]
) -> None:
    """``ADD COLUMN`` each field (nullable) the table lacks."""
    qualified = f"{q(database)}.{q(table)}"
    for f in fields:
        if f.name not in have:
            for d, name in zip(column_defs([f.with_nullable(True)]), _names(f), strict=True):
                add_column(
                    execute, database, table, name, f"ALTER TABLE {qualified} ADD COLUMN {d}"
                )


def _names(f: pa.Field) -> list[str]:
    return [f.name, f.name + MICROS_SUFFIX] if pa.types.is_timestamp(f.type) else [f.name]


def add_columns(execute: Execute, database: str, table: str, fields: list[pa.Field]) -> set[str]:
    """Add the extension columns (metric groups) a batch brings, and record
    them (a hint: the reads take the table's columns).

    Returns:
        The table's columns.
    """
    add_missing(execute, database, table, columns(execute, database, table), fields)
    qualified_meta = meta(execute, database)
    _, recorded = read_meta(execute, database, table)
    _record(execute, qualified_meta, table, _sql_ddl.extensions_text(recorded, fields))
    logger.info("llamonitor: %s: added the column(s) %s", table, ", ".join(f.name for f in fields))
    return set(columns(execute, database, table))


_READ_KINDS = (
    (("Int8", "Int16", "Int32", "Int64", "UInt16", "UInt32", "UInt64"), "int64"),
    (("Float32", "Float64"), "float64"),
    (("UInt8",), "bool"),
    (("String", "FixedString"), "string"),
)


def extension_fields(found: dict[str, str]) -> list[pa.Field]:
    """The extension columns (metric groups) of a table (``found``: name ->
    type, its real columns), as they are read: the kind from the ClickHouse
    type (a boolean is ``UInt8``), ``json`` from the registry. A column whose
    name is not an identifier, or of a type no kind reads, is left out."""
    base = {*SCHEMA.names, *(n + MICROS_SUFFIX for n in SCHEMA.names)}
    out = []
    for name, declared in sorted(found.items()):
        if name in base or not usable_column(name):
            continue
        kind = next((k for types, k in _READ_KINDS if base_type(declared) in types), None)
        if kind is None:
            continue
        if kind == "string" and _extensions.is_json(name):
            kind = "json"
        out.append(_sql_ddl.extension_field(name, kind))
    return out
