"""The file stores: Parquet layout and atomicity, JSONL, manual events, fan-out."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import llamonitor
from _helpers import span_row
from llamonitor import (
    SCHEMA,
    SCHEMA_VERSION,
    InMemoryBackend,
    MetricEvent,
    MonitorConfig,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
    monitoring_session,
    shutdown_monitoring,
)
from llamonitor.cli import cli
from llamonitor.storage import parquet
from llamonitor.storage.parquet import ParquetBackend

NAME = re.compile(r"^events_\d{8}T\d{12}_\d+_\d{6}_[0-9a-f]{6}\.parquet$")


@monitor_llm(operation_name="answer", measure_text=True)
def answer(text: str) -> str:
    return text


def test_parquet_layout_is_date_partitioned_snappy_with_the_one_schema(store: Path) -> None:
    """Files land in output_dir/YYYY-MM-DD/events_*.parquet, snappy, with SCHEMA and its version."""
    initialize_monitoring(MonitorConfig.for_local_dev(store))
    for i in range(10):
        answer(f"text {i}")
    assert shutdown_monitoring(5)
    files = list(store.rglob("*.parquet"))
    assert files
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for f in files:
        assert f.parent.name == today
        assert NAME.match(f.name), f.name
        meta = pq.ParquetFile(f)
        assert meta.schema_arrow.remove_metadata() == SCHEMA.remove_metadata()
        version = meta.schema_arrow.metadata[b"llamonitor.schema_version"]
        assert version == str(SCHEMA_VERSION).encode()
        group = meta.metadata.row_group(0)
        codecs = {
            group.column(i).path_in_schema: group.column(i).compression
            for i in range(group.num_columns)
        }
        # Random hex ids are stored plain: snappy finds nothing to compress in them.
        assert codecs.pop("event_id") == codecs.pop("span_id") == "UNCOMPRESSED"
        assert codecs["operation_name"] == codecs["timestamp"] == "SNAPPY"
    assert not [p for p in store.rglob("*") if p.name.startswith(".")]
    count = duckdb.sql(f"select count(*) from read_parquet('{store}/**/*.parquet')").fetchall()
    assert count == [(10,)]


def test_partition_by_session_id(store: Path) -> None:
    """partition_by='session_id' puts each session's spans in its own directory."""
    initialize_monitoring(
        MonitorConfig(storage=StorageConfig(output_dir=store, partition_by="session_id"))
    )
    for session in ("alice", "bob/../../etc"):
        with monitoring_session(session):
            answer("hi")
            answer("there")
    assert shutdown_monitoring(5)
    dirs = sorted(p.name for p in store.iterdir())
    assert dirs == ["session=alice", "session=bob_.._.._etc"]
    rows = duckdb.sql(
        f"select session_id, count(*) from read_parquet('{store}/**/*.parquet') "
        "group by 1 order by 1"
    ).fetchall()
    assert rows == [("alice", 2), ("bob/../../etc", 2)]


def test_a_batch_spanning_midnight_is_split_by_day(store: Path) -> None:
    """Rows go to the directory of their own UTC day."""
    backend = ParquetBackend(StorageConfig(output_dir=store))
    asyncio.run(backend.initialize())
    events = [
        MetricEvent(
            event_id=f"e{i}",
            session_id="s",
            trace_id="t",
            span_id=f"{i:016x}",
            operation_name="op",
            timestamp=ts,
            duration_ms=1.0,
        )
        for i, ts in enumerate(
            [datetime(2026, 1, 1, 23, 59, 59, tzinfo=timezone.utc), datetime(2026, 1, 2, 0, 0, 1)]
        )
    ]
    asyncio.run(backend.write_batch(events))
    assert sorted(p.parent.name for p in store.rglob("*.parquet")) == ["2026-01-01", "2026-01-02"]


def test_jsonl_sink_appends_one_json_object_per_span(tmp_path: Path) -> None:
    """The JSONL backend writes parseable lines with decoded custom attributes."""
    initialize_monitoring(
        MonitorConfig(storage=StorageConfig(backend="jsonl", output_dir=tmp_path))
    )

    @monitor_llm(operation_name="tagged", custom_attributes={"model": "gpt-4", "n": 2})
    def tagged() -> None:
        pass

    tagged()
    tagged()
    assert shutdown_monitoring(5)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["operation_name"] == "tagged"
    assert first["custom_attributes"] == {"model": "gpt-4", "n": 2}
    assert first["timestamp"].endswith("+00:00")


def test_extra_backends_receive_the_same_spans(tmp_path: Path) -> None:
    """Parquet as primary plus JSONL as an extra sink: both get every span."""
    config = MonitorConfig.for_local_dev(tmp_path / "pq")
    config.extra_backends.append(StorageConfig(backend="jsonl", output_dir=tmp_path / "js"))
    writer = initialize_monitoring(config)
    for i in range(25):
        answer(str(i))
    assert shutdown_monitoring(5)
    assert len((tmp_path / "js" / "events.jsonl").read_text().splitlines()) == 25
    count = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/pq/**/*.parquet')")
    assert count.fetchall() == [(25,)]
    assert set(writer.health_check()["sinks"]) == {"parquet", "jsonl#1"}


