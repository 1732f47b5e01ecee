"""Side tables of the ClickHouse store (scores, metric points): one definition,
its creation and migration, a columnar write and a filtered read.

- Columns: those of the table's Arrow schema, defined as the span table's
  are (:func:`~llamonitor.storage._clickhouse_ddl.column_defs`; a schema of
  another type is refused when the ``SideTable`` is made): ``Nullable(...)``
  where the field is nullable, a boolean ``UInt8``, each timestamp
  ``DateTime('UTC')`` seconds plus ``<name>_us`` (the microseconds; 18.16
  has no ``DateTime64``; 0 for a null time). A table may add a ``version``
  column (``UInt64``, the row's ``timestamp`` in microseconds) for a
  ``ReplacingMergeTree(version)`` that keeps the latest copy of a key.
- The table lives in the database of the span table's connection string.
- Migration, at the first write of a process: ``CREATE TABLE IF NOT EXISTS``,
  then the columns of the schema the table lacks (a table of an older
  llamonitor) are added, nullable; an ``ADD COLUMN`` that failed because
  another process added the column first counts as done (18.16 has no
  ``IF NOT EXISTS`` there), so two processes migrating at once are harmless.
- A row with a time a ``DateTime`` cannot hold (before 1970, after 2106, in
  any of its timestamp columns) is refused alone: the others are written, then
  :class:`~llamonitor.storage.base.RowsRejected` names it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import numpy as np
import pyarrow as pa

from llamonitor.schema._rejected import RowsRejected
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _clickhouse_ddl
from llamonitor.storage._clickhouse_ddl import MICROS_SUFFIX, q
from llamonitor.storage._sql import StoreError

VERSION_COLUMN = "version"
"""The ``ReplacingMergeTree`` version of a table that has one."""

Clause = tuple[str, str, Any]
"""``(column, operator, value)``: a filter pushed into ClickHouse's ``WHERE``
(``None`` values are skipped); a timestamp is compared in whole seconds, so
the caller's own filter makes the exact cut."""


@dataclass(frozen=True)
class SideTable:
    """One side table: its name, Arrow schema and ``ENGINE ...`` clause.

    Raises:
        TypeError: a field of a type the store cannot hold (see
            :func:`~llamonitor.storage._clickhouse_ddl.check_type`), or a
            versioned table without a non-nullable ``timestamp``.
    """

    name: str
    schema: pa.Schema
    what: str
    engine: str
    versioned: bool = False

    def __post_init__(self) -> None:
        for f in self.schema:
            try:
                _clickhouse_ddl.check_type(f)
            except TypeError as exc:
                raise TypeError(f"side table {self.name}: column {f.name}: {exc}") from None
        if self.versioned:
            ts = self.schema.field("timestamp") if "timestamp" in self.schema.names else None
            if ts is None or ts.nullable or not pa.types.is_timestamp(ts.type):
                raise TypeError(f"side table {self.name}: a version needs a non-null timestamp")

    def column_defs(self) -> list[str]:
        """The columns of a new table (a timestamp followed by its microseconds)."""
        defs = _clickhouse_ddl.column_defs(self.schema)
        if self.versioned:
            defs.append(f"{q(VERSION_COLUMN)} UInt64")
        return defs


_created: set[str] = set()
_lock = threading.Lock()


def target(spec: SideTable, storage: StorageConfig) -> Any:
    """The connection and names of ``spec``'s table for ``storage``."""
    from llamonitor.storage.clickhouse import _Target

    t = _Target(storage)
    t.qualified = f"{q(t.database)}.{q(spec.name)}"
    t.label = f"table {t.database}.{spec.name}"
    return t


def create(spec: SideTable, execute: Callable[..., Any], t: Any) -> None:
    """Create ``spec``'s table if missing; add the columns it lacks (nullable)."""
    execute(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(spec.column_defs())}) "
        f"ENGINE = {spec.engine}"
    )
    have = _clickhouse_ddl.columns(execute, t.database, spec.name)
    _clickhouse_ddl.add_missing(execute, t.database, spec.name, have, list(spec.schema))


def write(spec: SideTable, storage: StorageConfig, table: pa.Table) -> None:
    """Insert ``table`` (conformed to ``spec.schema``) as one columnar ``INSERT``.

    Raises:
        RowsRejected: after the others are written, the rows with a time a
            ``DateTime`` cannot hold (in any timestamp column).
        StoreError: the database failed (``transient`` says whether to retry).
        ConfigurationError: a bad connection string or a missing driver.
    """
    t = target(spec, storage)
    reasons: dict[int, list[str]] = {}
    for f in spec.schema:
        if pa.types.is_timestamp(f.type):
            for i in np.flatnonzero(_clickhouse_ddl.outside(table.column(f.name))):
                reasons.setdefault(int(i), []).append(_clickhouse_ddl.out_of_range(f.name))
    refused = sorted(reasons)
    rejected = table.take(pa.array(refused, pa.int64())) if refused else None
    if refused:
        keep = np.ones(table.num_rows, bool)
        keep[refused] = False
        table = table.filter(pa.array(keep))
    if table.num_rows:
        _insert(spec, t, table)
    if rejected is not None:
        raise RowsRejected(rejected, [f"{t.label}: {'; '.join(reasons[i])}" for i in refused])


