"""The ClickHouse store against a real, privately started ClickHouse 18.16
server (Debian's package): the table derived from the schema, columnar writes,
idempotent redelivery, migrations, and the same answers as SQLite from the
report, stats, trace, the CLI and the server."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from pydantic import BaseModel, SecretStr

from _clickhouse_data import T0, UTC, same, sqlite_query, table_of, workload
from _helpers import span_row
from llamonitor.schema import register_metrics
from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema._extensions import rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import RowsRejected, StoreError, create_backend

if TYPE_CHECKING:
    from _clickhouse import CHStore

pytest_plugins = ["_clickhouse"]  # the clickhouse_server and ch fixtures


# -- the table -------------------------------------------------------------------


def test_table_is_derived_from_the_schema(ch: CHStore) -> None:
    """Every schema column with its type (nullable where the schema says), the
    microseconds beside the start time, a ReplacingMergeTree by month ordered
    by trace and time, and the schema version recorded."""
    ch.write(table_of([span_row(0)]))
    columns = dict(
        ch.execute(
            "SELECT name, type FROM system.columns WHERE database = 'default' AND table = %(t)s",
            {"t": ch.table},
        )
    )
    assert columns["event_id"] == "String"
    assert columns["parent_span_id"] == "Nullable(String)"
    assert columns["timestamp"] == "DateTime('UTC')"
    assert columns["timestamp_us"] == "UInt32"
    assert columns["duration_ms"] == "Nullable(Float64)"
    assert columns["error"] == "Nullable(UInt8)"
    assert columns["process_id"] == "Int64"
    assert set(columns) == {*SCHEMA.names, "timestamp_us"}
    ((create,),) = ch.execute(f"SHOW CREATE TABLE `{ch.table}`")
    assert "ENGINE = ReplacingMergeTree" in create
    assert "PARTITION BY toYYYYMM(timestamp)" in create
    assert "ORDER BY (trace_id, timestamp, event_id)" in create
    ((version,),) = ch.execute(
        "SELECT argMax(schema_version, updated_at) FROM llamonitor_schema_version "
        "WHERE table_name = %(t)s",
        {"t": ch.table},
    )
    assert version == SCHEMA_VERSION


def test_every_column_round_trips(ch: CHStore) -> None:
    """Every column type, nulls, unicode and control characters, microseconds and
    64-bit extremes read back exactly, with the schema's Arrow types."""
    text = "naïve 漢字 🙂 'single' \"double\" back\\slash %_ \n\ttab \x1a end"
    rows = []
    for i, ints in enumerate((2**63 - 1, -(2**63), 12345)):
        row = span_row(i, timestamp=T0 + timedelta(days=40 * i, microseconds=999_999 - i))
        for f in SCHEMA:
            if f.name in ("event_id", "timestamp"):
                continue
            if pa.types.is_string(f.type):
                row[f.name] = f"{f.name}-{i} {text}"
            elif pa.types.is_int64(f.type):
                row[f.name] = ints
            elif pa.types.is_float64(f.type):
                row[f.name] = (0.1, 1e300, -2.5e-300)[i]
            elif pa.types.is_boolean(f.type):
                row[f.name] = True if i % 2 else None
        rows.append(row)
    rows.append(span_row(3))  # every nullable column None
    ch.write(table_of(rows))
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
        arrow = q.run("SELECT * FROM {rel} ORDER BY event_id")
    assert got == {r["event_id"]: {**r, "error": bool(r["error"])} for r in rows}
    assert arrow is not None
    assert arrow.schema.types == SCHEMA.types


