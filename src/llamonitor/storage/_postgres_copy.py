"""The PostgreSQL store's write path: a batch as binary ``COPY`` records.

``COPY`` goes straight into the span table first; a batch holding rows
already there (a retry, a spool replay) fails on the primary key and goes
again through a per-connection temporary staging table, from which only the
rows not in the table yet are inserted.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA_VERSION
from llamonitor.storage import _sql, _sql_write
from llamonitor.storage._postgres_target import TS, Target, q

# Timestamps travel as PostgreSQL's own binary value, microseconds since
# 2000-01-01 UTC, computed by Arrow for the whole column: making a datetime
# object per row costs more than the whole COPY. The writer's connections get
# this codec (the query side's connections keep asyncpg's default).
_PG_EPOCH_US = 946_684_800_000_000


def _encode_timestamp(micros: int) -> tuple[int]:
    return (micros,)


def _decode_timestamp(value: tuple[int]) -> int:
    return value[0]


async def writer_connection(conn: Any) -> None:
    """The ``init`` of the writer's pool connections: the timestamp codec."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamp,
        decoder=_decode_timestamp,
        format="tuple",
    )


def records(table: pa.Table) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns to COPY (see :func:`~llamonitor.storage._sql_write.present_fields`)
    and the rows."""
    fields = _sql_write.present_fields(table)
    values = []
    for f in fields:
        col = table.column(f.name)
        if f.name == TS:
            col = pc.subtract(col.cast(pa.int64()), _PG_EPOCH_US)
        values.append(col.to_pylist())
    return [f.name for f in fields], list(zip(*values, strict=True))


class Copy:
    """The ``COPY`` of one span table, and its staging table for replays."""

    def __init__(self, t: Target) -> None:
        self._t = t
        self._base = "llamonitor_stage_"

    def _stage(self) -> str:
        # A staging table per column set: a column added to the span table
        # (a metric group) gets a new one, LIKE the table as it is now.
        key = f"{self._t.qualified}/{SCHEMA_VERSION}/{','.join(sorted(self._t.columns))}"
        return self._base + hex(_sql.lock_key(key) & 0xFFFFFFFFFFFF)[2:]

    async def run(
        self,
        conn: Any,
        columns: list[str],
        rows: list[tuple[Any, ...]],
        dedup: bool,
        conflict: str,
    ) -> None:
        """In the transaction of ``conn``: COPY into the table, or (``dedup``)
        into the staging table and from there every row whose key
        (``conflict``) is not in the table yet."""
        t = self._t
        if not dedup:
            await conn.copy_records_to_table(
                t.table, schema_name=t.schema, records=rows, columns=columns
            )
            return
        stage = self._stage()
        await conn.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {q(stage)} (LIKE {t.qualified}) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table(stage, records=rows, columns=columns)
        names = ", ".join(q(n) for n in columns)
        await conn.execute(
            f"INSERT INTO {t.qualified} ({names}) SELECT {names} "
            f"FROM {q(stage)} ON CONFLICT ({conflict}) DO NOTHING"
        )
