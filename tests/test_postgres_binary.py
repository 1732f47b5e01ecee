"""The PostgreSQL writer's binary COPY stream, built from Arrow with numpy: byte
for byte what PostgreSQL itself writes, every value round-trips (NULLs of each
type, jsonb, long values, piece boundaries), and a table with a type the
encoder does not know is still written."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from _helpers import T0, span_row
from llamonitor.schema._columns import SCHEMA
from llamonitor.storage import _postgres_binary, _sql_write
from llamonitor.storage._sql_types import postgres_type

if TYPE_CHECKING:
    from _servers import Store

pytest_plugins = ["_servers"]  # the pg_db fixture


def varied_rows(n: int, seed: int = 3, null_bools: bool = False) -> list[dict[str, Any]]:
    """Rows of every shape a batch has: ids of one length and of several, NULLs
    in each nullable type (booleans too if ``null_bools``: the span table's
    ``error`` is NOT NULL), empty and non-ASCII text, a few very long values."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = span_row(
            i,
            session_id=rng.choice(["s", "", "séssion-ünïcode-🙂", "x" * rng.randint(1, 40)]),
            operation_name=rng.choice(["llm.plan", "tool.fetch_page", "agent"]),
            model=rng.choice([None, "gpt-4o", "claude-3-5-haiku-latest"]),
            input_tokens=rng.choice([None, 0, 2**63 - 1, -(2**63)]),
            cost_usd=rng.choice([None, 0.1, 1e300, -2.5e-300, float("nan"), float("inf")]),
            error=rng.choice([None, True, False] if null_bools else [True, False]),
            timestamp=T0 + timedelta(microseconds=rng.randint(-10**12, 10**12)),
            custom_attributes=rng.choice([None, "{}", json.dumps({"k": "v" * rng.randint(0, 50)})]),
            error_message="e" * 20_000 if i % 97 == 5 else None,  # rows far longer than the rest
        )
        rows.append(row)
    return rows


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return got == want or (math.isnan(got) and math.isnan(want))
    return bool(got == want)


async def _server_stream(dsn: str, table: pa.Table, columns: list[str]) -> bytes:
    """What PostgreSQL writes for ``table``'s rows: asyncpg's records into a
    temporary table, then ``COPY ... TO STDOUT (FORMAT binary)``."""
    import asyncpg

    from llamonitor.storage._postgres_copy import records, writer_connection

    conn = await asyncpg.connect(dsn)
    try:
        await writer_connection(conn)
        defs = ", ".join(f'"{f.name}" {postgres_type(f)}' for f in SCHEMA)
        await conn.execute(f"CREATE TEMPORARY TABLE scratch ({defs})")
        names, rows = records(table)
        await conn.copy_records_to_table("scratch", records=rows, columns=names)
        out = io.BytesIO()
        await conn.copy_from_table("scratch", columns=columns, output=out, format="binary")
        return out.getvalue()
    finally:
        await conn.close()


def test_the_stream_is_byte_for_byte_what_postgres_writes(pg_db: Store) -> None:
    """For varied rows (in the encoder's column order), the stream equals the one
    PostgreSQL's own binary COPY OUT produces for the same values."""
    table = pa.Table.from_pylist(varied_rows(600, null_bools=True), schema=SCHEMA)
    names = [f.name for f in _sql_write.present_fields(table)]
    types = {f.name: postgres_type(f) for f in SCHEMA}
    encoder = _postgres_binary.Encoder(table, names, types)
    assert sorted(encoder.columns) == sorted(names)
    ours = encoder.encode()
    assert b"".join(encoder.pieces(7)) == ours  # pieces join into the same stream
    assert ours == asyncio.run(_server_stream(pg_db.dsn, table, encoder.columns))


@pytest.mark.parametrize("chunk_rows", [1, 7, 2_000])
def test_every_value_round_trips_through_the_writer(
    pg_db: Store, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """Written by the backend (two halves, pieces of `chunk_rows` rows) and read
    back, every value is the one written; a replay adds nothing."""
    monkeypatch.setattr(_postgres_binary, "CHUNK_ROWS", chunk_rows)
    rows = varied_rows(2_400)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pg_db.write(table)
    pg_db.write(table)  # through the staging table: nothing doubled
    got = {r["event_id"]: r for r in pg_db.query().events(limit=None)}
    assert len(got) == len(rows) == pg_db.count()
    for want in rows:
        have = got[want["event_id"]]
        for name, value in want.items():
            assert _same(have[name], value), (name, have[name], value)


def test_a_jsonb_attributes_column_gets_jsonb_values(pg_db: Store) -> None:
    """A table whose custom_attributes is jsonb (made by hand) is written in
    jsonb's binary form and reads back the same JSON."""
    fields = [f for f in SCHEMA]
    pg_db.create_table(fields)
    pg_db.execute(
        f'ALTER TABLE "{pg_db.table}" ALTER COLUMN custom_attributes TYPE jsonb '
        "USING custom_attributes::jsonb"
    )
    rows = [span_row(i, custom_attributes=json.dumps({"i": i, "k": "é"})) for i in range(50)]
    pg_db.write(pa.Table.from_pylist(rows, schema=SCHEMA))
    got = sorted(pg_db.query().events(limit=None), key=lambda r: r["event_id"])
    assert [json.loads(r["custom_attributes"]) for r in got] == [
        {"i": i, "k": "é"} for i in range(50)
    ]


def test_a_column_type_the_encoder_does_not_know_falls_back_to_records(
    pg_db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a column's type is not one the encoder writes, asyncpg's records are sent."""
    monkeypatch.setattr(
        _postgres_binary, "supported", lambda db_type, field: field.name != "duration_ms"
    )

    def no_encoder(*args: Any) -> Any:
        raise AssertionError("the binary encoder was used")

    monkeypatch.setattr(_postgres_binary, "Encoder", no_encoder)
    rows = varied_rows(300)
    pg_db.write(pa.Table.from_pylist(rows, schema=SCHEMA))
    got = {r["event_id"]: r for r in pg_db.query().events(limit=None)}
    assert len(got) == 300
    assert all(_same(got[r["event_id"]]["cost_usd"], r["cost_usd"]) for r in rows)
