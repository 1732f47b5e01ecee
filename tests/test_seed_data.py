"""The seed's data, the seed's way: its event model (nested ``TextMetrics`` /
``ImageMetrics``, ``error`` as a message, defaults), its "Schema Evolution"
extension point end to end, ``error`` TRUE or NULL so that the seed's
``error IS NOT NULL`` queries count failures, older Parquet files of ours, and
Parquet files the original system (llamonitor-async) wrote, in every CLI
command, in ``analyze()`` and in compaction."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ValidationError

import _original
import llamonitor
from _helpers import span_row
from llamonitor import CollectorRegistry, MetricCollector, MonitorConfig, StorageConfig, monitor_llm
from llamonitor.analysis import analyze
from llamonitor.cli import cli
from llamonitor.schema import ImageMetrics, MetricEvent, TextMetrics, register_metrics
from llamonitor.schema._columns import SCHEMA
from llamonitor.storage import parquet

UTC = timezone.utc


class AudioMetrics(BaseModel):
    """The seed's example of a new metric type."""

    duration_seconds: float
    sample_rate: int
    channels: int


class AudioEvent(MetricEvent):
    """The seed's step "update MetricEvent": an ``audio_metrics`` field."""

    audio_metrics: AudioMetrics | None = None


class AudioCollector(MetricCollector):
    """The seed's step "create collector"."""

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any = None) -> dict[str, Any]:
        return {"audio_metrics": AudioMetrics(**result["audio"])}

    @property
    def metric_type(self) -> str:
        return "audio"


AUDIO_COLUMNS = ("audio_duration_seconds", "audio_sample_rate", "audio_channels")


def seed_event(**values: Any) -> MetricEvent:
    """A MetricEvent built like the original's own tests build one."""
    fields: dict[str, Any] = dict(
        event_id=uuid.uuid4(),
        schema_version="1.0.0",
        session_id="test-session",
        trace_id="test-trace",
        span_id="test-span",
        parent_span_id=None,
        operation_name="test_operation",
        operation_type="completion",
        timestamp=datetime(2024, 5, 1, 12, 0),  # naive, like datetime.utcnow()
    )
    fields.update(values)
    return MetricEvent(**fields)


def write_ours(root: Path, table: pa.Table) -> Path:
    """One data file as our writer names it, in the 2024-05-01 partition."""
    path = root / "2024-05-01" / "events_20240501T120000000000_1_000001_aaaaaa.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    parquet.write_table_atomic(table, path)
    return path


def duck(sql: str, files: list[str]) -> list[tuple[Any, ...]]:
    """``sql`` in plain DuckDB, ``?`` being the list of ``files``."""
    with duckdb.connect() as con:
        return con.execute(sql, [files]).fetchall()


def run(*args: Any) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


# -- the event model -------------------------------------------------------------------


def test_seed_event_takes_nested_metrics_and_flattens_them_to_the_seed_columns() -> None:
    """text_metrics / image_metrics fill the seed's flattened columns, read back as
    the nested models, and to_dict() gives them nested, with a string id and ISO time."""
    event = seed_event(
        duration_ms=250.5,
        text_metrics=TextMetrics(char_count=1000, word_count=200, byte_size=1500, line_count=50),
        image_metrics=ImageMetrics(count=2, total_pixels=2073600, format="png"),
        custom_attributes={"model": "gpt-4"},
    )
    assert (event.text_char_count, event.text_word_count, event.text_line_count) == (1000, 200, 50)
    assert (event.image_count, event.image_total_pixels, event.image_format) == (2, 2073600, "png")
    assert event.text_metrics == TextMetrics(
        char_count=1000, word_count=200, byte_size=1500, line_count=50
    )
    assert event.image_metrics is not None and event.image_metrics.count == 2
    assert event.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    row = event.to_row()
    assert row["text_char_count"] == 1000 and row["image_format"] == "png"
    data = event.to_dict()
    assert data["text_metrics"]["char_count"] == 1000
    assert data["image_metrics"]["total_pixels"] == 2073600
    assert data["event_id"] == str(event.event_id) and isinstance(data["event_id"], str)
    assert datetime.fromisoformat(data["timestamp"]) == event.timestamp
    assert data["schema_version"] == "1.0.0"
    again = MetricEvent.from_row(row)
    assert again.text_metrics == event.text_metrics and again.image_metrics == event.image_metrics