def test_rows_read_the_same_with_and_without_the_drivers_numpy_columns(
    ch: CHStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The streamed rows are the same whether the driver decodes them a column
    at a time (numpy and pandas installed) or a value at a time: nulls, every
    type, an extension column, a column the table lacks (a typed NULL: the
    NumPy path has no ``Nullable(Nothing)``, and falls back with a warning)."""
    from llamonitor.storage import _clickhouse_query

    rows = [
        span_row(
            i,
            timestamp=T0 + timedelta(seconds=i, microseconds=i),
            error=i % 3 == 0,
            model=None if i % 2 else "m",
            input_tokens=None if i % 4 else i,
            cost_usd=None if i % 5 else i / 7,
        )
        for i in range(50)
    ]
    grp_x = pa.array([None if i % 2 else i for i in range(50)], pa.int64())
    ch.write(table_of(rows).append_column("grp_x", grp_x))
    ch.execute(f"ALTER TABLE `{ch.table}` DROP COLUMN `reasoning_tokens`")
    assert _clickhouse_query.numpy_columns()  # the dev extra installs clickhouse-driver[numpy]
    read = {}
    for numpy in (True, False):
        monkeypatch.setattr(_clickhouse_query, "numpy_columns", lambda numpy=numpy: numpy)
        with ch.query() as q:
            read[numpy] = (
                q.run("SELECT * FROM {rel} ORDER BY event_id"),
                q.events(limit=None),
            )
    fast, slow = read[True], read[False]
    assert fast[0] is not None and fast[0].equals(slow[0])
    assert fast[1] == slow[1]
    xs = grp_x.to_pylist()
    assert {r["event_id"]: (r["error"], r["model"], r["grp_x"]) for r in fast[1]} == {
        r["event_id"]: (bool(r["error"]), r["model"], x) for r, x in zip(rows, xs, strict=True)
    }
    assert fast[0].column("reasoning_tokens").null_count == len(rows)
    assert not [r for r in caplog.records if r.name.startswith("clickhouse_driver")]


def test_spans_are_partitioned_by_month_in_utc(ch: CHStore) -> None:
    """A span at 23:30 UTC on the last day of a month is in that month's
    partition, whatever the server's time zone (the test server's is not UTC)."""
    last = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    ch.write(
        table_of([span_row(0, timestamp=last), span_row(1, timestamp=last + timedelta(hours=1))])
    )
    parts = ch.execute(
        "SELECT DISTINCT partition FROM system.parts WHERE table = %(t)s AND active "
        "ORDER BY partition",
        {"t": ch.table},
    )
    assert [p for (p,) in parts] == ["202601", "202602"]
    ((tz,),) = ch.execute("SELECT timezone()")
    assert tz != "UTC"


# -- idempotence -----------------------------------------------------------------


def test_redelivered_batches_are_counted_once(ch: CHStore, tmp_path: Path) -> None:
    """A batch delivered again (whole, and in part inside a later batch) leaves
    copies in the table until a merge, and every query counts each span once;
    after the merge one copy is left."""
    rows = workload(10)
    first, second = table_of(rows[:30]), table_of(rows[30:])
    redelivery = pa.concat_tables([table_of(rows[20:40]), second])
    ch.write(first, first, second, redelivery)
    assert ch.raw_count() > len(rows)  # the copies are there, not merged yet
    peer = sqlite_query(tmp_path, rows)
    with peer:
        want = _answers(peer)
    with ch.query() as q:
        assert _reads_final(q)
        same(_answers(q), want)
    ch.execute(f"OPTIMIZE TABLE `{ch.table}` FINAL")
    assert ch.raw_count() == len(rows)
    with ch.query() as q:  # one merged part a month: read without FINAL, the same answers
        assert not _reads_final(q)
        same(_answers(q), want)
    ch.write(first)  # a copy again: FINAL again
    with ch.query() as q:
        assert _reads_final(q)
        same(_answers(q), want)


def _reads_final(q: Any) -> bool:
    from clickhouse_driver import Client

    from llamonitor.storage._clickhouse_query import final

    client = Client.from_url(q._t.url)
    try:
        return final(client.execute, q._t) == "FINAL"
    finally:
        client.disconnect()


def _answers(q: Any) -> dict[str, Any]:
    """What the user sees of a store: count, stats, overview, a trace, the report."""
    from llamonitor.analysis import analyze

    report = analyze(q).to_dict()
    report.pop("generated_at")
    report.pop("timings_ms")
    return dict(
        count=q.count(), stats=q.stats(), by_model=q.stats(group_by="model"),
        overview=q.overview(), events=sorted(e["event_id"] for e in q.events(limit=None)),
        report=report,
    )


def test_a_retried_write_through_the_transport_lands_once(ch: CHStore) -> None:
    """The same events written by two backends (a worker's retry after its
    first attempt did land) are one span each."""
    rows = workload(3)
    ch.write(table_of(rows))
    ch.write(table_of(rows))
    with ch.query() as q:
        assert q.count() == len(rows)
        assert sorted(r["event_id"] for r in q.events(limit=None)) == sorted(
            r["event_id"] for r in rows
        )


# -- migrations ------------------------------------------------------------------


def test_version_1_table_is_migrated_in_place(ch: CHStore) -> None:
    """A table of schema version 1 (error and duration_ms not nullable, no LLM
    columns) gets the columns on initialize; error 0 becomes NULL; its rows
    read back, new rows beside them."""
    from llamonitor.storage._clickhouse_ddl import column_defs

    fields = [
        f.with_nullable(False) if f.name in ("error", "duration_ms") else f
        for f in SCHEMA
        if f.name in COLUMNS_V1
    ]
    ch.execute(
        f"CREATE TABLE `{ch.table}` ({', '.join(column_defs(fields))}) "
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (trace_id, timestamp, event_id)"
    )
    ch.execute(
        f"INSERT INTO `{ch.table}` (event_id, session_id, trace_id, span_id, operation_name, "
        "operation_type, timestamp, timestamp_us, duration_ms, error, process_id) VALUES",
        [
            (
                f"old{i}",
                "old",
                "t" * 32,
                f"{i:016x}",
                "op",
                "tool",
                1_777_000_000 + i,
                5,
                1.5,
                1 if i == 3 else 0,
                7,
            )
            for i in range(5)
        ],
    )
    with ch.query() as q:  # readable before any writer migrated it
        assert q.count() == 5
        assert q.overview()["errors"] == 1
        assert q.events(limit=1)[0]["model"] is None
    ch.write(table_of([span_row(100, model="gpt-4o", input_tokens=7)]))
    columns = dict(
        ch.execute("SELECT name, type FROM system.columns WHERE table = %(t)s", {"t": ch.table})
    )
    assert set(SCHEMA.names) <= set(columns)
    assert columns["error"] == "Nullable(UInt8)"
    assert columns["model"] == "Nullable(String)"
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
        assert q.overview()["errors"] == 1
    assert len(got) == 6
    assert got["old3"]["error"] is True and got["old2"]["error"] is False
    assert got["old1"]["timestamp"] == datetime.fromtimestamp(1_777_000_001, UTC).replace(
        microsecond=5
    )
    assert got["old1"]["model"] is None
    assert got["e000100"]["model"] == "gpt-4o"
    nulls = ch.execute(f"SELECT count() FROM `{ch.table}` WHERE error IS NULL")
    assert nulls == [(5,)]  # the four old 0s (a mutation) and the new span


class CHProbe(BaseModel):
    latency_s: float
    label: str
    hits: int


def test_a_metric_group_adds_its_columns(ch: CHStore) -> None:
    """A batch bringing a registered metric group's values adds its columns
    (recorded in the meta table), and the query side reads them back."""
    register_metrics("chprobe", CHProbe)
    ch.write(table_of([span_row(0)]))
    rows = [span_row(1, chprobe_latency_s=0.5, chprobe_label="x", chprobe_hits=3)]
    ch.write(rows_table(rows))
    columns = dict(
        ch.execute("SELECT name, type FROM system.columns WHERE table = %(t)s", {"t": ch.table})
    )
    assert columns["chprobe_latency_s"] == "Nullable(Float64)"
    assert columns["chprobe_hits"] == "Nullable(Int64)"
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
    assert got["e000001"]["chprobe_label"] == "x"
    assert got["e000001"]["chprobe_hits"] == 3
    assert got["e000000"]["chprobe_latency_s"] is None


def test_a_newer_schema_version_is_refused(ch: CHStore) -> None:
    ch.write(table_of([span_row(0)]))
    ch.execute(
        "INSERT INTO llamonitor_schema_version (table_name, schema_version, updated_at, "
        "extensions) VALUES",
        [(ch.table, SCHEMA_VERSION + 1, datetime(2100, 1, 1), "{}")],
    )
    with pytest.raises(ConfigurationError, match="newer than this llamonitor"):
        ch.write(table_of([span_row(1)]))


# -- faults and configuration ------------------------------------------------------


def test_a_start_time_outside_datetime_is_rejected_and_the_rest_written(ch: CHStore) -> None:
    """ClickHouse's DateTime holds 1970 to 2106: a span outside is rejected (with
    the reason), the others of its batch are written."""
    rows = [span_row(0), span_row(1, timestamp=datetime(1969, 12, 31, tzinfo=UTC)), span_row(2)]
    with pytest.raises(RowsRejected) as info:
        ch.write(table_of(rows))
    assert info.value.rejected.column("event_id").to_pylist() == ["e000001"]
    assert "DateTime range" in info.value.errors[0]
    with ch.query() as q:
        assert sorted(r["event_id"] for r in q.events(limit=None)) == ["e000000", "e000002"]


def test_an_unreachable_server_is_a_transient_store_error(tmp_path: Path) -> None:
    """Nothing listening: the write fails with a StoreError the transport retries
    (then spools), the password masked."""
    from _clickhouse import free_port

    dsn = f"clickhouse://u:S3cr3t@127.0.0.1:{free_port()}/default?connect_timeout=2"
    backend = create_backend(StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn)))
    with pytest.raises(StoreError) as info:
        asyncio.run(backend.initialize())
    assert info.value.llamonitor_transient
    assert "S3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"options": {"compression": "lz4"}}, "storage.options"),
        ({"schema_name": "analytics"}, "storage.schema_name"),
        ({"table_name": "bad-name"}, "storage.table_name"),
        ({"connection_string": SecretStr("postgresql://h/db")}, "storage.connection_string"),
    ],
)
def test_bad_configuration_names_the_setting(settings: dict[str, Any], setting: str) -> None:
    given: dict[str, Any] = {"connection_string": SecretStr("clickhouse://127.0.0.1:9000/db")}
    given.update(settings)
    with pytest.raises(ConfigurationError) as info:
        create_backend(StorageConfig(backend="clickhouse", **given))
    assert info.value.setting == setting


# -- extension columns (metric groups) -------------------------------------------


def _write_each(ch: CHStore, *tables: pa.Table) -> None:
    """Each table through a backend of its own (as separate workers would)."""
    for table in tables:
        ch.write(table)


def test_extension_columns_of_two_batches_are_both_read(clickhouse_server: Any) -> None:
    """Two batches, each bringing a column of its own within the same second
    (one meta record each), read back with both columns' values, every time:
    the columns read are the table's, not only the latest meta record's."""
    from _clickhouse import CHStore

    for _ in range(10):
        ch = CHStore(clickhouse_server, f"t_{secrets.token_hex(5)}")
        try:
            x = pa.Table.from_pylist([{**span_row(0), "grp_x": 1.5}])
            y = pa.Table.from_pylist([{**span_row(1), "grp_y": "why"}])
            ch.write(x, y)
            with ch.query() as q:
                got = {r["event_id"]: r for r in q.events(limit=None)}
            assert got["e000000"]["grp_x"] == 1.5
            assert got["e000001"]["grp_y"] == "why"
            assert got["e000000"]["grp_y"] is None
        finally:
            ch.drop()


def test_meta_records_are_strictly_ordered(ch: CHStore) -> None:
    """Records written in the same second: the latest one is the one read."""
    from clickhouse_driver import Client

    from llamonitor.storage import _clickhouse_ddl

    ch.write(table_of([span_row(0)]))
    client = Client.from_url(ch.dsn)
    try:
        meta = _clickhouse_ddl.meta(client.execute, "default")
        for i in range(5):
            _clickhouse_ddl._record(client.execute, meta, ch.table, f'{{"c{i}": "string"}}')
            _, recorded = _clickhouse_ddl.read_meta(client.execute, "default", ch.table)
            assert recorded == {f"c{i}": "string"}
    finally:
        client.disconnect()


def test_an_extension_column_whose_name_is_not_an_identifier_is_rejected(ch: CHStore) -> None:
    """A column named with ``%`` (or a space) is not added: the rows with a
    value in it are rejected, with the reason; the others are written, and
    reads keep working."""
    rows = [
        {**span_row(0), "grp%s": 1.0, "grp ok": None, "timestamp_us": None},  # row 0's keys
        {**span_row(1), "grp%s": None, "grp ok": None},
        {**span_row(2), "grp ok": "x"},
        {**span_row(3), "timestamp_us": 5},  # the start time's own microseconds column
    ]
    with pytest.raises(RowsRejected) as info:
        ch.write(pa.Table.from_pylist(rows))
    rejected = sorted(info.value.rejected.column("event_id").to_pylist())
    assert rejected == ["e000000", "e000002", "e000003"]
    assert all("not a usable column name" in e for e in info.value.errors)
    names = {
        n for (n,) in ch.execute(f"SELECT name FROM system.columns WHERE table = '{ch.table}'")
    }
    assert "grp%s" not in names and "grp ok" not in names
    with ch.query() as q:
        assert [r["event_id"] for r in q.events(limit=None)] == ["e000001"]


def test_a_column_with_percent_in_its_name_does_not_break_reads(ch: CHStore) -> None:
    """A column with ``%`` in its name (added, and recorded, by an earlier
    llamonitor or by hand) is not read, and does not break the query's
    parameters."""
    ch.write(table_of([span_row(0, session_id="s")]))
    ch.execute(f"ALTER TABLE `{ch.table}` ADD COLUMN `odd%s` Nullable(String)")
    ch.execute(
        "INSERT INTO llamonitor_schema_version (table_name, schema_version, updated_at, "
        "extensions) VALUES",
        [(ch.table, SCHEMA_VERSION, datetime(2100, 1, 1), '{"odd%s": "string"}')],
    )
    with ch.query() as q:
        got = q.events(session_id="s", limit=None)
    assert [r["event_id"] for r in got] == ["e000000"]
    assert "odd%s" not in got[0]


def test_extension_columns_of_any_arrow_type_are_written(ch: CHStore) -> None:
    """Integers and floats of every width, a list, a struct: integers become
    Int64, floats Float64, anything else JSON text; all read back."""
    table = pa.table(
        {
            "event_id": ["e0", "e1"],
            "session_id": ["s", "s"],
            "trace_id": ["t" * 32, "t" * 32],
            "span_id": ["a" * 16, "b" * 16],
            "operation_name": ["op", "op"],
            "operation_type": ["tool", "tool"],
            "timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            "process_id": [1, 1],
            "grp_i8": pa.array([-3, None], pa.int8()),
            "grp_u64": pa.array([2**63 - 1, 7], pa.uint64()),
            "grp_f32": pa.array([0.5, None], pa.float32()),
            "grp_list": pa.array([[1, 2], None], pa.list_(pa.int64())),
            "grp_struct": pa.array([{"a": 1}, {"a": None}], pa.struct([("a", pa.int64())])),
        }
    )
    ch.write(table)
    columns = dict(
        ch.execute("SELECT name, type FROM system.columns WHERE table = %(t)s", {"t": ch.table})
    )
    assert columns["grp_i8"] == "Nullable(Int64)"
    assert columns["grp_u64"] == "Nullable(Int64)"
    assert columns["grp_f32"] == "Nullable(Float64)"
    assert columns["grp_list"] == "Nullable(String)"
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
    assert got["e0"]["grp_i8"] == -3 and got["e1"]["grp_i8"] is None
    assert got["e0"]["grp_u64"] == 2**63 - 1
    assert got["e0"]["grp_f32"] == 0.5
    assert json.loads(got["e0"]["grp_list"]) == [1, 2] and got["e1"]["grp_list"] is None
    assert json.loads(got["e1"]["grp_struct"]) == {"a": None}


def test_an_unsigned_value_beyond_int64_is_rejected(ch: CHStore) -> None:
    """A uint64 above Int64's range cannot be stored as Int64: its row is
    rejected with the reason, the others are written."""
    rows = pa.Table.from_pylist([span_row(0), span_row(1)]).append_column(
        "grp_big", pa.array([2**64 - 1, 5], pa.uint64())
    )
    with pytest.raises(RowsRejected) as info:
        ch.write(rows)
    assert info.value.rejected.column("event_id").to_pylist() == ["e000000"]
    assert "grp_big" in info.value.errors[0]
    with ch.query() as q:
        assert [(r["event_id"], r["grp_big"]) for r in q.events(limit=None)] == [("e000001", 5)]


def test_a_column_another_writer_added_first_is_no_failure(ch: CHStore) -> None:
    """A worker whose view of the columns is stale (another one added the
    column between its look and its ALTER): the ADD COLUMN finds the column
    there, which is no failure."""
    from clickhouse_driver import Client

    from llamonitor.storage import _clickhouse_ddl

    ch.write(table_of([span_row(0)]))
    client = Client.from_url(ch.dsn)
    try:
        for _ in range(2):  # the second time as the worker that lost the race
            stale: dict[str, str] = {}
            _clickhouse_ddl.add_missing(
                client.execute, "default", ch.table, stale, [pa.field("grp_z", pa.int64())]
            )
    finally:
        client.disconnect()
    ch.write(pa.Table.from_pylist([{**span_row(1), "grp_z": 2}]))
    with ch.query() as q:
        assert sorted(r["grp_z"] or 0 for r in q.events(limit=None)) == [0, 2]


def test_a_meta_table_without_version_gets_it(ch: CHStore) -> None:
    """A meta table of an earlier llamonitor (no version column) gets one,
    and its record (the schema version) is still read."""
    database = f"d_{secrets.token_hex(4)}"
    ch.execute(f"CREATE DATABASE `{database}`")
    try:
        ch.execute(
            f"CREATE TABLE `{database}`.llamonitor_schema_version (table_name String, "
            "schema_version UInt32, updated_at DateTime, extensions String) "
            "ENGINE = ReplacingMergeTree(updated_at) ORDER BY table_name"
        )
        dsn = ch.dsn.rsplit("/", 1)[0] + f"/{database}"
        config = StorageConfig(
            backend="clickhouse", connection_string=SecretStr(dsn), table_name=ch.table
        )
        asyncio.run(create_backend(config).initialize())
        columns = ch.execute(
            "SELECT name FROM system.columns WHERE database = %(d)s AND table = "
            "'llamonitor_schema_version'",
            {"d": database},
        )
        assert ("version",) in columns
        ch.execute(  # an earlier llamonitor's record, without a version: still the latest
            f"INSERT INTO `{database}`.llamonitor_schema_version (table_name, schema_version, "
            "updated_at, extensions) VALUES",
            [(ch.table, SCHEMA_VERSION + 1, datetime(2100, 1, 1), "{}")],
        )
        with pytest.raises(ConfigurationError, match="newer than this llamonitor"):
            asyncio.run(create_backend(config).initialize())
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS `{database}`")
