"""The DuckDB query side over Parquet and JSON Lines stores."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llamonitor
from _helpers import T0, span_row
from llamonitor import MonitorConfig, StorageConfig, monitor_llm, monitoring_session
from llamonitor.storage import parquet
from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation
from llamonitor.storage.jsonl import JSONLBackend
from llamonitor.storage.parquet import ParquetBackend

row = span_row


def write(root: Path, rows: list[dict[str, Any]], partition_by: str = "date") -> None:
    """One ``ParquetBackend`` batch (one file per partition)."""
    backend = ParquetBackend(StorageConfig(output_dir=root, partition_by=partition_by))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, computed by hand."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@pytest.fixture
def recorded(store: Path) -> Path:
    """A store written by real decorated calls: 2 sessions x 2 traces x 4 spans."""

    @monitor_llm("child", measure_text=True)
    def child(i: int) -> str:
        if i == 2:
            raise ValueError("bad input")
        return "word " * (i + 1)

    @monitor_llm("parent", operation_type="agent_workflow")
    def parent() -> None:
        for i in range(3):
            try:
                child(i)
            except ValueError:
                pass

    llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(store))
    for session in ("alpha", "beta"):
        with monitoring_session(session):
            parent()
            parent()
    assert llamonitor.shutdown_monitoring(10)
    return store


def test_events_filters_by_session_exactly(recorded: Path) -> None:
    """Filtering by session returns all of that session's spans and nothing else."""
    q = parquet.query(recorded)
    alpha = q.events(session_id="alpha", limit=None)
    assert len(alpha) == 8
    assert {r["session_id"] for r in alpha} == {"alpha"}
    assert q.count() == 16
    both = q.events(session_id=["alpha", "beta"], limit=None)
    assert len(both) == 16


def test_events_newest_first_with_limit_and_operation(recorded: Path) -> None:
    """Rows come newest first; limit, exact names and globs filter."""
    q = parquet.query(recorded)
    rows = q.events(limit=5)
    assert len(rows) == 5
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0].tzinfo is not None and stamps[0].utcoffset() == timedelta(0)
    assert len(q.events(operation="child", limit=None)) == 12
    assert len(q.events(operation="par*", limit=None)) == 4
    assert q.events(operation="chi") == []


def test_trace_is_ordered_and_linked(recorded: Path) -> None:
    """A trace holds its root and children, ordered by start time."""
    q = parquet.query(recorded)
    trace_id = q.events(operation="parent", limit=1)[0]["trace_id"]
    spans = q.trace(trace_id)
    assert [s["operation_name"] for s in spans] == ["parent", "child", "child", "child"]
    root = spans[0]
    assert root["parent_span_id"] is None
    assert all(s["parent_span_id"] == root["span_id"] for s in spans[1:])
    assert [s["error"] for s in spans[1:]] == [False, False, True]
    assert spans[1]["text_char_count"] == len("word ")
    assert q.trace("no-such-trace") == []
    assert q.find_trace_ids(trace_id[-6:]) == [trace_id]  # the random end, as the CLI shows it
    assert set(q.find_trace_ids(trace_id[:6])) == {e["trace_id"] for e in q.events(limit=100)}


def test_traces_of_one_batch_have_distinct_short_ids(recorded: Path) -> None:
    """Trace ids begin with the time, so the traces of one batch share their start: the
    CLI and the console show an id by its random end, and ``llamonitor trace`` takes it."""
    from llamonitor.cli._render import short_id
    from llamonitor.export.console import _short

    q = parquet.query(recorded)
    traces = sorted({e["trace_id"] for e in q.events(limit=100)})
    assert len(traces) == 4 and len({t[:8] for t in traces}) < 4  # made together: one prefix
    assert len({short_id(t) for t in traces}) == len({_short(t) for t in traces}) == 4
    for t in traces:
        assert q.find_trace_ids(short_id(t)) == [t]
    assert short_id("conversation-42") == "conversa"  # an id of the application's own


def test_stats_percentiles_match_hand_computation(store: Path) -> None:
    """count, errors, error rate and p50/p95/p99/max equal values computed by hand."""
    a = [12.0, 3.5, 40.0, 7.25, 100.0, 55.5, 1.0]
    b = [5.0, 5.0, 9.0]
    rows = [row(i, operation_name="a", duration_ms=d, error=i % 3 == 0) for i, d in enumerate(a)]
    rows += [row(100 + i, operation_name="b", duration_ms=d) for i, d in enumerate(b)]
    write(store, rows[:4])
    write(store, rows[4:])
    stats = {s["operation_name"]: s for s in parquet.query(store).stats()}
    sa = stats["a"]
    assert sa["count"] == 7
    assert sa["errors"] == 3  # i = 0, 3, 6
    assert sa["error_rate"] == pytest.approx(3 / 7)
    assert sa["avg_ms"] == pytest.approx(sum(a) / 7)
    assert sa["p50_ms"] == pytest.approx(percentile(a, 0.5)) == pytest.approx(12.0)
    assert sa["p95_ms"] == pytest.approx(percentile(a, 0.95)) == pytest.approx(86.65)
    assert sa["p99_ms"] == pytest.approx(percentile(a, 0.99)) == pytest.approx(97.33)
    assert sa["max_ms"] == 100.0
    assert stats["b"]["p50_ms"] == 5.0 and stats["b"]["errors"] == 0
    (total,) = parquet.query(store).stats(group_by=None)
    assert total["count"] == 10
    assert total["p95_ms"] == pytest.approx(percentile(a + b, 0.95))


