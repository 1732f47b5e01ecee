"""Compaction merges small Parquet files without losing or duplicating a row."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llamonitor
from llamonitor import StorageConfig
from llamonitor.storage import _compact, parquet
from llamonitor.storage.parquet import ParquetBackend, write_table_atomic

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


class Crash(BaseException):
    """Stands for the process dying at that point."""


def row(i: int, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
    base.update(
        event_id=f"e{i:06d}",
        session_id=f"s{i % 4}",
        trace_id=f"t{i // 10}",
        span_id=f"{i:016x}",
        operation_name="op",
        operation_type="llm_call",
        timestamp=T0 + timedelta(minutes=i),
        duration_ms=float(i),
        error=i % 7 == 0,
        text_char_count=i * 3,
        process_id=1,
        custom_attributes=json.dumps({"i": i}),
    )
    base.update(values)
    return base


def write(root: Path, rows: list[dict[str, Any]], partition_by: str = "session_id") -> None:
    backend = ParquetBackend(StorageConfig(output_dir=root, partition_by=partition_by))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)))


def many_small_files(root: Path, batches: int = 30, per_batch: int = 7) -> list[dict[str, Any]]:
    """``batches`` writes, each spread over the 4 session partitions."""
    rows = [row(i) for i in range(batches * per_batch)]
    for b in range(batches):
        write(root, rows[b * per_batch : (b + 1) * per_batch])
    return rows


def stored_rows(root: Path) -> list[dict[str, Any]]:
    """Every row of every data file, read straight from the files."""
    out: list[dict[str, Any]] = []
    for f in parquet.data_files(root):
        out.extend(pq.read_table(f).to_pylist())
    return sorted(out, key=lambda r: r["event_id"])


def event_ids(root: Path) -> Counter[str]:
    return Counter(r["event_id"] for r in stored_rows(root))


def files(root: Path) -> list[Path]:
    return sorted(root.rglob("events_*.parquet"))


def test_compact_keeps_every_row_once(store: Path) -> None:
    """Many small files in several partitions become one per partition, same rows."""
    rows = many_small_files(store)
    before = stored_rows(store)
    assert len(files(store)) == 4 * 30
    calls: list[tuple[int, int]] = []
    result = parquet.compact(store, progress=lambda done, total: calls.append((done, total)))
    assert event_ids(store) == Counter(r["event_id"] for r in rows)
    assert stored_rows(store) == before  # every value of every row, unchanged
    assert len(files(store)) == 4
    assert {f.parent.name for f in files(store)} == {f"session=s{i}" for i in range(4)}
    assert (result.files_before, result.files_after) == (120, 4)
    assert result.rows_before == result.rows_after == len(rows)
    assert (result.files_merged, result.files_written, result.partitions) == (120, 4, 4)
    assert calls[0] == (0, 120) and calls[-1] == (120, 120)
    assert pq.read_schema(files(store)[0]).equals(llamonitor.SCHEMA, check_metadata=False)
    assert not list(store.rglob(parquet.JOURNAL_NAME))
    again = parquet.compact(store)
    assert again.files_merged == 0 and files(store) == files(store)


def test_target_rows_bounds_merged_files(store: Path) -> None:
    """No merged file exceeds target_rows; a lone leftover file is left alone."""
    for b in range(10):
        write(store, [row(b * 10 + i, session_id="s") for i in range(10)])
    ids = event_ids(store)
    result = parquet.compact(store, target_rows=35)
    sizes = sorted(pq.ParquetFile(f).metadata.num_rows for f in files(store))
    assert sizes == [10, 30, 30, 30]
    assert result.files_merged == 9 and result.files_written == 3
    assert event_ids(store) == ids


def test_min_files_and_large_files_untouched(store: Path) -> None:
    """A partition with fewer than min_files small files, or a big file, is not rewritten."""
    write(store, [row(i, session_id="big") for i in range(50)])
    write(store, [row(100, session_id="lonely")])
    write(store, [row(101, session_id="lonely")])
    before = {f: f.stat().st_mtime_ns for f in files(store)}
    result = parquet.compact(store, min_files=3, target_rows=50)
    assert result.files_merged == 0
    assert {f: f.stat().st_mtime_ns for f in files(store)} == before


def test_recovers_crash_after_merged_file_was_committed(store: Path) -> None:
    """Journal + merged output + all inputs on disk: inputs go, rows stay exactly once."""
    many_small_files(store, batches=5)
    ids = event_ids(store)
    part = store / "session=s1"
    inputs = sorted(p.name for p in part.glob("events_*.parquet"))
    merged = pa.concat_tables([pq.read_table(part / n) for n in inputs])
    output = "events_20240501T120000000000_compacted_1_deadbeef.parquet"
    journal = {"version": 1, "output": output, "inputs": inputs}
    (part / parquet.JOURNAL_NAME).write_text(json.dumps(journal))
    write_table_atomic(merged, part / output)
    assert parquet.query(store).count() == sum(ids.values())  # readers already see it once

    result = parquet.compact(store, min_files=100)  # recovery only, no new merges
    assert result.recovered == 1
    assert sorted(p.name for p in part.glob("events_*.parquet")) == [output]
    assert not (part / parquet.JOURNAL_NAME).exists()
    assert event_ids(store) == ids


def test_recovers_crash_before_merged_file_was_committed(store: Path) -> None:
    """Journal + half-written temp output + inputs: the temp goes, inputs stay, then merge."""
    many_small_files(store, batches=5)
    ids = event_ids(store)
    part = store / "session=s2"
    inputs = sorted(p.name for p in part.glob("events_*.parquet"))
    output = "events_20240501T120000000000_compacted_1_feedface.parquet"
    (part / parquet.JOURNAL_NAME).write_text(json.dumps({"output": output, "inputs": inputs}))
    tmp = part / f".{output}.0bad.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    writer_tmp = part / ".events_x.parquet.1234.tmp"  # a live writer's file: not ours
    writer_tmp.write_bytes(b"in progress")

    result = parquet.compact(store)
    assert result.recovered == 1
    assert not tmp.exists() and writer_tmp.exists()
    assert not (part / output).exists()
    assert event_ids(store) == ids
    assert len(files(store)) == 4


def test_crash_while_deleting_inputs_is_finished_next_run(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after deleting some inputs: the next run deletes the rest."""
    many_small_files(store, batches=6)
    ids = event_ids(store)
    real_unlink = Path.unlink
    deleted: list[Path] = []

    def dying_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("events_") and len(deleted) == 3:
            raise Crash
        deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", dying_unlink)
    with pytest.raises(Crash):
        parquet.compact(store)
    monkeypatch.undo()
    assert len(list(store.rglob(parquet.JOURNAL_NAME))) == 1
    assert Counter(r["event_id"] for r in parquet.query(store).events(limit=None)) == ids

    result = parquet.compact(store)
    assert result.recovered == 1
    assert event_ids(store) == ids
    assert len(files(store)) == 4


