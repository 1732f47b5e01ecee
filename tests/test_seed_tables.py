"""The seed's data in the SQL stores, on the real servers: a ``metric_events``
table the original system (llamonitor-async) created in PostgreSQL or MySQL is
migrated in place by a versioned step (every row kept, its error message in
``error_message``, ``error`` TRUE or NULL) and answers the seed's queries; a
table of ours from before schema version 3 gets error FALSE as NULL; the
seed's AudioMetrics become columns, added by the migration step."""

from __future__ import annotations

import asyncio
import json
from datetime import timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

import _original
import llamonitor
from _helpers import span_row
from llamonitor import MonitorConfig, monitor_llm, monitoring_session
from llamonitor.cli import cli
from llamonitor.schema._columns import SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import _sql_ddl
from test_seed_data import AUDIO_COLUMNS, record_audio

if TYPE_CHECKING:
    from _servers import Store

pytest_plugins = ["_servers"]  # the db, pg_db, mysql_db and server_db fixtures

UTC = timezone.utc
ERROR_RATE = (
    "SELECT ROUND(100.0 * COUNT(CASE WHEN error IS NOT NULL THEN 1 END) / COUNT(*), 2) "
    "FROM {table}"
)  # the seed's dashboard: "error rate"
RECENT_ERRORS = (
    "SELECT timestamp, session_id, operation_name, error_type, error FROM {table} "
    "WHERE error IS NOT NULL ORDER BY timestamp DESC LIMIT 20"
)  # the seed's dashboard: "recent errors"


def seed_sql(db: Store, sql: str) -> list[tuple[Any, ...]]:
    return db.execute(sql.format(table=db.quote(db.table)))


def record(db: Store, ok: int, failed: int, session: str = "new-session") -> None:
    """Decorated calls written to ``db`` by initialize_monitoring, then shut down."""
    llamonitor.initialize_monitoring(MonitorConfig(storage=db.config()))

    @monitor_llm("work")
    def work(fail: bool) -> str:
        if fail:
            raise RuntimeError("nope")
        return "ok"

    with monitoring_session(session):
        for i in range(ok + failed):
            try:
                work(i >= ok)
            except RuntimeError:
                pass
    assert llamonitor.shutdown_monitoring(10)