def test_stats_time_window_and_grouping(store: Path) -> None:
    """since/until bound by start time; group_by takes any string column, nothing else."""
    write(store, [row(i, operation_type="tool" if i < 5 else "llm_call") for i in range(10)])
    q = parquet.query(store)
    window = q.stats(since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=7))
    assert window[0]["count"] == 4  # seconds 3, 4, 5, 6
    naive = q.events(since=datetime(2024, 5, 1, 12, 0, 8), limit=None)  # naive = UTC
    assert len(naive) == 2
    by_type = {s["operation_type"]: s["count"] for s in q.stats(group_by="operation_type")}
    assert by_type == {"tool": 5, "llm_call": 5}
    for bad in ("duration_ms", "operation_name; DROP TABLE x"):
        with pytest.raises(ValueError, match="group_by"):
            q.stats(group_by=bad)


def test_values_are_parameters_not_sql(store: Path) -> None:
    """Quotes and SQL in filter values match literally."""
    evil = "o'brien'); SELECT 1; --"
    write(store, [row(0, session_id=evil), row(1)])
    q = parquet.query(store)
    assert [r["event_id"] for r in q.events(session_id=evil)] == ["e000000"]
    assert q.events(operation=evil) == []


def test_empty_or_missing_store_gives_empty_results(tmp_path: Path) -> None:
    """No files (or no directory) is an empty store, not an error."""
    (tmp_path / "empty" / "2024-05-01").mkdir(parents=True)
    (tmp_path / "empty" / "2024-05-01" / ".events_x.parquet.1234.tmp").write_bytes(b"partial")
    for root in (tmp_path / "missing", tmp_path / "empty"):
        q = parquet.query(root)
        assert q.count() == 0
        assert q.events() == []
        assert q.trace("t") == []
        assert q.stats() == [] and q.stats(group_by=None) == []
        assert q.overview()["spans"] == 0
    assert DuckDBQuery(None).count() == 0


def test_files_with_an_older_schema_read_together(store: Path) -> None:
    """union_by_name: a file without a newer column still reads, with nulls there."""
    write(store, [row(0, stream_item_count=3)])
    old = pa.Table.from_pylist([row(1)], schema=llamonitor.SCHEMA).drop_columns(
        ["stream_item_count", "time_to_first_token_ms"]
    )
    pq.write_table(old, store / "2024-05-01" / "events_old.parquet")
    rows = {r["event_id"]: r for r in parquet.query(store).events(limit=None)}
    assert rows["e000000"]["stream_item_count"] == 3
    assert rows["e000001"]["stream_item_count"] is None


def test_a_store_of_only_version_1_files_answers_queries_on_new_columns(store: Path) -> None:
    """A store written before the LLM columns existed: they read as nulls."""
    from llamonitor.schema._columns import COLUMNS_V1

    old = pa.Table.from_pylist([row(0), row(1)], schema=llamonitor.SCHEMA).select(
        list(COLUMNS_V1)
    )
    (store / "2024-05-01").mkdir(parents=True)
    pq.write_table(old, store / "2024-05-01" / "events_v1.parquet")
    q = parquet.query(store)
    assert [r["cost_usd"] for r in q.events(limit=None)] == [None, None]
    assert q.stats(group_by="model") == [
        {**q.stats(group_by=None)[0], "model": None}
    ]


def test_readers_skip_inputs_a_committed_merge_replaced(store: Path) -> None:
    """With a journal whose output exists, its leftover inputs are not read twice."""
    write(store, [row(0)])
    write(store, [row(1)])
    part = store / "2024-05-01"
    inputs = sorted(p.name for p in part.glob("events_*.parquet"))
    merged = pa.concat_tables([pq.read_table(part / n) for n in inputs])
    pq.write_table(merged, part / "events_merged.parquet")
    journal = {"version": 1, "output": "events_merged.parquet", "inputs": inputs}
    (part / parquet.JOURNAL_NAME).write_text(json.dumps(journal))
    assert [p.name for p in parquet.data_files(store)] == ["events_merged.parquet"]
    assert parquet.query(store).count() == 2


def test_jsonl_store(tmp_path: Path) -> None:
    """A JSONLBackend file reads back with the schema's types."""
    backend = JSONLBackend(StorageConfig(output_dir=tmp_path))
    asyncio.run(backend.initialize())
    rows = [row(0, custom_attributes='{"model": "m"}', text_char_count=5), row(1, error=True)]
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)))
    q = DuckDBQuery(lambda _f: jsonl_relation(backend.path))
    got = q.events(limit=None)
    assert [r["event_id"] for r in got] == ["e000001", "e000000"]
    assert got[1]["timestamp"] == T0
    assert json.loads(got[1]["custom_attributes"]) == {"model": "m"}
    assert got[1]["text_char_count"] == 5
    assert q.stats()[0]["errors"] == 1
    assert DuckDBQuery(lambda _f: jsonl_relation(tmp_path / "none.jsonl")).count() == 0
