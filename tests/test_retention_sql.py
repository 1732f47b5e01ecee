"""Retention on the SQL stores (``llamonitor.metrics._retention_sql``) against
SQLite and the real PostgreSQL and MySQL/MariaDB servers: batched deletes
counted before and after, rollups first, dry runs, a partitioned PostgreSQL
table's months dropped whole, and a lock so two runs never overlap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from _retention_data import (
    T0,
    point_rows,
    span_ids,
    span_times,
    storage_of,
    write_raw_points,
    write_spans,
)
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.metrics._retention_plan import RetentionError
from llamonitor.metrics._retention_sql import exclusive
from llamonitor.schema.config import StorageConfig

pytest_plugins = ["_servers"]

NOW = T0 + timedelta(days=10)
POLICY = RetentionConfig(spans_days=4.5, batch_rows=50)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageConfig]:
    yield from storage_of(str(request.param), tmp_path)


def build(storage: StorageConfig) -> tuple[list[datetime], list[datetime]]:
    times = span_times(days=10, per_day=24)
    write_spans(storage, times)
    raw = write_raw_points(storage, T0 + timedelta(days=8), count=2 * 288, step_seconds=300)
    return times, raw


def test_every_row_inside_the_policy_stays_and_every_one_past_it_goes(
    sql_store: StorageConfig,
) -> None:
    """Spans and raw points counted before and after (in batches of 50, each its
    own transaction): kept exactly from the cutoff on, once each; the raw
    points' 1 min/5 min/1 h rollups were built before they went."""
    times, raw = build(sql_store)
    report = apply_retention(sql_store, POLICY, now=NOW)
    cutoff = NOW - timedelta(days=4.5)
    expected = {f"ev{i:07d}" for i, t in enumerate(times) if t >= cutoff}
    left = span_ids(sql_store)
    assert len(left) == len(set(left)) == len(expected)
    assert set(left) == expected
    assert report.tallies["spans"].rows == len(times) - len(expected)
    rows = point_rows(sql_store)
    raw_cut = NOW - timedelta(days=1)
    kept_raw = sorted(
        r["timestamp"] for r in rows if r["resolution_seconds"] == 0 and r["name"] == "g"
    )
    assert kept_raw == [t for t in raw if t >= raw_cut]
    for res in (60, 300, 3600):
        counted = sum(
            r["count"]
            for r in rows
            if r["resolution_seconds"] == res and r["name"] == "g" and r["timestamp"] < raw_cut
        )
        assert counted == sum(1 for t in raw if t < raw_cut), res
    again = apply_retention(sql_store, POLICY, now=NOW)
    assert again.rows == 0 and point_rows(sql_store) == rows


def test_a_dry_run_deletes_nothing_and_counts_what_apply_deletes(sql_store: StorageConfig) -> None:
    build(sql_store)
    spans, points = sorted(span_ids(sql_store)), point_rows(sql_store)
    dry = apply_retention(sql_store, POLICY, now=NOW, dry_run=True)
    assert sorted(span_ids(sql_store)) == spans
    assert point_rows(sql_store) == points
    real = apply_retention(sql_store, POLICY, now=NOW)
    assert dry.tallies["spans"].rows == real.tallies["spans"].rows > 0
    assert dry.tallies["metric_points@0"].rows == real.tallies["metric_points@0"].rows > 0


def test_far_past_and_far_future_clocks(sql_store: StorageConfig) -> None:
    """1990: nothing goes. 2200: all spans and raw points go, the 1 h rollups
    (kept forever) hold every raw point and every span."""
    times, raw = build(sql_store)
    assert apply_retention(sql_store, POLICY, now=datetime(1990, 1, 1)).rows == 0
    assert len(span_ids(sql_store)) == len(times)
    policy = RetentionConfig(
        spans_days=1,
        points=[{"resolution": "raw", "retention": "1d"}, {"resolution": "1m", "retention": "2d"}],
    )
    apply_retention(sql_store, policy, now=datetime(2200, 1, 1))
    assert span_ids(sql_store) == []
    rows = point_rows(sql_store)
    assert 0 not in {r["resolution_seconds"] for r in rows}
    hourly = [r for r in rows if r["resolution_seconds"] == 3600]
    assert sum(r["count"] for r in hourly if r["name"] == "g") == len(raw)
    assert sum(r["sum"] for r in hourly if r["name"] == "llm_spans_total") == len(times)


def test_a_second_run_on_the_same_table_is_refused(sql_store: StorageConfig) -> None:
    """While one retention holds the store's lock, another raises and deletes nothing."""
    times, _ = build(sql_store)
    with (
        exclusive(sql_store, str(sql_store.backend)),
        pytest.raises(RetentionError, match="another retention"),
    ):
        apply_retention(sql_store, POLICY, now=NOW)
    assert len(span_ids(sql_store)) == len(times)


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[StorageConfig]:
    yield from storage_of("postgres", tmp_path, options={"partition": "monthly"})


def test_postgres_months_past_the_cutoff_are_dropped_whole(partitioned: StorageConfig) -> None:
    """March and April (wholly before the cutoff of May 10) are dropped as
    partitions; May's rows before the cutoff go by batched deletes."""
    from _servers import _execute, server_dsn

    times = span_times(days=90, per_day=4, start=T0 - timedelta(days=61))
    write_spans(partitioned, times)
    now = datetime(2024, 5, 20, tzinfo=T0.tzinfo)
    report = apply_retention(partitioned, RetentionConfig(spans_days=10, batch_rows=7), now=now)
    cutoff = now - timedelta(days=10)
    expected = {f"ev{i:07d}" for i, t in enumerate(times) if t >= cutoff}
    left = span_ids(partitioned)
    assert len(left) == len(expected) and set(left) == expected
    tally = report.tallies["spans"]
    assert tally.partitions_dropped == 2
    assert tally.rows == len(times) - len(expected)
    parts = _execute(
        "postgres",
        server_dsn("postgres"),
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
        (partitioned.schema_name,),
    )
    names = {r[0] for r in parts}
    assert not any(n.endswith(("p2024_03", "p2024_04")) for n in names)
    assert any(n.endswith("p2024_05") for n in names)
