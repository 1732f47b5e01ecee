"""Running the report's statements in a store's own SQL (ClickHouse), and the
DuckDB step over their (small) results."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from llamonitor.analysis import _sql_clickhouse
from llamonitor.storage._duckdb import DuckDBQuery, Filters


def usable(q: Any, filters: Filters) -> bool:
    """Whether ``q`` runs ClickHouse statements with ``filters`` applied exactly."""
    if getattr(q, "native_dialect", None) != "clickhouse":
        return False
    return filters.operation is None or not any(c in filters.operation for c in "*?[")


def run(
    q: Any, sql: str, params: dict[str, Any] | None, filters: Filters, times: tuple[str, ...]
) -> pa.Table | None:
    """``sql``'s result: ``x__`` columns named ``x``, flags ``f_<flag>`` as
    booleans named ``<flag>``, unsigned integers signed, ``times`` (µs) as UTC times."""
    table: pa.Table | None = q.native(sql, params, filters)
    if table is None:
        return None
    fields = []
    arrays = []
    for f, col in zip(table.schema, table.columns, strict=True):
        name = f.name[:-2] if f.name.endswith("__") else f.name
        if name.startswith("f_") and name[2:] in _sql_clickhouse.FLAG_NAMES:
            name, col = name[2:], col.cast(pa.bool_())
        elif name in times:
            col = col.cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        elif pa.types.is_unsigned_integer(col.type):
            col = col.cast(pa.int64())
        fields.append(name)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=fields)


def local(table: pa.Table, sql: str) -> pa.Table | None:
    """A DuckDB statement over ``table`` (its ``{rel}``)."""
    with DuckDBQuery(table) as q:
        return q.run(sql)