def _insert(spec: SideTable, t: Any, table: pa.Table) -> None:
    names: list[str] = []
    columns: list[Any] = []
    for f in spec.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            names += [f.name, f.name + MICROS_SUFFIX]
            columns += _clickhouse_ddl.time_columns(col)
            continue
        if pa.types.is_boolean(f.type):
            col = col.cast(pa.uint8())  # 18.16 has no Bool: UInt8
        names.append(f.name)
        columns.append(col.to_pylist())
    if spec.versioned:
        seconds, micros = _clickhouse_ddl.split_times(table.column("timestamp"))
        names.append(VERSION_COLUMN)
        columns.append((seconds * 1_000_000 + micros).tolist())
    sql = f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in names)}) VALUES"
    key = t.secrets.masked + t.qualified
    client: Any = None
    try:
        client = t.client()
        with _lock:
            first = key not in _created
        if first:
            create(spec, client.execute, t)
            with _lock:
                _created.add(key)
        client.execute(sql, columns, columnar=True)
    except (ConfigurationError, StoreError):
        raise
    except Exception as exc:
        if t.kind(exc) == "missing":
            with _lock:
                _created.discard(key)
        raise t.error(f"write {spec.what}", exc) from None
    finally:
        if client is not None:
            client.disconnect()


_OPERATORS = frozenset({"=", ">=", "<", "<="})


def fetch(spec: SideTable, storage: StorageConfig, clauses: Sequence[Clause] = ()) -> pa.Table:
    """The rows matching ``clauses`` (``FINAL`` on a versioned table), a table
    of ``spec.schema``; empty when the table (or its database) does not exist.

    The table is read as it is (its columns in ``system.columns``), as the
    span table's query side does: a nullable column it lacks (a table of an
    older llamonitor, not migrated yet because no writer of this version has
    written) reads as nulls, and a clause on it matches no row.

    Raises:
        StoreError: the database failed, or the table lacks a column that
            cannot be null (it is not such a table).
    """
    t = target(spec, storage)
    client: Any = None
    try:
        client = t.client()
        found = _clickhouse_ddl.columns(client.execute, t.database, spec.name)
        if not found:
            return spec.schema.empty_table()
        sql, params = _select(spec, t, found, clauses)
        if sql is None:
            return spec.schema.empty_table()
        rows = client.execute(sql, params or None, columnar=True)
    except StoreError:
        raise
    except Exception as exc:
        if getattr(exc, "code", None) in _ABSENT_CODES and isinstance(
            exc, t.errors.ServerException
        ):
            return spec.schema.empty_table()  # dropped since system.columns was read
        raise t.error(f"read {spec.what}", exc) from None
    finally:
        if client is not None:
            client.disconnect()
    if not rows:
        return spec.schema.empty_table()
    arrays = []
    for f, values in zip(spec.schema, rows, strict=True):
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(list(values), pa.int64()).cast(f.type))
        elif pa.types.is_binary(f.type):
            arrays.append(pa.array([_bytes(v) for v in values], f.type))
        elif pa.types.is_boolean(f.type):
            arrays.append(pa.array(list(values), pa.uint8()).cast(f.type))
        else:
            arrays.append(pa.array(list(values), f.type))
    return pa.Table.from_arrays(arrays, schema=spec.schema)


_ABSENT_CODES = (60, 81)  # unknown table, unknown database


def _select(
    spec: SideTable, t: Any, found: dict[str, str], clauses: Sequence[Clause]
) -> tuple[str | None, dict[str, Any]]:
    """The ``SELECT`` of ``clauses`` over the table's columns ``found`` and
    its parameters; ``None`` if a clause names a column the table lacks."""
    lacking = [f.name for f in spec.schema if f.name not in found and not f.nullable]
    if lacking:
        raise StoreError(
            f"clickhouse {t.label}: read {spec.what}: the table has no column "
            f"{', '.join(lacking)}: it is not a llamonitor {spec.what} table",
            transient=False,
        )
    exprs: list[str] = []
    for f in spec.schema:
        if f.name not in found:
            exprs.append("NULL")
        elif pa.types.is_timestamp(f.type):
            us = f.name + MICROS_SUFFIX
            micros = f" + {q(us)}" if us in found else ""
            exprs.append(f"toInt64(toUInt32({q(f.name)})) * 1000000{micros}")
        else:
            exprs.append(q(f.name))
    sql = f"SELECT {', '.join(exprs)} FROM {t.qualified}" + (" FINAL" if spec.versioned else "")
    where: list[str] = []
    params: dict[str, Any] = {}
    for i, (column, op, value) in enumerate(clauses):
        if value is None:
            continue
        if op not in _OPERATORS or column not in spec.schema.names:
            raise ValueError(f"not a filter of {spec.name}: {column} {op}")  # pragma: no cover
        if column not in found:
            return None, {}  # null in every row: no comparison holds
        field = spec.schema.field(column)
        if pa.types.is_timestamp(field.type):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            seconds = int(aware.timestamp())  # naive times are UTC, like the store
            op = {"<": "<=", ">=": ">="}.get(op, op)  # whole seconds: keep the edge second
            where.append(f"toUInt32({q(column)}) {op} %(p{i})s")
            params[f"p{i}"] = seconds
        else:
            where.append(f"{q(column)} {op} %(p{i})s")
            params[f"p{i}"] = value
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql, params


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")  # the driver decodes a String that is valid UTF-8
