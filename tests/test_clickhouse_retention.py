"""Retention on the ClickHouse store: refused before anything is touched, with
an error naming the setting and the way to do it there (dropping a month's
partition; for metric points the raw points' month, after ``llamonitor
metrics rollup``), and that way works on ClickHouse 18.16 (a private server)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from llamonitor.metrics._retention import apply_retention
from llamonitor.metrics._store import read_points, write_points
from llamonitor.schema._retention_config import RetentionConfig
from llamonitor.schema.config import ConfigurationError, StorageConfig

sys.path.insert(0, str(Path(__file__).parent))
from _clickhouse_data import run, table_of, workload
from test_score_store import ch_execute

if TYPE_CHECKING:
    from _clickhouse import CHStore

pytest_plugins = ["_clickhouse"]  # the clickhouse_server and ch fixtures

UTC = timezone.utc


def test_retention_is_refused_naming_the_setting_and_nothing_goes(ch: CHStore) -> None:
    rows = workload(40)  # January 30 to February 1
    ch.write(table_of(rows))
    with pytest.raises(
        ConfigurationError,
        match=r"storage\.backend.*DROP PARTITION 202601.*"
        r"metric_points DROP PARTITION \(0, 202601\).*llamonitor metrics rollup",
    ):
        apply_retention(ch.config(), RetentionConfig(spans_days=1))
    result = run("retention", "apply", "--dsn", ch.dsn, "--table", ch.table, "--spans-days", "1")
    assert result.exit_code != 0 and "storage.backend" in result.output
    assert ch.raw_count() == len(rows)


def test_the_documented_partition_drop_removes_one_month(ch: CHStore) -> None:
    rows = workload(40)
    ch.write(table_of(rows))
    january = sum(1 for r in rows if r["timestamp"].month == 1)
    assert 0 < january < len(rows)
    ch.execute(f"ALTER TABLE `{ch.table}` DROP PARTITION 202601")
    assert ch.raw_count() == len(rows) - january
    with ch.query() as q:
        assert q.count() == len(rows) - january


@pytest.fixture
def points_store(clickhouse_server: Any) -> Iterator[StorageConfig]:
    """A database of the test's own (its points table is always ``metric_points``)."""
    with clickhouse_server.fresh_database("rt_") as store:
        yield store


def _raw_points(start: datetime, minutes: int) -> pa.Table:
    n = minutes * 6  # a gauge every 10 s
    return pa.table({
        "timestamp": [start + timedelta(seconds=10 * i) for i in range(n)],
        "name": ["queue_depth"] * n, "kind": ["gauge"] * n, "labels": ["{}"] * n,
        "resolution_seconds": [0] * n, "value": [float(i % 7) for i in range(n)],
    })  # fmt: skip


def _resolutions(store: StorageConfig) -> dict[int, int]:
    return Counter(read_points(store).column("resolution_seconds").to_pylist())


def test_dropping_a_month_of_raw_points_keeps_its_rollups(
    points_store: StorageConfig, clickhouse_server: Any
) -> None:
    """The documented way on ClickHouse: ``llamonitor metrics rollup`` builds the
    rollups, then ``DROP PARTITION (0, 202601)`` removes January's raw points
    only: the rollups of January and February's raw points stay."""
    write_points(points_store, _raw_points(datetime(2026, 1, 31, 23, 0, tzinfo=UTC), 120))
    assert points_store.connection_string is not None
    dsn = points_store.connection_string.get_secret_value()
    result = run("metrics", "rollup", "--dsn", dsn, "--no-spans", "--json")
    assert result.exit_code == 0, result.output
    before = _resolutions(points_store)
    assert set(before) == {0, 60, 300, 3600}
    db = dsn.rsplit("/", 1)[1]
    ch_execute(clickhouse_server, f"ALTER TABLE {db}.metric_points DROP PARTITION (0, 202601)")
    after = _resolutions(points_store)
    assert after[0] == 360 and {r: after[r] for r in (60, 300, 3600)} == {
        r: before[r] for r in (60, 300, 3600)
    }


def test_a_points_table_partitioned_by_month_only_keeps_working(
    points_store: StorageConfig, clickhouse_server: Any
) -> None:
    """A ``metric_points`` made before the partitioning by resolution (by month
    only) is written and read as it is, not refused nor re-created."""
    from llamonitor.metrics._clickhouse_points import POINTS

    db = points_store.connection_string.get_secret_value().rsplit("/", 1)[1]  # type: ignore[union-attr]
    old = POINTS.engine.replace(
        "PARTITION BY (`resolution_seconds`, toYYYYMM(`timestamp`))",
        "PARTITION BY toYYYYMM(`timestamp`)",
    )
    assert old != POINTS.engine
    ch_execute(
        clickhouse_server,
        f"CREATE TABLE {db}.metric_points ({', '.join(POINTS.column_defs())}) ENGINE = {old}",
    )
    write_points(points_store, _raw_points(datetime(2026, 1, 10, tzinfo=UTC), 1))
    assert _resolutions(points_store) == {0: 6}
    (key,) = ch_execute(
        clickhouse_server,
        f"SELECT partition_key FROM system.tables WHERE database = '{db}' "
        "AND name = 'metric_points'",
    )
    assert key == ("toYYYYMM(timestamp)",)
