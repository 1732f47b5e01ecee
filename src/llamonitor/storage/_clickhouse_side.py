"""Side tables of the ClickHouse store (scores, metric points): one definition,
its creation and migration, a columnar write and a filtered read.

- Columns: those of the table's Arrow schema, typed as the span table's are
  (:func:`~llamonitor.storage._clickhouse_ddl.clickhouse_type`); each
  timestamp is ``DateTime('UTC')`` seconds plus ``<name>_us`` (the
  microseconds; 18.16 has no ``DateTime64``). A table may add a ``version``
  column (``UInt64``, the row's ``timestamp`` in microseconds) for a
  ``ReplacingMergeTree(version)`` that keeps the latest copy of a key.
- The table lives in the database of the span table's connection string.
- Migration, at the first write of a process: ``CREATE TABLE IF NOT EXISTS``,
  then the columns of the schema the table lacks (a table of an older
  llamonitor) are added, nullable; an ``ADD COLUMN`` that failed because
  another process added the column first counts as done (18.16 has no
  ``IF NOT EXISTS`` there), so two processes migrating at once are harmless.
- A row whose time a ``DateTime`` cannot hold (before 1970, after 2106) is
  refused alone: the others are written, then
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
import pyarrow.compute as pc

from llamonitor.schema._rejected import RowsRejected
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _clickhouse_ddl
from llamonitor.storage._clickhouse_ddl import MICROS_SUFFIX, clickhouse_type, q
from llamonitor.storage._sql import StoreError

VERSION_COLUMN = "version"
"""The ``ReplacingMergeTree`` version of a table that has one."""

_MAX_SECONDS = 2**32 - 1  # DateTime is unsigned 32-bit seconds: 1970 to 2106
_OUT_OF_RANGE = "its timestamp is outside 1970..2106, what a ClickHouse DateTime holds"

Clause = tuple[str, str, Any]
"""``(column, operator, value)``: a filter pushed into ClickHouse's ``WHERE``
(``None`` values are skipped); a timestamp is compared in whole seconds, so
the caller's own filter makes the exact cut."""


@dataclass(frozen=True)
class SideTable:
    """One side table: its name, Arrow schema and ``ENGINE ...`` clause."""

    name: str
    schema: pa.Schema
    what: str
    engine: str
    versioned: bool = False

    def column_defs(self) -> list[str]:
        defs: list[str] = []
        for f in self.schema:
            if pa.types.is_timestamp(f.type):
                defs += [f"{q(f.name)} DateTime('UTC')", f"{q(f.name + MICROS_SUFFIX)} UInt32"]
            else:
                defs.append(f"{q(f.name)} {clickhouse_type(f)}")
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
    """Create ``spec``'s table if missing; add the columns it lacks."""
    execute(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(spec.column_defs())}) "
        f"ENGINE = {spec.engine}"
    )
    have = _clickhouse_ddl.columns(execute, t.database, spec.name)
    for f in spec.schema:
        if f.name in have:
            continue
        defs = SideTable(spec.name, pa.schema([f.with_nullable(True)]), spec.what, "").column_defs()
        for d in defs:
            name = d.split("` ", 1)[0].lstrip("`")
            _clickhouse_ddl._add_column(
                execute, t.database, spec.name, name, f"ALTER TABLE {t.qualified} ADD COLUMN {d}"
            )


def _split(column: pa.ChunkedArray) -> tuple[Any, Any]:
    """UTC seconds and the microseconds within each second, as numpy arrays."""
    us = np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
    return us // 1_000_000, us % 1_000_000


def write(spec: SideTable, storage: StorageConfig, table: pa.Table) -> None:
    """Insert ``table`` (conformed to ``spec.schema``) as one columnar ``INSERT``.

    Raises:
        RowsRejected: after the others are written, the rows whose time a
            ``DateTime`` cannot hold.
        StoreError: the database failed (``transient`` says whether to retry).
        ConfigurationError: a bad connection string or a missing driver.
    """
    t = target(spec, storage)
    seconds, _ = _split(table.column("timestamp"))
    bad = np.flatnonzero((seconds < 0) | (seconds > _MAX_SECONDS))
    rejected = table.take(pa.array(bad, pa.int64())) if len(bad) else None
    if len(bad):
        keep = np.ones(table.num_rows, bool)
        keep[bad] = False
        table = table.filter(pa.array(keep))
    if table.num_rows:
        _insert(spec, t, table)
    if rejected is not None:
        errors = [f"{t.label}: {_OUT_OF_RANGE}"] * rejected.num_rows
        raise RowsRejected(rejected, errors)


def _insert(spec: SideTable, t: Any, table: pa.Table) -> None:
    names: list[str] = []
    columns: list[Any] = []
    for f in spec.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            seconds, micros = _split(col)
            names += [f.name, f.name + MICROS_SUFFIX]
            columns += [seconds.tolist(), micros.tolist()]  # the driver takes epoch seconds
        else:
            names.append(f.name)
            columns.append(col.to_pylist())
    if spec.versioned:
        seconds, micros = _split(table.column("timestamp"))
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