def test_seed_event_defaults_and_optional_duration() -> None:
    """event_id, timestamp and schema_version have defaults; duration_ms may be left out."""
    a = MetricEvent(session_id="s", trace_id="t", span_id="x", operation_name="op")
    b = MetricEvent(session_id="s", trace_id="t", span_id="x", operation_name="op")
    assert a.event_id != b.event_id and len(a.event_id) == 32
    assert abs(a.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
    assert a.timestamp.tzinfo is not None
    assert a.duration_ms is None and a.schema_version == str(llamonitor.SCHEMA_VERSION)
    assert a.text_metrics is None and a.image_metrics is None


def test_seed_error_message_means_a_failed_span() -> None:
    """error="boom" (the seed's form) is a failure with that message; stored, error
    is TRUE for a failure and NULL otherwise; a typo in a field name still fails."""
    failed = seed_event(error="boom", error_type="ValueError")
    assert failed.error is True and failed.error_message == "boom"
    assert failed.to_row()["error"] is True
    ok = seed_event(error=None)
    assert ok.error is False and ok.error_message is None
    assert ok.to_row()["error"] is None
    assert MetricEvent.from_row(ok.to_row()).error is False
    flagged = seed_event(error=True, error_message="Simulated error")
    assert flagged.error_message == "Simulated error"
    with pytest.raises(ValidationError, match="opration_type"):
        seed_event(opration_type="llm_call")


def test_conflicting_nested_and_flat_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="text_char_count"):
        seed_event(text_metrics=TextMetrics(char_count=5), text_char_count=6)