def cli_json(db: Store, *args: Any) -> Any:
    result = CliRunner().invoke(
        cli, [*map(str, args), "--dsn", db.dsn, "--table", db.table, "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the original system's table -------------------------------------------------------


def create_original(db: Store, records: list[dict[str, Any]]) -> None:
    """The original's table, made and filled by its own DDL and INSERT."""
    if db.kind == "postgres":
        db.execute(_original.POSTGRES_DDL.format(table=db.table))
        for ddl in _original.POSTGRES_INDEXES:
            db.execute(ddl.format(table=db.table))
    else:
        db.execute(_original.MYSQL_DDL.format(table=db.table))
    db.execute(
        _original.insert_sql(db.kind, db.table),
        [_original.insert_values(r, db.kind) for r in records],
    )


def index_column_lists(db: Store) -> list[tuple[str, ...]]:
    if db.kind == "postgres":
        rows = db.execute(
            "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x "
            "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) "
            "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
            "WHERE x.indrelid = to_regclass($1) GROUP BY x.indexrelid",
            (db.table,),
        )
        return sorted(tuple(r[0]) for r in rows)
    rows = db.execute(
        "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = %s GROUP BY INDEX_NAME",
        (db.table,),
    )
    return sorted(tuple(r[1].split(",")) for r in rows)


def test_original_table_is_migrated_in_place(server_db: Store) -> None:
    """llamonitor started on the original's metric_events keeps every row, moves its
    error messages to error_message (error TRUE there, NULL elsewhere), converts its
    types to ours, adds no index it already has, and the seed's queries answer right."""
    db = server_db
    old = [_original.event(i, error="rate limited" if i == 2 else None) for i in range(5)]
    create_original(db, old)
    indexes_before = index_column_lists(db)
    record(db, ok=3, failed=1)
    assert db.count() == 9
    assert db.schema_version() == SCHEMA_VERSION
    assert set(SCHEMA.names) <= set(db.columns())
    legacy = db.execute(
        f"SELECT span_id, error, error_message, error_type, text_char_count "
        f"FROM {db.quote(db.table)} WHERE session_id = 'legacy-session' ORDER BY span_id"
    )
    assert [tuple(r) for r in legacy] == [
        ("span-0", None, None, None, 100),
        ("span-1", None, None, None, 100),
        ("span-2", True if db.kind == "postgres" else 1, "rate limited", "ValueError", 100),
        ("span-3", None, None, None, 100),
        ("span-4", None, None, None, 100),
    ]
    assert float(seed_sql(db, ERROR_RATE)[0][0]) == pytest.approx(22.22)  # 2 of 9
    recent = seed_sql(db, RECENT_ERRORS)
    assert sorted((r[1], r[2], r[3]) for r in recent) == [
        ("legacy-session", "legacy_op", "ValueError"),
        ("new-session", "work", "RuntimeError"),
    ]
    # The original's indexes on the seed's columns serve: none added beside them.
    assert index_column_lists(db) == indexes_before
    rows = {r["span_id"]: r for r in cli_json(db, "events", "--limit", "100")}
    assert rows["span-2"]["error"] is True and rows["span-2"]["error_message"] == "rate limited"
    assert rows["span-0"]["event_id"] == str(_original.event(0)["event_id"])
    with db.query() as q:
        (first,) = q.events(session_id="legacy-session", operation="legacy_root")
        assert first["timestamp"] == _original.T0.replace(tzinfo=UTC)
        assert json.loads(first["custom_attributes"]) == {"model": "gpt-4"}
        assert q.overview()["errors"] == 2
    trace = cli_json(db, "trace", "legacy-trace")
    assert trace["span_count"] == 5
    record(db, ok=1, failed=0)  # a second start finds it migrated: nothing more to do
    assert db.count() == 10


def test_original_table_is_read_before_any_writer_migrated_it(server_db: Store) -> None:
    """llamonitor events / stats / trace read the original's table as it is (its
    error message as error_message, its naive times as UTC), and leave it untouched."""
    db = server_db
    create_original(db, [_original.event(i, error="boom" if i == 1 else None) for i in range(3)])
    columns = db.columns()
    rows = {r["span_id"]: r for r in cli_json(db, "events")}
    assert rows["span-1"]["error"] is True and rows["span-1"]["error_message"] == "boom"
    assert rows["span-0"]["error"] is False and rows["span-0"]["error_message"] is None
    assert rows["span-0"]["event_id"] == str(_original.event(0)["event_id"])
    stats = cli_json(db, "stats", "--since", "2024-05-01T11:59:59")["groups"]
    assert sorted((s["operation_name"], s["count"], s["errors"]) for s in stats) == [
        ("legacy_op", 2, 1),
        ("legacy_root", 1, 0),
    ]
    assert cli_json(db, "trace", "legacy-trace")["span_count"] == 3
    with db.query() as q:
        (root,) = q.events(operation="legacy_root")
        assert root["timestamp"] == _original.T0.replace(tzinfo=UTC)
    assert db.columns() == columns


def test_original_table_takes_rows_the_original_could_not(server_db: Store) -> None:
    """After the migration, values past the original's column types fit: a long
    operation_type, a count past 32 bits, an id that is not a UUID."""
    db = server_db
    create_original(db, [_original.event(0)])
    event = llamonitor.MetricEvent(
        event_id="not-a-uuid",
        session_id="s",
        trace_id="t",
        span_id="x",
        operation_name="op",
        operation_type="a_very_long_operation_type_" + "x" * 60,
        duration_ms=1.0,
        text_char_count=2**40,
    )

    async def go() -> None:
        backend = db.backend()
        await backend.initialize()
        try:
            await backend.write_batch([event])
        finally:
            await backend.close()

    asyncio.run(go())
    got = db.execute(
        f"SELECT text_char_count, operation_type FROM {db.quote(db.table)} "
        "WHERE event_id = 'not-a-uuid'"
    )
    assert got == [(2**40, event.operation_type)]


def test_the_original_writer_cannot_write_a_failed_span_to_the_migrated_table(
    server_db: Store,
) -> None:
    """The migration is one-way (docs/storage.md): the original's INSERT of a span
    without error still goes in (error NULL), but one binding its message to
    ``error``, now a boolean, is refused by the database."""
    db = server_db
    create_original(db, [_original.event(0)])
    record(db, ok=1, failed=0)
    assert db.schema_version() == SCHEMA_VERSION
    insert = _original.insert_sql(db.kind, db.table)
    ok = {**_original.event(1), "event_id": "00000000-0000-0000-0000-0000000000aa"}
    db.execute(insert, _original.insert_values(ok, db.kind))
    failed = {
        **_original.event(2, error="boom"),
        "event_id": "00000000-0000-0000-0000-0000000000bb",
    }
    refused = r"boolean is required|Incorrect integer value"  # asyncpg's, MySQL's 1366
    with pytest.raises(Exception, match=refused):
        db.execute(insert, _original.insert_values(failed, db.kind))
    got = db.execute(
        f"SELECT span_id, error, error_message FROM {db.quote(db.table)} "
        "WHERE session_id = 'legacy-session' ORDER BY span_id"
    )
    assert [tuple(r) for r in got] == [("span-0", None, None), ("span-1", None, None)]


def test_a_table_of_a_newer_schema_version_refuses_this_writer(db: Store) -> None:
    """What an older llamonitor sees on a table a newer one migrated: initialize
    refuses, naming storage.table_name, and asks for an upgrade (every llamonitor
    with SQL stores checks the recorded version)."""
    db.write(pa.Table.from_pylist([span_row(0)], schema=SCHEMA))
    meta = _sql_ddl.META_TABLE
    db.execute(
        f"UPDATE {meta} SET schema_version = {SCHEMA_VERSION + 1} WHERE table_name = {db.mark(1)}",
        (db.table,),
    )

    async def go() -> None:
        backend = db.backend()
        try:
            await backend.initialize()
        finally:
            await backend.close()

    with pytest.raises(ConfigurationError) as info:
        asyncio.run(go())
    assert info.value.setting == "storage.table_name"
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this llamonitor" in str(info.value)
    assert "upgrade llamonitor" in str(info.value)
    assert db.count() == 1


# -- error: TRUE or NULL in our own tables -----------------------------------------------


def test_seed_error_queries_on_every_sql_store(db: Store) -> None:
    """Spans llamonitor writes answer the seed's queries: error IS NOT NULL selects
    the failures, and WHERE error does too."""
    record(db, ok=3, failed=2)
    assert float(seed_sql(db, ERROR_RATE)[0][0]) == pytest.approx(40.0)
    assert len(seed_sql(db, RECENT_ERRORS)) == 2
    assert seed_sql(db, "SELECT count(*) FROM {table} WHERE error")[0][0] == 2
    stats = cli_json(db, "stats")["groups"]
    assert [(s["count"], s["errors"]) for s in stats] == [(5, 2)]


def test_version_2_table_has_error_false_set_to_null(db: Store) -> None:
    """A table of schema version 2 (error NOT NULL, FALSE on success; a meta table
    without the extensions column) is migrated by the versioned step: FALSE becomes
    NULL, TRUE stays, every row is kept."""
    fields = [f.with_nullable(False) if f.name in _sql_ddl.RELAXED_IN_V3 else f for f in SCHEMA]
    db.create_table(fields)
    rows = [span_row(i, error=i == 1) for i in range(4)]
    db.insert_rows(rows, SCHEMA.names)
    meta = db.quote(_sql_ddl.META_TABLE)
    text = "TEXT" if db.kind != "mysql" else "VARCHAR(255)"
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {meta} (table_name {text} PRIMARY KEY, "
        "schema_version INTEGER NOT NULL, updated_at TEXT NOT NULL)"
        if db.kind != "postgres"
        else f"CREATE TABLE IF NOT EXISTS {meta} (table_name text PRIMARY KEY, "
        "schema_version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
    )
    stamp = "2024-05-01 00:00:00"
    if db.kind == "postgres":
        db.execute(f"INSERT INTO {meta} (table_name, schema_version) VALUES ($1, 2)", (db.table,))
    else:
        db.execute(
            f"INSERT INTO {meta} (table_name, schema_version, updated_at) "
            f"VALUES ({db.mark(1)}, 2, {db.mark(2)})",
            (db.table, stamp),
        )
    db.write(pa.Table.from_pylist([span_row(10)], schema=SCHEMA))
    assert db.schema_version() == SCHEMA_VERSION
    assert db.count() == 5
    failed = db.execute(f"SELECT event_id FROM {db.quote(db.table)} WHERE error IS NOT NULL")
    assert failed == [("e000001",)]


# -- schema evolution: AudioMetrics as columns ---------------------------------------------


def test_audio_metrics_become_columns_of_every_sql_store(db: Store) -> None:
    """The seed's AudioMetrics (collector and MetricEvent field) add the columns
    audio_duration_seconds, audio_sample_rate, audio_channels to an existing table
    (old rows null), recorded in the meta table and read back by the query side;
    a replay of the batch duplicates nothing."""
    db.write(pa.Table.from_pylist([span_row(0, operation_name="before")], schema=SCHEMA))
    event = record_audio(db.config(), seconds=(1.5,))
    columns = {k.lower(): v.lower() for k, v in db.columns().items()}
    kinds = {"postgres": ("double", "bigint"), "mysql": ("double", "bigint")}
    real, integer = kinds.get(db.kind, ("real", "integer"))
    assert columns["audio_duration_seconds"].startswith(real)
    assert columns["audio_sample_rate"].startswith(integer)
    assert columns["audio_channels"].startswith(integer)
    got = db.execute(
        f"SELECT operation_name, {', '.join(AUDIO_COLUMNS)} FROM {db.quote(db.table)} "
        "ORDER BY operation_name"
    )
    assert [tuple(r) for r in got] == [
        ("before", None, None, None),
        ("hand_made", 3.0, 16000, 1),
        ("transcribe", 1.5, 44100, 2),
    ]
    recorded = db.execute(
        f"SELECT extensions FROM {db.quote(_sql_ddl.META_TABLE)} WHERE table_name = {db.mark(1)}",
        (db.table,),
    )
    assert json.loads(recorded[0][0]) == {
        "audio_channels": "int64",
        "audio_duration_seconds": "float64",
        "audio_sample_rate": "int64",
    }
    with db.query() as q:
        (row,) = q.events(operation="hand_made")
    assert {c: row[c] for c in AUDIO_COLUMNS} == dict(
        zip(AUDIO_COLUMNS, (3.0, 16000, 1), strict=True)
    )
    replay = llamonitor.schema._extensions.rows_table([event.to_row()])
    db.write(replay)  # a fresh backend: the columns are there, the row is skipped
    db.write(replay)
    assert db.count() == 3
