"""Temporary files of writers killed mid-write are removed; a live writer's never are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import llamonitor
from llamonitor.cli import cli
from llamonitor.storage import _files

# A writer of the store that hangs halfway through a file: pyarrow has written
# part of it when the parent kills it (or lets it live).
WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow.parquet as pq
    from llamonitor.storage import parquet

    def stuck(table, f, **kw):
        f.write(b"PAR1" + b"x" * 4096)
        f.flush()
        print("writing", flush=True)
        time.sleep(600)

    pq.write_table = stuck
    import asyncio
    from datetime import datetime, timezone
    import pyarrow as pa
    from llamonitor import SCHEMA, StorageConfig

    rows = []
    for i in range(int(sys.argv[3])):
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            event_id=f"e{i}", session_id=f"s{i}", trace_id="t", span_id="0" * 16,
            operation_name="op", operation_type="tool", timestamp=datetime.now(timezone.utc),
            duration_ms=1.0, error=False, process_id=1,
        )
        rows.append(row)
    config = StorageConfig(output_dir=sys.argv[1], partition_by=sys.argv[2])
    backend = parquet.ParquetBackend(config)
    asyncio.run(backend.initialize())
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=SCHEMA)))
    """
)


def start_writer(
    store: Path, partition_by: str = "date", sessions: int = 1
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), partition_by, str(sessions)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temp_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob(".*.tmp"))


def age(paths: list[Path], seconds: float) -> None:
    """Make ``paths`` look ``seconds`` old (past the grace period for new files)."""
    then = time.time() - seconds
    for p in paths:
        os.utime(p, (then, then))


@pytest.mark.parametrize("partition_by", ["date", "session_id"])
def test_the_next_start_removes_what_a_killed_writer_left_but_not_a_live_writers_file(
    store: Path, partition_by: str
) -> None:
    """SIGKILL mid-write leaves a partial hidden file; the next start in that
    directory removes it, and leaves alone the one a live writer is still writing."""
    # The live writer starts first: every start sweeps, so a writer started after
    # the kill would itself remove the dead file once that is 2 s old (a slow
    # start under load), before this test looks at it.
    live = start_writer(store, partition_by)
    try:
        alive = temp_files(store)
        assert alive
        sessions = 2 if partition_by == "session_id" else 1  # a batch staged as two files
        killed = start_writer(store, partition_by, sessions)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        dead = [p for p in temp_files(store) if p not in alive]
        assert dead, "the killed writer left no temporary file"
        age(dead + alive, 60)
        writer = llamonitor.initialize_monitoring(
            llamonitor.MonitorConfig(
                storage=llamonitor.StorageConfig(output_dir=store, partition_by=partition_by)
            )
        )
        backend = writer._pipeline.sinks[0].backend  # type: ignore[union-attr]
        backend.sweeper.join(30)  # the sweep runs beside the start, on a thread
        assert temp_files(store) == alive
        assert all(p.stat().st_size > 0 for p in alive)
    finally:
        live.kill()
        live.wait()
        llamonitor.shutdown_monitoring(5)


def test_compact_removes_stale_temporary_files(store: Path) -> None:
    """``llamonitor compact`` removes them too, and says how many."""
    killed = start_writer(store)
    killed.kill()
    killed.wait()
    age(temp_files(store), 60)
    result = CliRunner().invoke(cli, ["compact", "--dir", str(store), "--json"])
    assert result.exit_code == 0, result.output
    assert '"temp_files_removed": 1' in result.output
    assert temp_files(store) == []


def test_a_brand_new_unlocked_temporary_file_is_left_alone(store: Path) -> None:
    """A writer that has created its file an instant ago (not yet locked) keeps it."""
    (store / "2024-05-01").mkdir(parents=True)
    fresh = store / "2024-05-01" / ".events_x.parquet.abcd.tmp"
    fresh.write_bytes(b"PAR1")
    assert _files.remove_stale_temp_files(store) == 0
    assert fresh.exists()
    assert _files.remove_stale_temp_files(store, now=time.time() + 60) == 1
    assert not fresh.exists()


def test_a_filesystem_without_flock_still_gets_its_files_written(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``flock`` fails with ENOLCK (an NFS mount without lockd), files are
    written unlocked, and a temporary file there is stale only when a day old."""
    import errno

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_files.fcntl, "flock", no_locks)
    target = store / "2024-05-01" / "events_a.parquet"
    target.parent.mkdir(parents=True)
    _files.write_atomic(target, lambda f: f.write(b"PAR1"))
    assert target.read_bytes() == b"PAR1"
    left = target.with_name(".events_b.parquet.abcd.tmp")
    left.write_bytes(b"partial")
    assert _files.remove_stale_temp_files(store, now=time.time() + 3600) == 0
    assert _files.remove_stale_temp_files(store, now=time.time() + 2 * 86400) == 1