def test_collector_returning_text_metrics_fills_the_columns(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A seed-style collector returning {"text_metrics": TextMetrics(...)} sets the
    text columns (not a custom attribute)."""

    class Seedish(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any = None) -> Any:
            return {"text_metrics": TextMetrics(char_count=len(result), custom_metrics={"k": 1})}

        @property
        def metric_type(self) -> str:
            return "seedish"

    CollectorRegistry.register("seedish", Seedish)
    try:

        @monitor_llm("seedish", collectors=["seedish"])
        def f() -> str:
            return "hello"

        f()
        assert llamonitor.flush(5)
        (row,) = spans.rows()
    finally:
        CollectorRegistry.unregister("seedish")
    assert row["text_char_count"] == 5
    assert json.loads(row["text_custom_metrics"]) == {"k": 1}
    assert "text_metrics" not in json.loads(row["custom_attributes"] or "{}")


# -- schema evolution: AudioMetrics end to end -------------------------------------------


def record_audio(storage: StorageConfig, seconds: tuple[float, ...] = (1.5, 2.0)) -> AudioEvent:
    """Audio spans the seed's way: ``transcribe`` calls through the AudioCollector,
    and one AudioEvent queued through the writer (returned)."""
    CollectorRegistry.register("audio", AudioCollector)
    try:
        llamonitor.initialize_monitoring(MonitorConfig(storage=storage))

        @monitor_llm("transcribe", collectors=["audio"])
        def transcribe(duration: float) -> dict[str, Any]:
            return {"audio": {"duration_seconds": duration, "sample_rate": 44100, "channels": 2}}

        for duration in seconds:
            transcribe(duration)
        event = AudioEvent(
            session_id="s",
            trace_id="t",
            span_id="a" * 16,
            operation_name="hand_made",
            duration_ms=1.0,
            audio_metrics=AudioMetrics(duration_seconds=3.0, sample_rate=16000, channels=1),
        )
        assert llamonitor.get_writer().record(event)
        assert llamonitor.shutdown_monitoring(10)
    finally:
        CollectorRegistry.unregister("audio")
    return event


def audio_store(root: Path) -> None:
    """A store with an old file (no audio columns), then audio spans."""
    write_ours(root, pa.Table.from_pylist([span_row(0, operation_name="before")], schema=SCHEMA))
    record_audio(StorageConfig(backend="parquet", output_dir=str(root)))


def test_audio_metrics_become_parquet_columns(tmp_path: Path) -> None:
    """The seed's AudioMetrics (a MetricEvent field, a collector) become the columns
    audio_duration_seconds, audio_sample_rate, audio_channels of the Parquet files,
    typed from the annotations; the older file reads them as nulls."""
    root = tmp_path / "store"
    audio_store(root)
    with parquet.query(root) as q:
        every = q.events(limit=None)
        types = q.run(f"SELECT {', '.join(AUDIO_COLUMNS)} FROM {{rel}} LIMIT 0")
    rows = {r["operation_name"]: r for r in every}
    assert types is not None
    assert [f.type for f in types.schema] == [pa.float64(), pa.int64(), pa.int64()]
    assert {c: rows["hand_made"][c] for c in AUDIO_COLUMNS} == dict(
        zip(AUDIO_COLUMNS, (3.0, 16000, 1), strict=True)
    )
    transcribed = [r for r in every if r["operation_name"] == "transcribe"]
    assert sorted(r["audio_duration_seconds"] for r in transcribed) == [1.5, 2.0]
    assert {(r["audio_sample_rate"], r["audio_channels"]) for r in transcribed} == {(44100, 2)}
    assert all(rows["before"][c] is None for c in AUDIO_COLUMNS)
    new_files = [f for f in parquet.data_files(root) if "2024-05-01" not in str(f)]
    schema = pq.read_schema(new_files[0])
    assert set(AUDIO_COLUMNS) <= set(schema.names)
    listed = json.loads(schema.metadata[b"llamonitor.extensions"])
    assert listed["audio_sample_rate"] == "int64"
    count = duck(
        "SELECT count(*) FROM read_parquet(?, union_by_name = true) "
        "WHERE audio_duration_seconds IS NOT NULL",
        [str(f) for f in parquet.data_files(root)],
    )
    assert count == [(3,)]


def test_audio_metrics_reach_a_user_backend_as_the_model() -> None:
    """A user's backend (write_batch) gets the group back as event.audio_metrics."""
    register_metrics("audio", AudioMetrics)
    row = span_row(1, audio_duration_seconds=1.5, audio_sample_rate=8000, audio_channels=1)
    event = MetricEvent.from_row(row)
    assert event.audio_metrics == AudioMetrics(  # type: ignore[attr-defined]
        duration_seconds=1.5, sample_rate=8000, channels=1
    )
    assert AudioEvent.from_row(row).audio_metrics == event.audio_metrics  # type: ignore[attr-defined]
    assert event.to_row()["audio_sample_rate"] == 8000


def test_register_metrics_types_and_refusals() -> None:
    """Columns are typed from the annotations (others: JSON text); a built-in prefix,
    a bad prefix and a type clash are refused."""

    class Vision(BaseModel):
        objects: int | None = None
        score: float | None = None
        label: str | None = None
        flagged: bool | None = None
        boxes: list[list[int]] | None = None

    group = register_metrics("vision", Vision)
    assert dict(group.kinds) == {
        "objects": "int64",
        "score": "float64",
        "label": "string",
        "flagged": "bool",
        "boxes": "json",
    }
    event = MetricEvent(
        session_id="s", trace_id="t", span_id="x", operation_name="op",
        vision_metrics=Vision(objects=2, boxes=[[1, 2], [3, 4]]),
    )  # fmt: skip
    row = event.to_row()
    assert row["vision_objects"] == 2 and json.loads(row["vision_boxes"]) == [[1, 2], [3, 4]]
    assert MetricEvent.from_row(row).vision_metrics.boxes == [[1, 2], [3, 4]]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="built in"):
        register_metrics("text", Vision)
    with pytest.raises(ValueError, match="prefix"):
        register_metrics("Bad-Prefix", Vision)

    class VisionV2(BaseModel):
        objects: str

    with pytest.raises(ValueError, match="vision_objects"):
        register_metrics("vision", VisionV2)


