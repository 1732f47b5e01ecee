"""The PostgreSQL store's write path: a batch as one binary ``COPY`` stream.

The stream is built from the batch's Arrow columns (:mod:`._postgres_binary`)
for the column types the table has (read after each setup and each column
added); a batch with a column whose type that encoder does not know is sent
as asyncpg's records instead. ``COPY`` goes straight into the span table
first; a batch holding rows already there (a retry, a spool replay) fails on
the primary key and goes again through a per-connection temporary staging
table, from which only the rows not in the table yet are inserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA_VERSION
from llamonitor.storage import _postgres_binary, _sql, _sql_write
from llamonitor.storage._postgres_target import TS, Target, q

_COLUMN_TYPES_SQL = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
    "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped"
)

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
    and the rows, for asyncpg's ``copy_records_to_table``."""
    fields = _sql_write.present_fields(table)
    values = []
    for f in fields:
        col = table.column(f.name)
        if f.name == TS:
            col = pc.subtract(col.cast(pa.int64()), _PG_EPOCH_US)
        values.append(col.to_pylist())
    return [f.name for f in fields], list(zip(*values, strict=True))


@dataclass
class Batch:
    """One part of a batch to COPY: its columns (those not null in every row),
    and asyncpg's records for it, made once if they are needed."""

    table: pa.Table
    fields: list[pa.Field]
    _records: list[tuple[Any, ...]] | None = None

    @classmethod
    def of(cls, table: pa.Table) -> Batch:
        return cls(table, _sql_write.present_fields(table))

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def records(self) -> list[tuple[Any, ...]]:
        if self._records is None:
            self._records = records(self.table)[1]
        return self._records


async def _pieces(encoder: _postgres_binary.Encoder) -> AsyncIterator[bytes]:
    """The stream piece by piece: each is built while the server parses the one
    before, and the other half of the batch gets the event loop in between."""
    for piece in encoder.pieces():
        yield piece
        await asyncio.sleep(0)


class Copy:
    """The ``COPY`` of one span table, and its staging table for replays."""

    def __init__(self, t: Target) -> None:
        self._t = t
        self._base = "llamonitor_stage_"
        self._types: dict[str, str] | None = None

    def _stage(self) -> str:
        # A staging table per column set: a column added to the span table
        # (a metric group) gets a new one, LIKE the table as it is now.
        key = f"{self._t.qualified}/{SCHEMA_VERSION}/{','.join(sorted(self._t.columns))}"
        return self._base + hex(_sql.lock_key(key) & 0xFFFFFFFFFFFF)[2:]

    def forget(self) -> None:
        """The table was set up or given columns: read its column types again."""
        self._types = None

    async def _encoder(self, conn: Any, batch: Batch) -> _postgres_binary.Encoder | None:
        """The binary encoder for ``batch``, or ``None`` if one of its columns
        has a type the encoder does not write (then: asyncpg's records)."""
        if self._types is None:
            rows = await conn.fetch(_COLUMN_TYPES_SQL, self._t.qualified)
            self._types = {r[0]: r[1] for r in rows}
        types = self._types
        if not all(
            f.name in types and _postgres_binary.supported(types[f.name], f) for f in batch.fields
        ):
            return None
        return _postgres_binary.Encoder(batch.table, batch.columns, types)

    async def run(self, conn: Any, batch: Batch, dedup: bool, conflict: str) -> None:
        """In the transaction of ``conn``: COPY into the table, or (``dedup``)
        into the staging table (of the table's own column types) and from there
        every row whose key (``conflict``) is not in the table yet."""
        t = self._t
        encoder = await self._encoder(conn, batch)
        if not dedup:
            await _copy(conn, t.table, t.schema, batch, encoder)
            return
        stage = self._stage()
        await conn.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {q(stage)} (LIKE {t.qualified}) "
            "ON COMMIT DELETE ROWS"
        )
        await _copy(conn, stage, None, batch, encoder)
        names = ", ".join(q(n) for n in batch.columns)
        await conn.execute(
            f"INSERT INTO {t.qualified} ({names}) SELECT {names} "
            f"FROM {q(stage)} ON CONFLICT ({conflict}) DO NOTHING"
        )


async def _copy(
    conn: Any,
    table: str,
    schema: str | None,
    batch: Batch,
    encoder: _postgres_binary.Encoder | None,
) -> None:
    if encoder is None:
        await conn.copy_records_to_table(
            table, schema_name=schema, records=batch.records(), columns=batch.columns
        )
        return
    await conn.copy_to_table(
        table,
        schema_name=schema,
        source=_pieces(encoder),
        columns=encoder.columns,
        format="binary",
    )
