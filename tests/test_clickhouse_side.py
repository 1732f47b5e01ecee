"""The ClickHouse side tables (scores, metric points; ``_clickhouse_side``):
a table of an older llamonitor is read as it is by a process that has not
written (no migration yet), a missing table or database is empty, any other
failure is an error; every type a side table may use round-trips, nulls too,
and a schema of another type is refused when defined (a private server,
tests/_clickhouse.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from llamonitor.metrics._store import read_points, write_points
from llamonitor.schema._rejected import RowsRejected
from llamonitor.schema._scores import scores_table
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _clickhouse_side
from llamonitor.storage._scores import ScoreFilters, read_scores, write_scores
from llamonitor.storage._sql import StoreError

sys.path.insert(0, str(Path(__file__).parent))
from test_score_store import _score, ch_execute

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture

T = datetime(2026, 1, 10, tzinfo=timezone.utc)


@pytest.fixture
def store(clickhouse_server: Any) -> Iterator[StorageConfig]:
    """A database of the test's own, dropped afterwards."""
    with clickhouse_server.fresh_database("sd_") as store:
        yield store


def _db(store: StorageConfig) -> str:
    assert store.connection_string is not None
    return store.connection_string.get_secret_value().rsplit("/", 1)[1]


def _points(n: int = 1, **columns: list[Any]) -> pa.Table:
    cols: dict[str, list[Any]] = {
        "timestamp": [T] * n, "name": ["m"] * n, "kind": ["gauge"] * n,
        "labels": ["{}"] * n, "resolution_seconds": [0] * n, "value": [1.0] * n,
    }  # fmt: skip
    cols.update(columns)
    return pa.table(cols)


def test_an_older_table_is_read_before_any_write_migrates_it(
    store: StorageConfig, clickhouse_server: Any
) -> None:
    """A reader (report, serve) of a table one column short of today's schema
    (an older llamonitor's, not migrated yet: no writer of this version ran)
    reads every row, the missing column null."""
    write_scores(store, scores_table([_score("a", metadata={"k": 1}), _score("b")]))
    write_points(store, _points(source=["cpu"]))
    db = _db(store)
    ch_execute(clickhouse_server, f"ALTER TABLE {db}.llamonitor_scores DROP COLUMN metadata")
    ch_execute(clickhouse_server, f"ALTER TABLE {db}.metric_points DROP COLUMN source")
    _clickhouse_side._created.clear()  # a new process, which has not written

    scores = read_scores(store).to_pylist()
    assert sorted((r["name"], r["metadata"]) for r in scores) == [("a", None), ("b", None)]
    later = ScoreFilters(since=datetime(2026, 4, 1, tzinfo=timezone.utc))
    assert read_scores(store, later).num_rows == 0
    points = read_points(store).to_pylist()
    assert [(p["name"], p["value"], p["source"]) for p in points] == [("m", 1.0, None)]
    assert read_points(store, name="m", resolution=0).num_rows == 1


def test_an_older_table_without_its_microseconds_reads_whole_seconds(
    store: StorageConfig, clickhouse_server: Any
) -> None:
    write_points(store, _points(timestamp=[T.replace(microsecond=250)]))
    table = f"{_db(store)}.metric_points"
    ch_execute(clickhouse_server, f"ALTER TABLE {table} DROP COLUMN timestamp_us")
    _clickhouse_side._created.clear()
    assert read_points(store).column("timestamp").to_pylist() == [T]


def test_a_missing_table_or_database_is_empty(store: StorageConfig) -> None:
    assert read_scores(store).num_rows == 0 and read_points(store).num_rows == 0
    assert store.connection_string is not None
    dsn = store.connection_string.get_secret_value().rsplit("/", 1)[0] + "/no_such_db"
    other = StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn))
    assert read_scores(other).num_rows == 0 and read_points(other).num_rows == 0


def test_a_table_without_a_required_column_is_an_error(
    store: StorageConfig, clickhouse_server: Any
) -> None:
    """A table that lacks a column no llamonitor table ever lacked (not a
    migration's gap) is a StoreError naming it, not an empty store."""
    ch_execute(
        clickhouse_server,
        f"CREATE TABLE {_db(store)}.llamonitor_scores (x UInt8) ENGINE = MergeTree ORDER BY x",
    )
    ch_execute(clickhouse_server, f"INSERT INTO {_db(store)}.llamonitor_scores SELECT 1")
    with pytest.raises(StoreError, match="score_id"):
        read_scores(store)


_US = pa.timestamp("us", tz="UTC")


def test_every_supported_type_round_trips_with_nulls(store: StorageConfig) -> None:
    """A side table of every type the schema may use (a nullable timestamp, a
    boolean, binary...) writes and reads back what it was given, nulls too."""
    schema = pa.schema([
        pa.field("timestamp", _US, False), pa.field("done_at", _US, True),
        pa.field("ok", pa.bool_(), True), pa.field("flag", pa.int32(), True),
        pa.field("n", pa.int64(), True), pa.field("x", pa.float64(), True),
        pa.field("s", pa.string(), True), pa.field("blob", pa.binary(), True),
    ])  # fmt: skip
    spec = _clickhouse_side.SideTable("t_types", schema, "things", "MergeTree ORDER BY `timestamp`")
    rows = [
        {"timestamp": T, "done_at": T.replace(microsecond=7), "ok": True, "flag": 1,
         "n": 2**63 - 1, "x": 0.5, "s": "é", "blob": b"\xff\x00\x80"},
        {"timestamp": T, "done_at": None, "ok": False, "flag": None, "n": None, "x": None,
         "s": None, "blob": None},
        {"timestamp": T, "done_at": None, "ok": None, "flag": None, "n": None, "x": None,
         "s": None, "blob": None},
    ]  # fmt: skip
    _clickhouse_side.write(spec, store, pa.Table.from_pylist(rows, schema=schema))
    got = _clickhouse_side.fetch(spec, store)
    assert got.schema.equals(schema)
    key = lambda r: (r["ok"] is None, r["ok"] is False)  # noqa: E731
    assert sorted(got.to_pylist(), key=key) == rows


def test_a_row_whose_other_timestamp_is_out_of_range_is_refused_alone(
    store: StorageConfig,
) -> None:
    schema = pa.schema([pa.field("timestamp", _US, False), pa.field("done_at", _US, True)])
    spec = _clickhouse_side.SideTable("t_range", schema, "things", "MergeTree ORDER BY `timestamp`")
    far = datetime(2200, 1, 1, tzinfo=timezone.utc)
    table = pa.Table.from_pylist(
        [{"timestamp": T, "done_at": far}, {"timestamp": T, "done_at": None}], schema=schema
    )
    with pytest.raises(RowsRejected) as info:
        _clickhouse_side.write(spec, store, table)
    assert info.value.rejected.num_rows == 1 and "done_at" in info.value.errors[0]
    assert _clickhouse_side.fetch(spec, store).to_pylist() == [{"timestamp": T, "done_at": None}]


def test_a_schema_of_a_type_the_store_cannot_hold_is_refused_at_definition() -> None:
    schema = pa.schema([pa.field("timestamp", _US, False), pa.field("tags", pa.list_(pa.string()))])
    with pytest.raises(TypeError, match=r"t_bad.*tags.*list"):
        _clickhouse_side.SideTable("t_bad", schema, "things", "MergeTree ORDER BY `timestamp`")
    ms = pa.schema([pa.field("timestamp", pa.timestamp("ms", tz="UTC"), False)])
    with pytest.raises(TypeError, match="microseconds"):
        _clickhouse_side.SideTable("t_ms", ms, "things", "MergeTree ORDER BY `timestamp`")