# -- error: TRUE or NULL -----------------------------------------------------------------


def record_some(root: Path, n_ok: int = 3, n_failed: int = 2) -> None:
    llamonitor.initialize_monitoring(
        MonitorConfig(storage=StorageConfig(backend="parquet", output_dir=str(root)))
    )

    @monitor_llm("work")
    def work(fail: bool) -> str:
        if fail:
            raise RuntimeError("nope")
        return "ok"

    for i in range(n_ok + n_failed):
        try:
            work(i >= n_ok)
        except RuntimeError:
            pass
    llamonitor.shutdown_monitoring(10)


def test_seed_error_queries_count_failures_in_our_parquet_files(tmp_path: Path) -> None:
    """The seed's dashboard queries, run by DuckDB on the files themselves, count the
    failed spans (error IS NOT NULL), and so do WHERE error and our own stats."""
    root = tmp_path / "store"
    record_some(root)
    files = [str(f) for f in parquet.data_files(root)]
    rel = "read_parquet(?, union_by_name = true)"
    rate = duck(
        "SELECT ROUND(100.0 * COUNT(CASE WHEN error IS NOT NULL THEN 1 END) / COUNT(*), 2) "
        f"FROM {rel}",
        files,
    )
    assert rate == [(40.0,)]
    listed = duck(
        f"SELECT operation_name, error_type, error_message FROM {rel} WHERE error IS NOT NULL",
        files,
    )
    assert listed == [("work", "RuntimeError", "nope")] * 2
    assert duck(f"SELECT count(*) FROM {rel} WHERE error", files) == [(2,)]
    with parquet.query(root) as q:
        (stats,) = q.stats()
    assert (stats["count"], stats["errors"]) == (5, 2)


def test_older_parquet_files_read_error_false_as_null(tmp_path: Path) -> None:
    """A file of schema version 2 (error FALSE on success) is read as version 3:
    error NULL there, and counted right beside new files; the file is not rewritten."""
    root = tmp_path / "store"
    old_schema = pa.schema(
        [f.with_nullable(False) if f.name in ("error", "duration_ms") else f for f in SCHEMA],
        metadata={b"llamonitor.schema_version": b"2"},
    )
    rows = [span_row(i, error=i == 0) for i in range(3)]
    old = write_ours(root, pa.Table.from_pylist(rows, schema=old_schema))
    before = old.read_bytes()
    record_some(root)
    with parquet.query(root) as q:
        stored = q.run("SELECT error FROM {rel} WHERE session_id = 's' ORDER BY event_id")
        overview = q.overview()
        summary = q.run("SELECT count(*) FILTER (WHERE error IS NOT NULL) AS n FROM {rel}")
        assert [r["error"] for r in q.events(session_id="s")] == [False, False, True]
    assert stored is not None and stored.column("error").to_pylist() == [True, None, None]
    assert overview["errors"] == 3 and overview["spans"] == 8
    assert summary is not None and summary.column("n")[0].as_py() == 3
    assert old.read_bytes() == before


# -- the original system's Parquet files ---------------------------------------------------


