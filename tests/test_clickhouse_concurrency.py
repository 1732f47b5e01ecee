"""Concurrent openers of one ClickHouse store (a private 18.16 server): several
processes that create, or migrate, the same new table at the same moment all
succeed, and leave one table of the schema, one schema version, every row.

ClickHouse 18.16 has no transactions and no lock a client can take; what makes
this safe (see docs/clickhouse.md, "Concurrent openers") is that every step
of ``initialize`` is idempotent: ``CREATE TABLE IF NOT EXISTS`` (the server runs
one DDL statement per table name at a time, and the second finds the table),
``ADD COLUMN`` whose failure is no failure when the column is there, ``MODIFY
COLUMN`` to the type it has, the ``error`` mutation, and a meta record whose
latest one every opener writes alike."""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from _clickhouse_data import table_of
from _helpers import span_row
from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend

if TYPE_CHECKING:
    from _clickhouse import ClickHouseServer

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture

OPENERS = 6
ROWS = 50


def _open_and_write(dsn: str, table: str, k: int, barrier: Any, out: Any) -> None:
    """One opener: wait for the others, initialize (create or migrate), write."""
    config = StorageConfig(
        backend="clickhouse", connection_string=SecretStr(dsn), table_name=table
    )

    async def go() -> None:
        backend = create_backend(config)
        barrier.wait(timeout=60)
        await backend.initialize()
        rows = [span_row(k * ROWS + i, event_id=f"e{k}-{i}") for i in range(ROWS)]
        await backend.write_table(table_of(rows))
        await backend.close()

    try:
        asyncio.run(go())
        out.put((k, None))
    except BaseException as exc:  # reported to the test
        out.put((k, f"{type(exc).__name__}: {exc}"))


def _race(dsn: str, table: str) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(OPENERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_write, args=(dsn, table, k, barrier, out))
        for k in range(OPENERS)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sorted(results)


def _execute(dsn: str, sql: str, params: Any = None) -> list[Any]:
    from clickhouse_driver import Client

    client = Client.from_url(dsn)
    try:
        rows: list[Any] = client.execute(sql, params)
        return rows
    finally:
        client.disconnect()


def _check(dsn: str, database: str, table: str) -> None:
    from llamonitor.storage import clickhouse

    columns = dict(
        _execute(
            dsn,
            "SELECT name, type FROM system.columns WHERE database = %(d)s AND table = %(t)s",
            {"d": database, "t": table},
        )
    )
    assert set(SCHEMA.names) <= set(columns)
    assert columns["error"] == "Nullable(UInt8)"
    versions = _execute(
        dsn,
        f"SELECT argMax(schema_version, (updated_at, version)) "
        f"FROM `{database}`.llamonitor_schema_version WHERE table_name = %(t)s",
        {"t": table},
    )
    assert versions == [(SCHEMA_VERSION,)]
    config = StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn), table_name=table)
    with clickhouse.query(config) as q:
        assert q.count() >= OPENERS * ROWS
        events = {e["event_id"] for e in q.events(limit=None)}
    assert {f"e{k}-{i}" for k in range(OPENERS) for i in range(ROWS)} <= events


@pytest.fixture
def fresh_database(clickhouse_server: ClickHouseServer) -> Any:
    """A database of its own (no meta table yet), dropped afterwards."""
    name = f"db_{secrets.token_hex(4)}"
    base = clickhouse_server.dsn.rsplit("/", 1)[0]
    _execute(clickhouse_server.dsn, f"CREATE DATABASE `{name}`")
    try:
        yield name, f"{base}/{name}"
    finally:
        _execute(clickhouse_server.dsn, f"DROP DATABASE IF EXISTS `{name}`")


def test_openers_racing_to_create_a_new_store_all_succeed(fresh_database: Any) -> None:
    """Six processes initialize the same table of a new database (no meta table,
    no span table) at the same moment, then write: none fails, the table and
    its meta are made once, every row is there."""
    database, dsn = fresh_database
    results = _race(dsn, "metric_events")
    assert results == [(k, None) for k in range(OPENERS)]
    _check(dsn, database, "metric_events")


def test_openers_racing_to_migrate_an_old_table_all_succeed(fresh_database: Any) -> None:
    """Six processes open a schema-version-1 table at the same moment: the
    columns are added once (the losers of each ADD COLUMN find them there),
    error becomes Nullable, every row is there."""
    from llamonitor.storage._clickhouse_ddl import column_defs

    database, dsn = fresh_database
    fields = [
        f.with_nullable(False) if f.name in ("error", "duration_ms") else f
        for f in SCHEMA
        if f.name in COLUMNS_V1
    ]
    _execute(
        dsn,
        f"CREATE TABLE `{database}`.old ({', '.join(column_defs(fields))}) "
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (trace_id, timestamp, event_id)",
    )
    results = _race(dsn, "old")
    assert results == [(k, None) for k in range(OPENERS)]
    _check(dsn, database, "old")
