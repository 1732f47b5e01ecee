"""The MySQL/MariaDB store's write path as SQL text: each row's ``VALUES``
literal built column-wise by Arrow, statements kept under
``max_allowed_packet``, and the rows no statement can carry (NaN or infinity,
which MySQL cannot store, or a row larger than any statement) refused up front.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.storage import _sql_write
from llamonitor.storage._mysql_target import q

SUFFIX = " ON DUPLICATE KEY UPDATE `event_id` = `event_id`"
"""A replay skips existing rows; unlike ``INSERT IGNORE``, data errors still raise."""

_SPECIAL = r"[\\'\x00\x1a]"
_ESCAPES = (("\\", "\\\\"), ("'", "\\'"), ("\x00", "\\0"), ("\x1a", "\\Z"))


class Rows:
    """The ``INSERT`` text of one batch.

    Args:
        table: the batch (conformed: the base columns, then its metric groups').
        qualified: the span table's quoted name.
        max_statement: the largest statement to send (bytes).

    Attributes:
        refused: ``(row, reason)`` of the rows no statement can carry.
    """

    def __init__(self, table: pa.Table, qualified: str, max_statement: int) -> None:
        fields = _sql_write.present_fields(table)
        self.prefix = f"INSERT INTO {qualified} ({', '.join(q(f.name) for f in fields)}) VALUES "
        rows = _values(table, fields)
        self.sizes: list[int] = pc.binary_length(rows).to_pylist()
        refused = _non_finite(table)
        limit = max_statement - len(self.prefix) - len(SUFFIX)
        refused += [
            (i, f"the row is {n} bytes of SQL, more than max_allowed_packet allows")
            for i, n in enumerate(self.sizes)
            if n > limit
        ]
        self.refused = sorted(set(refused))
        self.literals: list[str] = rows.to_pylist()

    def statements(self, ids: list[int], max_statement: int) -> list[str]:
        """The INSERTs of the rows ``ids``, each under ``max_statement`` bytes."""
        literals = [self.literals[i] for i in ids]
        sizes = [self.sizes[i] for i in ids]
        room = max_statement - len(self.prefix) - len(SUFFIX)
        statements: list[str] = []
        start, size = 0, 0
        for i, n in enumerate(sizes):
            if i > start and size + n + 1 > room:
                statements.append(self.prefix + ",".join(literals[start:i]) + SUFFIX)
                start, size = i, 0
            size += n + 1
        statements.append(self.prefix + ",".join(literals[start:]) + SUFFIX)
        return statements


def _literal(col: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    """The SQL literal of each value of a column (``NULL`` for nulls)."""
    t = field.type
    if pa.types.is_string(t):
        if pc.any(pc.match_substring_regex(col, _SPECIAL)).as_py():
            for old, new in _ESCAPES:
                col = pc.replace_substring(col, old, new)
        text = pc.binary_join_element_wise("'", col, "'", "")
    elif pa.types.is_timestamp(t):
        text = pc.binary_join_element_wise(
            "'", col.cast(pa.timestamp("us")).cast(pa.string()), "'", ""
        )
    elif pa.types.is_boolean(t):
        text = col.cast(pa.int8()).cast(pa.string())
    else:
        text = col.cast(pa.string())
    return pc.fill_null(text, "NULL")


def _values(table: pa.Table, fields: list[pa.Field]) -> pa.ChunkedArray:
    """``(v1,v2,...)`` of each row (the ``fields`` columns), built column-wise."""
    columns = [_literal(table.column(f.name), f) for f in fields]
    joined = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise("(", joined, ")", "")


def _non_finite(table: pa.Table) -> list[tuple[int, str]]:
    """Rows with NaN or infinity in a float column (MySQL cannot store them)."""
    bad: dict[int, list[str]] = {}
    for f in table.schema:
        if not pa.types.is_floating(f.type):
            continue
        finite = pc.fill_null(pc.is_finite(table.column(f.name)), True)
        if pc.all(finite).as_py():
            continue
        for i, ok in enumerate(finite.to_pylist()):
            if not ok:
                bad.setdefault(i, []).append(f.name)
    return [
        (i, f"MySQL cannot store NaN or infinity (column {', '.join(names)})")
        for i, names in sorted(bad.items())
    ]
