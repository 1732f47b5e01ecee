"""Retention and downsampling on the Parquet store (``llamonitor.metrics._retention``):
counted before and after, partial files rewritten, rollups before raw points
go, dry runs, clock jumps, the CLI, and bad settings."""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from _retention_data import (
    T0,
    UTC,
    point_keys,
    point_rows,
    snapshot,
    span_ids,
    span_times,
    write_raw_points,
    write_spans,
)
from llamonitor.cli import cli
from llamonitor.metrics import RetentionConfig, apply_retention, show_retention
from llamonitor.schema.config import ConfigurationError, MonitorConfig, StorageConfig
from llamonitor.storage._compact import LOCK_NAME, CompactionError
from llamonitor.storage.parquet import data_files

NOW = T0 + timedelta(days=10)
RAW_START = T0 + timedelta(days=8)
POLICY = RetentionConfig(spans_days=4.5)  # the seed's ladder for points: raw 1 d, 1m 7 d...


def build(storage: StorageConfig, sessions: int = 1) -> tuple[list[datetime], list[datetime]]:
    times = span_times()
    write_spans(storage, times, sessions=sessions)
    raw = write_raw_points(storage, RAW_START, count=2 * 1440, step_seconds=60)
    return times, raw


def kept_spans(times: list[datetime], days: float) -> set[str]:
    cutoff = NOW - timedelta(days=days)
    return {f"ev{i:07d}" for i, t in enumerate(times) if t >= cutoff}


@pytest.mark.parametrize("sessions", [1, 3])
def test_every_span_inside_the_policy_stays_and_every_one_past_it_goes(
    tmp_path: Path, sessions: int
) -> None:
    """Counted before and after, by event id: the kept set is exactly the spans
    at or after the cutoff, once each (date layout, and session layout where
    every file straddles the cutoff and is rewritten)."""
    partition = "date" if sessions == 1 else "session_id"
    storage = StorageConfig(output_dir=tmp_path / "store", partition_by=partition)
    times, _ = build(storage, sessions)
    assert len(span_ids(storage)) == len(times)
    report = apply_retention(storage, POLICY, now=NOW)
    left = span_ids(storage)
    expected = kept_spans(times, 4.5)
    assert len(left) == len(set(left)) == len(expected)
    assert set(left) == expected
    tally = report.tallies["spans"]
    assert tally.rows == len(times) - len(expected)
    assert tally.files_rewritten >= 1  # the day (or the sessions' files) split by the cutoff
    if partition == "date":
        assert tally.files_removed == 5  # the five whole days before it


def test_raw_points_go_only_after_their_rollups_exist(tmp_path: Path) -> None:
    """Raw points past 1 d go; the 1 min, 5 min and 1 h rollups of every one of
    them exist first (the gauge's window counts add up to the raw points)."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    _, raw = build(storage)
    report = apply_retention(storage, POLICY, now=NOW)
    rows = point_rows(storage)
    cutoff = NOW - timedelta(days=1)
    left_raw = [r["timestamp"] for r in rows if r["resolution_seconds"] == 0 and r["name"] == "g"]
    assert sorted(left_raw) == [t for t in raw if t >= cutoff]
    assert report.tallies["metric_points@0"].rows == 2 * sum(1 for t in raw if t < cutoff)
    for res in (60, 300, 3600):
        gone = sum(
            r["count"]
            for r in rows
            if r["resolution_seconds"] == res and r["name"] == "g" and r["timestamp"] < cutoff
        )
        assert gone == sum(1 for t in raw if t < cutoff), res
    assert report.rollups_written["points@60"] > 0


def test_applying_twice_gives_the_same_rows(tmp_path: Path) -> None:
    """Idempotent: a second run at the same time builds and removes nothing."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    build(storage)
    apply_retention(storage, POLICY, now=NOW)
    points, spans = point_rows(storage), sorted(span_ids(storage))
    again = apply_retention(storage, POLICY, now=NOW)
    assert again.rows == 0
    assert sum(again.rollups_written.values()) == 0
    assert point_rows(storage) == points
    assert sorted(span_ids(storage)) == spans