def mixed_store(root: Path) -> None:
    """Their files (two batches, one with a failure) beside spans of ours."""
    _original.write_parquet(
        root,
        [_original.event(0), _original.event(1, error="rate limited", chars=None)],
        datetime(2024, 5, 1, 12, 0, 5),
    )
    _original.write_parquet(
        root, [_original.event(2), _original.event(3)], datetime(2024, 5, 1, 12, 0, 6)
    )
    record_some(root)


def test_original_parquet_files_are_normalised(tmp_path: Path) -> None:
    """Their naive timestamps read as UTC, their error message as error_message with
    error TRUE (NULL when they had none), their float counts as integers."""
    root = tmp_path / "store"
    mixed_store(root)
    with parquet.query(root) as q:
        rows = {r["span_id"]: r for r in q.events(session_id="legacy-session", limit=None)}
        (stats,) = q.stats(group_by=None)
        assert q.count() == 9
    assert rows["span-1"]["error"] is True and rows["span-1"]["error_message"] == "rate limited"
    assert rows["span-1"]["error_type"] == "ValueError"
    assert rows["span-0"]["error"] is False and rows["span-0"]["error_message"] is None
    assert rows["span-0"]["timestamp"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert rows["span-0"]["text_char_count"] == 100
    assert isinstance(rows["span-0"]["text_char_count"], int)
    assert rows["span-2"]["event_id"] == str(uuid.UUID(int=3))
    assert (stats["count"], stats["errors"]) == (9, 3)


def test_every_cli_command_reads_a_store_mixing_their_files_and_ours(tmp_path: Path) -> None:
    """events, stats, trace and report (text and --json) work on the mixed store,
    and analyze() counts every span and failure."""
    root = tmp_path / "store"
    mixed_store(root)
    events = json.loads(run("events", "--dir", root, "--limit", "100", "--json").output)
    assert len(events) == 9
    stats = json.loads(run("stats", "--dir", root, "--json").output)["groups"]
    assert {s["operation_name"]: s["errors"] for s in stats} == {
        "work": 2,
        "legacy_op": 1,
        "legacy_root": 0,
    }
    trace = json.loads(run("trace", "legacy-trace", "--dir", root, "--json").output)
    assert trace["span_count"] == 4
    run("events", "--dir", root, "--session", "legacy-session")
    run("stats", "--dir", root)
    run("trace", "legacy-trace", "--dir", root)
    text = run("report", "--dir", root).output
    assert "9 spans" in text
    report = analyze(root)
    assert report.quality.spans == 9 and report.quality.errors == 3
    assert json.loads(run("report", "--dir", root, "--json").output)


def test_compaction_leaves_their_files_alone(tmp_path: Path) -> None:
    """llamonitor compact merges our files and never rewrites theirs; no row is lost."""
    root = tmp_path / "store"
    mixed_store(root)
    record_some(root)  # a second file of ours
    theirs = sorted(p for p in root.rglob("*.parquet") if "T" not in p.name.split("_")[1])
    before = {p: p.read_bytes() for p in theirs}
    result = parquet.compact(root)
    assert result.files_merged == 2 and result.rows_after == result.rows_before == 10
    assert {p: p.read_bytes() for p in theirs} == before
    with parquet.query(root) as q:
        assert q.count() == 14
        assert q.overview()["errors"] == 5


def test_spooled_batch_keeps_its_metric_group_columns() -> None:
    """A batch with audio columns spooled during an outage replays with them."""
    from llamonitor.schema import _extensions
    from llamonitor.transport.spool import _format

    register_metrics("audio", AudioMetrics)
    row = span_row(1, audio_duration_seconds=1.5, audio_sample_rate=8000, audio_channels=1)
    table = _extensions.rows_table([row])
    record = _format.encode(table, _format.BATCH)
    back, _ = _format.decode(record[_format.HEADER.size :])
    assert back.select(list(AUDIO_COLUMNS)).to_pylist() == [
        {"audio_duration_seconds": 1.5, "audio_sample_rate": 8000, "audio_channels": 1}
    ]
