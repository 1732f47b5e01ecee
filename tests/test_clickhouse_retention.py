"""Retention on the ClickHouse store: refused before anything is touched, with
an error naming the setting and the way to do it there (dropping a month's
partition), and that way works on ClickHouse 18.16 (a private server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llamonitor.metrics._retention import apply_retention
from llamonitor.schema._retention_config import RetentionConfig
from llamonitor.schema.config import ConfigurationError

sys.path.insert(0, str(Path(__file__).parent))
from _clickhouse_data import run, table_of, workload

if TYPE_CHECKING:
    from _clickhouse import CHStore

pytest_plugins = ["_clickhouse"]  # the clickhouse_server and ch fixtures


def test_retention_is_refused_naming_the_setting_and_nothing_goes(ch: CHStore) -> None:
    rows = workload(40)  # January 30 to February 1
    ch.write(table_of(rows))
    with pytest.raises(ConfigurationError, match=r"storage\.backend.*DROP PARTITION"):
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
