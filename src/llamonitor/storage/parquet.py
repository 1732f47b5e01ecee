"""The embedded default store: Parquet files, read back with DuckDB.

Layout: ``output_dir/YYYY-MM-DD/events_*.parquet`` (``partition_by="date"``,
the UTC day of the span's start) or ``output_dir/session=<id>/events_*.parquet``
(``partition_by="session_id"``). Each batch becomes one file per partition,
written to a hidden temporary name, fsynced and renamed, so readers never see
a partial file; names carry time, pid, a sequence number and random bits, so
several processes can share a directory.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage._duckdb import DuckDBQuery, parquet_relation
from llamonitor.storage.base import StorageBackend

FILE_GLOB = "**/*.parquet"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def partition_dir_name(partition_by: str, key: str) -> str:
    if partition_by == "session_id":
        return "session=" + (_UNSAFE.sub("_", key)[:100] or "_")
    return key


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (best effort: not every OS can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` to a hidden temporary file, fsync, rename to ``path``: ``path`` is
    then either absent or complete (prometheus_client's ``write_to_textfile``)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _parquet_writer(table: pa.Table, compression: str) -> Callable[[BinaryIO], None]:
    codec = None if compression == "none" else compression

    def write(f: BinaryIO) -> None:
        pq.write_table(table, f, compression=codec)

    return write


def write_table_atomic(table: pa.Table, path: Path, compression: str = "snappy") -> None:
    """Write ``table`` to ``path`` so that ``path`` is either absent or complete."""
    _write_atomic(path, _parquet_writer(table, compression))


class ParquetBackend(StorageBackend):
    """Writes each batch as Parquet files under ``config.output_dir``."""

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self.root = Path(self.config.output_dir)
        self._seq = 0
        self._lock = threading.Lock()

    async def initialize(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".llamonitor-probe-{os.getpid()}-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigurationError(
                "storage.output_dir", f"{str(self.root)!r} is not a writable directory: {exc}"
            ) from exc

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        now = datetime.now(timezone.utc)
        rand = secrets.token_hex(3)
        return f"events_{now:%Y%m%dT%H%M%S%f}_{os.getpid()}_{seq:06d}_{rand}.parquet"

    def _partitions(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        if self.config.partition_by == "session_id":
            keys = table.column("session_id")
        else:
            keys = pc.strftime(table.column("timestamp"), format="%Y-%m-%d")
        uniques = pc.unique(keys).to_pylist()
        if len(uniques) == 1:
            return [(uniques[0], table)]
        return [(k, table.filter(pc.equal(keys, k))) for k in uniques]

    async def write_table(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table.schema != SCHEMA:
            table = table.cast(SCHEMA)
        parts = self._partitions(table)
        if len(parts) == 1:
            key, part = parts[0]
            directory = self.root / partition_dir_name(self.config.partition_by, key)
            directory.mkdir(parents=True, exist_ok=True)
            write_table_atomic(part, directory / self._name(), self.config.compression)
            return
        # Several files for one batch: write them all under temporary names
        # first, then rename, so a failure (a full disk) leaves none of them and
        # the retry does not duplicate the partitions that had succeeded.
        staged: list[tuple[Path, Path]] = []
        try:
            for key, part in parts:
                directory = self.root / partition_dir_name(self.config.partition_by, key)
                directory.mkdir(parents=True, exist_ok=True)
                final = directory / self._name()
                tmp = final.with_name(f".{final.name}.staged.tmp")
                _write_atomic(tmp, _parquet_writer(part, self.config.compression))
                staged.append((tmp, final))
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            os.replace(tmp, final)
        for directory in {final.parent for _, final in staged}:
            _fsync_dir(directory)

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(pa.Table.from_pylist([e.to_row() for e in events], schema=SCHEMA))

    async def health_check(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)


# -- query side and compaction ---------------------------------------------------

JOURNAL_NAME = ".compact-journal.json"
"""Written in a partition directory while a merge is in flight (see :func:`compact`)."""

LOCK_NAME = ".compact.lock"
DEFAULT_TARGET_ROWS = 1_000_000
_STAMP = re.compile(r"^events_(\d{8}T\d{12})_")


class CompactionError(RuntimeError):
    """Compaction cannot proceed safely (a journal it cannot read, a lock held...)."""


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".")


def _journal_inputs(directory: Path, listed: set[Path] | None = None) -> set[str]:
    """Inputs a committed merge has superseded (its output exists, they may linger).

    With ``listed``, the output must be among those files: a reader that listed
    the directory before the output was renamed in must keep reading the inputs.
    """
    try:
        journal = json.loads((directory / JOURNAL_NAME).read_text("utf-8"))
        output = directory / str(journal["output"])
        if output in listed if listed is not None else output.exists():
            return {str(name) for name in journal["inputs"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return set()


def data_files(output_dir: str | Path) -> list[Path]:
    """Every complete Parquet file of the store, sorted.

    Hidden files (a writer's ``.*.tmp``) are not data. Inputs of a merge
    whose output is already in place are left out, so a reader never counts
    a row twice, even after a compaction that crashed before cleaning up.
    """
    root = Path(output_dir)
    found: list[Path] = []
    journaled: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        directory = Path(dirpath)
        found.extend(directory / n for n in filenames if _is_data_file(n))
        if JOURNAL_NAME in filenames:
            journaled.append(directory)
    # Journals are read after listing the files: a journal removed meanwhile
    # means its inputs are gone too, and DuckDB's "file not found" retries.
    if journaled:
        listed = set(found)
        skip = {d / name for d in journaled for name in _journal_inputs(d, listed)}
        found = [f for f in found if f not in skip]
    return sorted(found)


def query(output_dir: str | Path) -> DuckDBQuery:
    """The query side of a Parquet store (empty results while it has no files).

    Args:
        output_dir: the ``storage.output_dir`` the store was written to.

    Returns:
        A :class:`~llamonitor.storage._duckdb.DuckDBQuery` that lists the
        files again at every query.
    """
    root = Path(output_dir)
    return DuckDBQuery(lambda _filters: parquet_relation(data_files(root)))


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
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    def write(f: BinaryIO) -> None:
        f.write(data)

    _write_atomic(path, write)


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
    _fsync_dir(directory)
    path.unlink()
    _fsync_dir(directory)
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
    merged = pa.concat_tables(tables, promote_options="default")
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
    _fsync_dir(directory)
    (directory / JOURNAL_NAME).unlink()
    _fsync_dir(directory)


_Inventory = list[tuple[Path, list[tuple[Path, int]]]]


def _inventory(root: Path, result: CompactResult | None) -> _Inventory:
    """Each directory's ``events_*.parquet`` files with their row counts."""
    out: _Inventory = []
    for directory in sorted({f.parent for f in data_files(root)}):
        files: list[tuple[Path, int]] = []
        for f in sorted(directory.glob("events_*.parquet")):
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