def test_recorded_metric_events_are_stored_as_given(spans: InMemoryBackend) -> None:
    """writer.record(MetricEvent) goes through the same transport, values intact."""
    writer = llamonitor.get_writer()
    assert writer is not None
    ts = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    event = MetricEvent(
        event_id="manual-1",
        session_id="s1",
        trace_id="t1",
        span_id="00000000000000aa",
        operation_name="imported",
        timestamp=ts,
        duration_ms=12.5,
        text_char_count=7,
        custom_attributes={"source": "batch job"},
    )
    assert writer.record(event)
    assert llamonitor.flush(5)
    (row,) = spans.rows()
    assert row["event_id"] == "manual-1"
    assert row["timestamp"] == ts
    assert row["duration_ms"] == 12.5
    assert json.loads(row["custom_attributes"]) == {"source": "batch job"}
    assert spans.events()[0] == event


def test_metric_event_rejects_bad_data_clearly() -> None:
    """Invalid values raise a pydantic error naming the field, before anything is queued."""
    with pytest.raises(ValueError, match="duration_ms"):
        MetricEvent(
            event_id="x",
            session_id="s",
            trace_id="t",
            span_id="1",
            operation_name="op",
            timestamp=datetime.now(timezone.utc),
            duration_ms=-1,
        )


def test_a_retried_multi_partition_write_does_not_duplicate_rows(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk on the second partition's file: the retry writes each row once."""
    import errno

    from llamonitor.storage import parquet

    real = parquet._stage
    calls = {"n": 0}

    def flaky(*args: Any) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(parquet, "_stage", flaky)
    initialize_monitoring(
        MonitorConfig(
            storage=StorageConfig(
                output_dir=store, partition_by="session_id", batch_size=10_000
            ),
            retry_backoff_seconds=0.01,
        )
    )
    for session in ("a", "b", "c"):
        with monitoring_session(session):
            answer("x")
    assert shutdown_monitoring(5)
    rows = duckdb.sql(
        f"select session_id from read_parquet('{store}/**/*.parquet') order by 1"
    ).fetchall()
    assert rows == [("a",), ("b",), ("c",)]
    assert not [p for p in store.rglob("*") if p.name.startswith(".")]


def test_recorded_events_store_strict_json_attributes(spans: InMemoryBackend) -> None:
    """writer.record() with a NaN attribute stores valid JSON."""
    import math

    writer = llamonitor.get_writer()
    assert writer is not None
    writer.record(
        MetricEvent(
            event_id="n1",
            session_id="s",
            trace_id="t",
            span_id="1",
            operation_name="op",
            timestamp=datetime.now(timezone.utc),
            duration_ms=1,
            custom_attributes={"score": math.nan},
        )
    )
    assert llamonitor.flush(5)
    stored = spans.rows()[0]["custom_attributes"]
    assert json.loads(stored, parse_constant=lambda c: pytest.fail(c)) == {"score": "nan"}


def test_a_success_is_error_null_where_stored_and_false_where_read_back(tmp_path: Path) -> None:
    """What each place gives for ``error`` (docs/storage.md, "Your stored data"):
    stored rows (Parquet files, JSONL lines, ``InMemoryBackend.rows()``/``table()``)
    hold TRUE or NULL; what is read back (``events()``, ``trace()``, the CLI's
    ``--json``, ``MetricEvent.error``) is a bool, False for a success."""
    memory = InMemoryBackend()
    config = MonitorConfig(storage=StorageConfig(backend=memory), spool_dir=tmp_path / "spool")
    config.extra_backends.append(StorageConfig(backend="jsonl", output_dir=tmp_path / "js"))
    config.extra_backends.append(StorageConfig(backend="parquet", output_dir=tmp_path / "pq"))

    @monitor_llm(operation_name="ok")
    def ok() -> None:
        pass

    @monitor_llm(operation_name="bad")
    def bad() -> None:
        raise ValueError("boom")

    initialize_monitoring(config)
    with monitoring_session("s1"):
        ok()
        with pytest.raises(ValueError):
            bad()
    assert shutdown_monitoring(10)

    def by_op(rows: Any) -> dict[str, Any]:
        return {r["operation_name"]: r["error"] for r in rows}

    stored = {"ok": None, "bad": True}
    read = {"ok": False, "bad": True}
    assert by_op(memory.rows()) == stored
    assert by_op(memory.table().to_pylist()) == stored
    assert {e.operation_name: e.error for e in memory.events()} == read
    lines = (tmp_path / "js" / "events.jsonl").read_text().splitlines()
    assert by_op(json.loads(line) for line in lines) == stored
    assert '"error": null' in next(line for line in lines if '"ok"' in line)
    (file,) = (tmp_path / "pq").rglob("*.parquet")
    assert by_op(pq.read_table(file).to_pylist()) == stored
    q = parquet.query(tmp_path / "pq")
    events = q.events()
    assert by_op(events) == read
    for row in events:
        op = row["operation_name"]
        assert by_op(q.trace(row["trace_id"])) == {op: read[op]}
    for store in ("js", "pq"):
        result = CliRunner().invoke(cli, ["events", "--dir", str(tmp_path / store), "--json"])
        assert result.exit_code == 0, result.output
        assert by_op(json.loads(result.output)) == read

    # A table handed to the backend as it is (a user's, or a schema version 2
    # spool record) with FALSE for a success: rows() still says NULL.
    memory.clear()
    rows = [span_row(0, operation_name="ok", error=False),
            span_row(1, operation_name="bad", error=True)]
    asyncio.run(memory.write_table(pa.Table.from_pylist(rows, schema=SCHEMA)))
    assert by_op(memory.rows()) == stored
    assert {e.operation_name: e.error for e in memory.events()} == read