def test_a_dry_run_changes_nothing_and_counts_what_apply_removes(tmp_path: Path) -> None:
    """``dry_run`` (and ``retention show``, ``apply --dry-run``) leave every file
    byte for byte; the spans it counts are the ones apply then removes."""
    storage = StorageConfig(output_dir=tmp_path / "store", partition_by="session_id")
    times, _ = build(storage, sessions=3)
    (tmp_path / "store" / ".events_x.parquet.dead.tmp").write_bytes(b"half")  # a dead writer's
    before = snapshot(tmp_path / "store")
    dry = apply_retention(storage, POLICY, now=NOW, dry_run=True)
    shown = show_retention(storage, POLICY, now=NOW)
    args = ["--dir", str(tmp_path / "store"), "--spans-days", "4.5", "--now", NOW.isoformat()]
    out = CliRunner().invoke(cli, ["retention", "apply", "--dry-run", "--json", *args])
    assert out.exit_code == 0, out.output
    assert snapshot(tmp_path / "store") == before
    assert json.loads(out.output)["dry_run"] is True
    real = apply_retention(storage, POLICY, now=NOW)
    assert dry.tallies["spans"].rows == shown.tallies["spans"].rows == real.tallies["spans"].rows
    assert dry.tallies["spans"].rows == len(times) - len(kept_spans(times, 4.5))
    assert dry.tallies["spans"].files_rewritten == real.tallies["spans"].files_rewritten


def test_a_rewritten_file_keeps_its_schema_and_codecs(tmp_path: Path) -> None:
    """The file split by the cutoff comes back with the same Arrow schema
    (metadata included) and the same codec per column."""
    storage = StorageConfig(output_dir=tmp_path / "store", compression="zstd")
    times = span_times(days=1, per_day=10, start=T0 + timedelta(days=9, hours=1))
    write_spans(storage, times)
    (path,) = data_files(tmp_path / "store")
    with pq.ParquetFile(path) as pf:
        schema, meta = pf.schema_arrow, pf.metadata
        codecs = [meta.row_group(0).column(i).compression for i in range(meta.num_columns)]
    report = apply_retention(storage, RetentionConfig(spans_days=0.25), now=NOW)
    assert report.tallies["spans"].files_rewritten == 1
    with pq.ParquetFile(path) as pf:
        assert pf.schema_arrow.equals(schema, check_metadata=True)
        m = pf.metadata
        assert [m.row_group(0).column(i).compression for i in range(m.num_columns)] == codecs
        assert 0 < m.num_rows < len(times)


def test_a_clock_far_in_the_past_removes_nothing(tmp_path: Path) -> None:
    """``now`` before the data: no cutoff reaches a row, nothing is rolled up."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    build(storage)
    points, spans = point_rows(storage), sorted(span_ids(storage))
    report = apply_retention(storage, POLICY, now=datetime(1990, 1, 1, tzinfo=UTC))
    assert report.rows == 0
    assert point_rows(storage) == points
    assert sorted(span_ids(storage)) == spans


def test_a_clock_far_in_the_future_keeps_only_what_is_kept_forever(tmp_path: Path) -> None:
    """``now`` in 2200: every span and raw, 1 min, 5 min point goes, and the
    1 h rollups (kept forever here) hold all of them: the gauge's counts and
    the spans' per-hour totals add up to what was there."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    times, raw = build(storage)
    policy = RetentionConfig(
        spans_days=30,
        points=[
            {"resolution": "raw", "retention": "1d"},
            {"resolution": "1m", "retention": "7d"},
            {"resolution": "5m", "retention": "30d"},
            {"resolution": "1h", "retention": None},
        ],
    )
    report = apply_retention(storage, policy, now=datetime(2200, 1, 1, tzinfo=UTC))
    assert span_ids(storage) == []
    rows = point_rows(storage)
    assert {r["resolution_seconds"] for r in rows} == {3600}
    assert sum(r["count"] for r in rows if r["name"] == "g") == len(raw)
    spans_total = sum(r["sum"] for r in rows if r["name"] == "llm_spans_total")
    assert spans_total == len(times)
    assert report.kept_forever == ["metric_points@3600"]


