"""Metric points in the SQL stores: a batch with points the database refuses
for their content writes every other point and names the refused ones
(RowsRejected), and the worker drops and counts only those."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from llamonitor import metrics
from llamonitor.metrics import METRIC_SCHEMA, read_points, write_points
from llamonitor.metrics._registry import REGISTRY
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import RowsRejected

from .conftest import storage_of

T = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

# What each database refuses, and a word of its error. SQLite refuses nothing a
# points table allows, so the test gives the table a trigger an operator might
# add (RAISE(ABORT): a constraint error, as a CHECK would give).
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "postgres": ({"labels": '{"k":"nul\x00byte"}'}, "0x00"),
    "mysql": ({"name": "x" * 300}, "Data too long"),
    "sqlite": ({"name": "refused_by_trigger"}, "no such points here"),
}


@pytest.fixture(params=("sqlite", "postgres", "mysql"))
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageConfig]:
    yield from storage_of(str(request.param), tmp_path)


def _prepare(storage: StorageConfig, name: str) -> None:
    """Create the table (a first write); on SQLite, add the refusing trigger."""
    write_points(storage, _batch(name, 1))
    if storage.backend == "sqlite":
        import sqlite3

        assert storage.connection_string is not None
        path = storage.connection_string.get_secret_value().removeprefix("sqlite:///")
        con = sqlite3.connect(path)
        con.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON metric_points "
            "WHEN NEW.name = 'refused_by_trigger' "
            "BEGIN SELECT RAISE(ABORT, 'no such points here'); END"
        )
        con.commit()
        con.close()


def _batch(name: str, n: int, bad: dict[int, dict[str, Any]] | None = None) -> pa.Table:
    rows = [
        dict(
            timestamp=T + timedelta(seconds=10 * i),
            name=name,
            kind="gauge",
            labels="{}",
            resolution_seconds=0,
            value=float(i),
            source="test",
        )
        for i in range(n)
    ]
    for i, values in (bad or {}).items():
        rows[i].update(values)
    return pa.Table.from_pylist(rows, schema=METRIC_SCHEMA)


def test_refused_points_are_isolated_and_the_rest_written(
    sql_store: StorageConfig, name: str
) -> None:
    """Two points of 101 the database refuses: the 99 others are stored, and
    RowsRejected holds the two (as given) with the database's error for each;
    writing the batch again refuses the same two."""
    _prepare(sql_store, name)
    values, word = BAD[str(sql_store.backend)]
    table = _batch(name, 101, {37: values, 64: values})
    for _ in range(2):
        with pytest.raises(RowsRejected) as info:
            write_points(sql_store, table)
        rejected = info.value.rejected
        assert rejected.schema.equals(METRIC_SCHEMA)
        assert rejected.column("value").to_pylist() == [37.0, 64.0]
        assert rejected.column("timestamp").to_pylist() == [
            T + timedelta(seconds=370),
            T + timedelta(seconds=640),
        ]
        assert len(info.value.errors) == 2
        assert all(word in e for e in info.value.errors), info.value.errors
    stored = read_points(sql_store, name=name).column("value").to_pylist()
    assert sorted(stored) == sorted([0.0] + 2 * [float(i) for i in range(101) if i not in (37, 64)])


def test_the_worker_drops_and_counts_only_the_refused_points(tmp_path: Path, name: str) -> None:
    """The worker's batch holds one series the store refuses (a SQLite trigger):
    the other instruments' points are written, the refused are counted in
    health()["rejected"], nothing raises, nothing stays pending."""
    storage = next(storage_of("sqlite", tmp_path))
    _prepare(storage, name)
    good = metrics.gauge(name, "a gauge the store takes")
    bad = metrics.gauge("refused_by_trigger", "a gauge the store refuses")
    try:
        metrics.configure(storage=storage, interval_seconds=3600, max_retries=0)
        before = metrics.health()
        good.set(42.0)
        bad.set(1.0)
        assert metrics.flush() > 0
        after = metrics.health()
        assert after["rejected"] - before["rejected"] >= 1
        assert after["pending"] == 0
        assert 42.0 in read_points(storage, name=name).column("value").to_pylist()
        assert read_points(storage, name="refused_by_trigger").num_rows == 0
    finally:
        REGISTRY.unregister(name)
        REGISTRY.unregister("refused_by_trigger")


def test_a_second_process_migrates_an_older_points_table(tmp_path: Path) -> None:
    """A metric_points table lacking a column (an older llamonitor's) gets it at
    the first write, and the points round-trip."""
    import sqlite3

    from llamonitor.metrics import _sql_points

    storage = next(storage_of("sqlite", tmp_path))
    assert storage.connection_string is not None
    path = storage.connection_string.get_secret_value().removeprefix("sqlite:///")
    name = "m_" + secrets.token_hex(4)
    write_points(storage, _batch(name, 3))
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE metric_points DROP COLUMN source")
    con.commit()
    con.close()
    _sql_points.POINTS.created.clear()  # a new process
    write_points(storage, _batch(name, 2))
    got = read_points(storage, name=name)
    assert got.num_rows == 5
    assert got.column("source").to_pylist().count("test") == 2
