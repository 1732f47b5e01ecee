"""What the tables kept beside the spans (metric points, scores) share: an
Arrow schema made from a column list, and conforming a table to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

Column = tuple[str, pa.DataType, bool, str]
"""``(name, type, nullable, description)``."""


def described_schema(columns: tuple[Column, ...], metadata: Mapping[bytes, bytes]) -> pa.Schema:
    """The schema of ``columns``, each field's description in its metadata."""
    return pa.schema(
        [
            pa.field(name, t, nullable=nullable, metadata={b"description": doc.encode()})
            for name, t, nullable, doc in columns
        ],
        metadata=dict(metadata),
    )


def conform_columns(
    table: pa.Table, schema: pa.Schema, what: str, defaults: Mapping[str, Any] | None = None
) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order and type.

    Missing nullable columns become nulls; a column in ``defaults`` is filled
    with its default where missing or null; extra columns are dropped.

    Raises:
        ValueError: a required column is missing or holds nulls, or a value
            cannot be cast (the message starts with ``what``).
    """
    n = table.num_rows
    defaults = defaults or {}
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(f"{what}: column {f.name}: {exc}") from None
            if f.name in defaults and col.null_count:
                import pyarrow.compute as pc

                col = pc.fill_null(col, pa.scalar(defaults[f.name], f.type))
            if not f.nullable and col.null_count:
                raise ValueError(f"{what}: column {f.name} has nulls")
        elif f.name in defaults:
            col = pa.array([defaults[f.name]] * n, f.type)
        elif f.nullable:
            col = pa.nulls(n, f.type)
        else:
            raise ValueError(f"{what}: column {f.name} is missing")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def check_values(table: pa.Table, column: str, allowed: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` naming the first value of ``column`` not in ``allowed``."""
    if not table.num_rows:
        return
    import pyarrow.compute as pc

    bad = pc.invert(pc.is_in(table.column(column), value_set=pa.array(allowed)))
    if pc.any(bad).as_py():
        found = pc.unique(pc.filter(table.column(column), bad)).to_pylist()
        raise ValueError(f"{what}: {column} {found[0]!r} is not one of {list(allowed)}")