def test_a_second_retention_or_compaction_waits_its_turn(tmp_path: Path) -> None:
    """While compaction's lock is held, retention refuses (CompactionError) and
    changes nothing (not even a rollup)."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    build(storage)
    (tmp_path / "store" / LOCK_NAME).touch()
    before = snapshot(tmp_path / "store")
    with open(tmp_path / "store" / LOCK_NAME, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CompactionError, match="another compaction"):
            apply_retention(storage, POLICY, now=NOW)
    assert snapshot(tmp_path / "store") == before


def test_cli_apply_and_show(tmp_path: Path) -> None:
    """``retention apply --json`` removes and reports; ``show`` then finds
    nothing more at that time, in its table."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    times, _ = build(storage)
    args = ["--dir", str(tmp_path / "store"), "--spans-days", "4.5", "--now", NOW.isoformat()]
    out = CliRunner().invoke(cli, ["retention", "apply", "--json", *args])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    spans = next(c for c in doc["cutoffs"] if c["table"] == "spans")
    assert spans["rows"] == len(times) - len(kept_spans(times, 4.5))
    shown = CliRunner().invoke(cli, ["retention", "show", *args])
    assert shown.exit_code == 0, shown.output
    assert "metric_points" in shown.output and "raw" in shown.output
    assert (
        Counter(
            json.loads(CliRunner().invoke(cli, ["retention", "show", "--json", *args]).output)[
                "cutoffs"
            ][0]
        )["rows"]
        == 0
    )


@pytest.mark.parametrize(
    ("points", "setting"),
    [
        ([{"resolution": "2m", "retention": "1d"}], "resolution"),
        ([{"resolution": "raw", "retention": "-1d"}], "retention"),
        ([{"resolution": "raw", "retention": "7d"}, {"resolution": "1m", "retention": "1d"}], "1m"),
        ([{"resolution": "5m", "retention": "30m"}], "points[0].retention"),
        (
            [{"resolution": "raw", "retention": "1d"}, {"resolution": "raw", "retention": "2d"}],
            "also",
        ),
    ],
)
def test_bad_policies_fail_early_naming_the_setting(
    points: list[dict[str, str]], setting: str
) -> None:
    """A resolution that is not stored, a negative retention, a coarser level
    kept less long than a finer one, a level gone before its rollup window
    closes, a resolution twice: refused at construction, naming it."""
    with pytest.raises(ValidationError) as err:
        MonitorConfig(retention={"points": points})
    text = str(err.value)
    assert "retention" in text
    assert setting.replace("1m", "60 s") in text or setting in text


def test_bad_environment_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LLMOPS_RETENTION__SPANS_DAYS=-3``: the CLI fails naming spans_days, and
    ``retention_from_env`` raises a ConfigurationError naming the variable."""
    from llamonitor.metrics._retention import retention_from_env

    monkeypatch.setenv("LLMOPS_RETENTION__SPANS_DAYS", "-3")
    with pytest.raises(ConfigurationError, match="LLMOPS_RETENTION__SPANS_DAYS"):
        retention_from_env()
    out = CliRunner().invoke(cli, ["retention", "show", "--dir", "."])
    assert out.exit_code != 0
    assert "spans_days" in out.output


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LLMOPS_RETENTION__*`` builds the policy (durations as text)."""
    monkeypatch.setenv("LLMOPS_RETENTION__SPANS_DAYS", "30")
    monkeypatch.setenv(
        "LLMOPS_RETENTION__POINTS",
        '[{"resolution": "raw", "retention": "2d"}, {"resolution": "1h", "retention": "forever"}]',
    )
    monkeypatch.setenv("LLMOPS_RETENTION__INTERVAL_SECONDS", "15m")
    r = MonitorConfig().retention
    assert r.spans_days == 30
    assert r.point_retention(0) == 2 * 86400
    assert r.point_retention(3600) is None
    assert r.point_retention(60) is None  # not listed: kept forever
    assert r.interval_seconds == 900