def test_failed_write_leaves_inputs_and_no_journal(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge whose write fails (disk full) changes nothing."""
    many_small_files(store, batches=3)
    before = files(store)

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space"):
        parquet.compact(store)
    assert files(store) == before
    assert [p.name for p in store.rglob(".*")] == [parquet.LOCK_NAME]


def test_compaction_beside_live_writers_and_readers(store: Path) -> None:
    """Writers keep adding files while compactions run; readers never see a row twice."""
    written: list[str] = []
    stop = threading.Event()
    problems: list[str] = []

    def writer() -> None:
        for b in range(40):
            rows = [row(b * 5 + i) for i in range(5)]
            write(store, rows)
            written.extend(r["event_id"] for r in rows)
        stop.set()

    def reader() -> None:
        q = parquet.query(store)
        while not stop.is_set():
            try:
                ids = [r["event_id"] for r in q.events(limit=None)]
            except Exception as exc:
                problems.append(repr(exc))
                continue
            if len(ids) != len(set(ids)):
                problems.append(f"duplicates among {len(ids)} rows")

    store.mkdir()
    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    while not stop.is_set():
        parquet.compact(store)
        time.sleep(0.002)
    for t in threads:
        t.join()
    parquet.compact(store)
    assert problems == []
    assert event_ids(store) == Counter(written)
    assert len(files(store)) == 4


def test_one_compaction_at_a_time(store: Path) -> None:
    """A second compaction of the same store refuses instead of racing."""
    many_small_files(store, batches=2)
    if os.name != "posix":
        pytest.skip("the lock is POSIX-only")
    with _compact._exclusive(store), pytest.raises(parquet.CompactionError, match="another"):
        parquet.compact(store)


def test_mixed_schemas_merge_by_name(store: Path) -> None:
    """A file lacking a newer column merges with nulls there, other values intact."""
    write(store, [row(0, session_id="s", stream_item_count=4)])
    old = pa.Table.from_pylist([row(1, session_id="s")], schema=llamonitor.SCHEMA)
    old = old.drop_columns(["stream_item_count"])
    pq.write_table(old, store / "session=s" / "events_0.parquet")
    parquet.compact(store)
    (only,) = files(store)
    got = {r["event_id"]: r for r in pq.read_table(only).to_pylist()}
    assert got["e000000"]["stream_item_count"] == 4
    assert got["e000001"]["stream_item_count"] is None
    assert got["e000001"]["custom_attributes"] == json.dumps({"i": 1})


def test_bad_arguments(tmp_path: Path) -> None:
    """A missing store and nonsense limits are errors, before touching anything."""
    with pytest.raises(FileNotFoundError):
        parquet.compact(tmp_path / "missing")
    with pytest.raises(ValueError, match="min_files"):
        parquet.compact(tmp_path, min_files=1)
    with pytest.raises(ValueError, match="target_rows"):
        parquet.compact(tmp_path, target_rows=0)


def test_a_reader_that_listed_before_the_merge_committed_keeps_the_inputs(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing, then the merged file is renamed in: the listed inputs are still read."""
    many_small_files(store, batches=5)
    part = store / "session=s1"
    inputs = sorted(p.name for p in part.glob("events_*.parquet"))
    merged = pa.concat_tables([pq.read_table(part / n) for n in inputs])
    output = "events_20240501T120000000000_compacted_1_deadbeef.parquet"
    (part / parquet.JOURNAL_NAME).write_text(
        json.dumps({"version": 1, "output": output, "inputs": inputs})
    )
    listed_before = parquet.data_files(store)
    expected = sum(pq.read_metadata(f).num_rows for f in listed_before)

    # Simulate the race: the merge commits between listing and journal reading.
    real_walk = os.walk

    def walk_then_commit(*args: Any, **kwargs: Any) -> Any:
        listing = list(real_walk(*args, **kwargs))
        write_table_atomic(merged, part / output)
        return iter(listing)

    monkeypatch.setattr(parquet.os, "walk", walk_then_commit)
    files_seen = parquet.data_files(store)
    assert sum(pq.read_metadata(f).num_rows for f in files_seen) == expected
