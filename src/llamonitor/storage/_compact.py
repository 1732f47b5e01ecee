"""Compaction of the Parquet store: merging small files, crash-safe.

Per partition, a merge writes a journal (its inputs and output), then the
merged file (atomically), then removes the inputs and the journal; a leftover
journal is finished or undone by the next run, and readers skip the inputs a
committed merge has replaced, so no query counts a row twice. Temporary files
of writers that died are removed on the way.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from llamonitor.schema._extensions import conform
from llamonitor.storage._files import fsync_dir, remove_stale_temp_files, write_atomic
from llamonitor.storage._layout import JOURNAL_NAME, data_files, split_by_writer, write_table_atomic

LOCK_NAME = ".compact.lock"
DEFAULT_TARGET_ROWS = 1_000_000
_STAMP = re.compile(r"^events_(\d{8}T\d{12})_")


class CompactionError(RuntimeError):
    """Compaction cannot proceed safely (a journal it cannot read, a lock held...)."""


@dataclass
class CompactResult:
    """What :func:`compact` did. ``*_before``/``*_after`` cover the whole store."""

    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    files_merged: int = 0
    files_written: int = 0
    partitions: int = 0
    recovered: int = 0
    temp_files_removed: int = 0
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    def write(f: BinaryIO) -> None:
        f.write(data)

    write_atomic(path, write)


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One compaction per store at a time (an OS lock, released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(root / LOCK_NAME, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CompactionError(f"another compaction is running on {str(root)!r}") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _recover(directory: Path) -> bool:
    """Finish or undo the merge a leftover journal describes; True if there was one."""
    for tmp in directory.glob("." + glob.escape(JOURNAL_NAME) + ".*.tmp"):
        tmp.unlink(missing_ok=True)  # never committed: nothing was merged after it
    path = directory / JOURNAL_NAME
    if not path.exists():
        return False
    try:
        journal = json.loads(path.read_text("utf-8"))
        output = str(journal["output"])
        inputs = [str(n) for n in journal["inputs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CompactionError(f"cannot read {str(path)!r} ({exc}); inspect it by hand") from exc
    if any(Path(n).name != n or n.startswith(".") for n in [output, *inputs]):
        raise CompactionError(f"{str(path)!r} names files outside its directory")
    if (directory / output).exists():
        for name in inputs:  # the merged file is complete: drop what it replaces
            (directory / name).unlink(missing_ok=True)
    else:
        for tmp in directory.glob("." + glob.escape(output) + ".*.tmp"):
            tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    path.unlink()
    fsync_dir(directory)
    return True


def _output_name(first_input: str) -> str:
    m = _STAMP.match(first_input)
    stamp = m.group(1) if m else f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
    # Named after its first input so names keep sorting in time order.
    return f"events_{stamp}_compacted_{os.getpid()}_{secrets.token_hex(4)}.parquet"


def _merge(directory: Path, files: list[Path], compression: str) -> None:
    tables = []
    for f in files:
        with pq.ParquetFile(f) as pf:
            tables.append(pf.read())
    # Older files lack newer columns and hold error FALSE: the merged file is
    # of the current schema version (what every reader makes of them anyway).
    merged = conform(pa.concat_tables(tables, promote_options="default"))
    output = directory / _output_name(files[0].name)
    journal = {"version": 1, "output": output.name, "inputs": [f.name for f in files]}
    _write_bytes_atomic(json.dumps(journal).encode(), directory / JOURNAL_NAME)
    try:
        write_table_atomic(merged, output, compression)
        with pq.ParquetFile(output) as pf:
            written = pf.metadata.num_rows
        if written != merged.num_rows:
            output.unlink()
            raise CompactionError(f"{output}: wrote {written} rows, expected {merged.num_rows}")
    except BaseException:
        (directory / JOURNAL_NAME).unlink(missing_ok=True)
        raise
    for f in files:
        f.unlink(missing_ok=True)
    fsync_dir(directory)
    (directory / JOURNAL_NAME).unlink()
    fsync_dir(directory)


_Inventory = list[tuple[Path, list[tuple[Path, int]]]]


def _inventory(root: Path, result: CompactResult | None) -> _Inventory:
    """Each directory's ``events_*.parquet`` files with their row counts; files
    the original system wrote are left alone (never rewritten, see ``_layout``)."""
    out: _Inventory = []
    for directory in sorted({f.parent for f in data_files(root)}):
        files: list[tuple[Path, int]] = []
        ours, _ = split_by_writer(sorted(directory.glob("events_*.parquet")))
        for f in ours:
            try:
                with pq.ParquetFile(f) as pf:
                    files.append((f, pf.metadata.num_rows))
            except (OSError, pa.ArrowException):
                if result is not None:
                    result.skipped.append(str(f))
        out.append((directory, files))
    return out


def _plan(files: list[tuple[Path, int]], min_files: int, target_rows: int) -> list[list[Path]]:
    """Consecutive runs of small files, each at most ``target_rows`` rows."""
    groups: list[list[Path]] = []
    group: list[Path] = []
    rows = 0
    for f, n in [*files, (Path(), target_rows)]:  # the sentinel closes the last run
        if n >= target_rows or rows + n > target_rows:
            if len(group) >= min_files:
                groups.append(group)
            group, rows = [], 0
        if n < target_rows:
            group.append(f)
            rows += n
    return groups


def compact(
    output_dir: str | Path,
    *,
    min_files: int = 2,
    target_rows: int = DEFAULT_TARGET_ROWS,
    progress: Callable[[int, int], None] | None = None,
    compression: str = "snappy",
) -> CompactResult:
    """Merge the small ``events_*.parquet`` files of each partition.

    Safe against crashes and concurrent writers: each merge writes a journal
    (inputs and output name) before the merged file is renamed into place,
    and the journal is removed only after the inputs are; the next run
    finishes or undoes what a journal describes, and readers skip inputs a
    committed merge supersedes. Writers only rename complete files in, so
    every ``events_*.parquet`` present is complete; hidden files are never
    read. Rows keep their schema and values.

    Args:
        output_dir: the Parquet store.
        min_files: merge a run of small files only if it has this many.
        target_rows: files with this many rows are left alone; a merged file
            holds at most this many.
        progress: called as ``progress(files_done, files_total)``.
        compression: codec of the merged files.

    Returns:
        A :class:`CompactResult`.

    Raises:
        FileNotFoundError: ``output_dir`` is not a directory.
        ValueError: ``min_files < 2`` or ``target_rows < 1``.
        CompactionError: another compaction holds the store, or a journal is unreadable.
    """
    root = Path(output_dir)
    if min_files < 2:
        raise ValueError(f"min_files must be at least 2, got {min_files}")
    if target_rows < 1:
        raise ValueError(f"target_rows must be positive, got {target_rows}")
    if not root.is_dir():
        raise FileNotFoundError(f"no store at {str(root)!r}")
    result = CompactResult()
    with _exclusive(root):
        journal_dirs = {Path(d) for d, _, names in os.walk(root) if JOURNAL_NAME in names}
        result.recovered = sum(_recover(d) for d in sorted(journal_dirs))
        result.temp_files_removed = remove_stale_temp_files(root)
        plan: list[tuple[Path, list[Path]]] = []
        for directory, files in _inventory(root, result):
            result.files_before += len(files)
            result.rows_before += sum(n for _, n in files)
            result.bytes_before += sum(f.stat().st_size for f, _ in files)
            groups = _plan(files, min_files, target_rows)
            plan.extend((directory, g) for g in groups)
            result.partitions += bool(groups)
        total = sum(len(g) for _, g in plan)
        if progress is not None:
            progress(0, total)
        for directory, group in plan:
            _merge(directory, group, compression)
            result.files_merged += len(group)
            result.files_written += 1
            if progress is not None:
                progress(result.files_merged, total)
        for _, files in _inventory(root, None):
            result.files_after += len(files)
            result.rows_after += sum(n for _, n in files)
            result.bytes_after += sum(f.stat().st_size for f, _ in files)
    return result