def test_a_store_without_points_is_refused_naming_the_backend() -> None:
    with pytest.raises(ConfigurationError, match=r"storage\.backend"):
        apply_retention(StorageConfig(backend="memory"), POLICY)


def test_point_keys_are_unique_after_apply(tmp_path: Path) -> None:
    """No point is duplicated by the rollups or the rewrites."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    build(storage)
    apply_retention(storage, POLICY, now=NOW)
    keys = point_keys(storage)
    assert len(keys) == len(set(keys))


def test_a_dry_run_counts_the_rollups_apply_then_writes(tmp_path: Path) -> None:
    """``apply --dry-run`` says how many 1 min, 5 min and 1 h points (and span
    series points) the real run will write first: the same numbers, level by
    level, and nothing written by the dry run."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    build(storage)
    policy = RetentionConfig(spans_days=4.5, keep_span_rollups=True)
    before = snapshot(tmp_path / "store")
    dry = apply_retention(storage, policy, now=NOW, dry_run=True)
    assert snapshot(tmp_path / "store") == before
    args = ["--dir", str(tmp_path / "store"), "--spans-days", "4.5", "--now", NOW.isoformat()]
    out = CliRunner().invoke(cli, ["retention", "apply", "--dry-run", *args])
    assert out.exit_code == 0, out.output
    assert "rollups it would build first" in out.output and "points@60" in out.output
    real = apply_retention(storage, policy, now=NOW)
    assert dry.rollups_written == real.rollups_written
    assert all(dry.rollups_written[f"points@{r}"] > 0 for r in (60, 300, 3600))
    assert dry.rollups_written["spans@60"] > 0


def test_span_retention_on_a_jsonl_store_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """The JSONL store's spans have no retention: a spans_days policy fails
    before anything changes, naming retention.spans_days (API and CLI); a
    points-only policy still applies to its metric points."""
    storage = StorageConfig(backend="jsonl", output_dir=tmp_path / "store")
    times = span_times(days=2, per_day=4)
    write_spans(storage, times)
    write_raw_points(storage, NOW - timedelta(days=3), count=10, step_seconds=60)
    with pytest.raises(ConfigurationError, match=r"retention\.spans_days"):
        apply_retention(storage, POLICY, now=NOW, dry_run=True)
    jsonl = tmp_path / "store" / "events.jsonl"
    out = CliRunner().invoke(
        cli, ["retention", "apply", "--dir", str(jsonl), "--spans-days", "4.5"]
    )
    assert out.exit_code != 0 and "retention.spans_days" in out.output
    assert len(span_ids(storage)) == len(times)
    report = apply_retention(storage, RetentionConfig(), now=NOW)
    assert report.tallies["metric_points@0"].rows == 2 * 10


def test_retention_days_is_the_spans_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 003's ``retention_days`` sets spans_days (in code and from
    LLMOPS_RETENTION__RETENTION_DAYS); both at once is an error naming them."""
    assert RetentionConfig.model_validate({"retention_days": 30}).spans_days == 30
    monkeypatch.setenv("LLMOPS_RETENTION__RETENTION_DAYS", "7")
    assert MonitorConfig().retention.spans_days == 7
    with pytest.raises(ValidationError, match="retention_days"):
        RetentionConfig.model_validate({"retention_days": 3, "spans_days": 4})
