"""The Parquet store's layout: how its files are named, written, listed and
told apart.

``output_dir/YYYY-MM-DD/events_*.parquet`` (``partition_by="date"``, the UTC
day of the span's start) or ``output_dir/session=<id>/events_*.parquet``
(``partition_by="session_id"``). Hidden files are never data: a writer's
temporary files (see ``_files``), compaction's journal and lock.

A store may also hold files the original system (llamonitor-async) wrote,
under the same ``YYYY-MM-DD/events_*.parquet`` names: its own layout (naive
timestamps, ``error`` the message, a ``schema_version`` column, ...).
:func:`split_by_writer` tells them from ours, so the query side normalises
them and compaction leaves them alone.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from llamonitor.storage._files import write_atomic

FILE_GLOB = "**/*.parquet"
OURS = re.compile(r"^events_\d{8}T\d{12}_")
"""Names our writer and compaction give (``events_<UTC time>T..._<pid>_...``);
the original system's are ``events_YYYYmmdd_HHMMSS_ffffff.parquet``."""
VERSION_KEY = b"llamonitor.schema_version"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

METRICS_DIR = "metrics"
"""``output_dir/metrics/`` holds metric points (``llamonitor.metrics``), not spans."""

SCORES_DIR = "scores"
"""``output_dir/scores/`` holds scores (``storage._scores``), not spans."""

JOURNAL_NAME = ".compact-journal.json"
"""Written in a partition directory while a merge is in flight (see :func:`compact`)."""


def partition_dir_name(partition_by: str, key: str) -> str:
    if partition_by == "session_id":
        return "session=" + (_UNSAFE.sub("_", key)[:100] or "_")
    return key


UNIQUE_COLUMNS = frozenset(
    {"event_id", "session_id", "trace_id", "span_id", "parent_span_id", "prompt_hash"}
)
"""Random hex ids: a dictionary of them is as large as the column, and snappy
finds no repeats in them, so both would cost time for nothing (2.5x the time
of writing a batch of spans, for a file 7% smaller)."""


def parquet_writer(table: pa.Table, compression: str) -> Callable[[BinaryIO], None]:
    codec = None if compression == "none" else compression
    names = table.schema.names
    dictionary = [c for c in names if c not in UNIQUE_COLUMNS]
    codecs: str | dict[str, str] | None = codec
    if codec == "snappy":  # an entropy coder (zstd, gzip) does halve hex: keep it there
        codecs = {c: "none" if c in UNIQUE_COLUMNS else codec for c in names}

    def write(f: BinaryIO) -> None:
        import pyarrow.parquet as pq  # not at import: readers of the store do without it

        pq.write_table(table, f, compression=codecs, use_dictionary=dictionary)

    return write


def write_table_atomic(table: pa.Table, path: Path, compression: str = "snappy") -> None:
    """Write ``table`` to ``path`` so that ``path`` is either absent or complete."""
    write_atomic(path, parquet_writer(table, compression))


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
        if dirpath == str(root):  # metric points and scores, not spans
            dirnames[:] = [d for d in dirnames if d not in (METRICS_DIR, SCORES_DIR)]
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


@dataclass(frozen=True)
class ForeignFile:
    """A data file the original system wrote: its columns and whether its
    timestamps are time-zone aware (the original's are naive UTC)."""

    path: Path
    columns: tuple[str, ...]
    aware: bool


_foreign_cache: dict[Path, tuple[int, int, ForeignFile | None]] = {}
_cache_lock = threading.Lock()


def _foreign(path: Path) -> ForeignFile | None:
    """``path`` as a :class:`ForeignFile`, or ``None`` if it is ours: written
    with our metadata, or (an unknown writer) with a boolean ``error``."""
    st = path.stat()
    with _cache_lock:
        cached = _foreign_cache.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    import pyarrow.parquet as pq  # only for files with a name not ours

    schema = pq.read_schema(path)
    found: ForeignFile | None = None
    if VERSION_KEY not in (schema.metadata or {}):
        names = schema.names
        error = schema.field("error").type if "error" in names else None
        if "schema_version" in names or (error is not None and not pa.types.is_boolean(error)):
            ts = schema.field("timestamp").type if "timestamp" in names else None
            aware = ts is not None and pa.types.is_timestamp(ts) and ts.tz is not None
            found = ForeignFile(path, tuple(names), aware)
    with _cache_lock:
        _foreign_cache[path] = (st.st_mtime_ns, st.st_size, found)
    return found


def split_by_writer(files: Sequence[Path]) -> tuple[list[Path], list[ForeignFile]]:
    """``(ours, the original system's)`` among a store's data files.

    Our names are recognised without opening the file; any other file's
    footer is read once per process (cached by size and modification time:
    data files are written once, under a temporary name, and renamed).
    A file that cannot be read is counted as ours (the query reports it).
    """
    ours: list[Path] = []
    foreign: list[ForeignFile] = []
    for f in files:
        path = Path(f)
        if OURS.match(path.name):
            ours.append(path)
            continue
        try:
            info = _foreign(path)
        except (OSError, pa.ArrowException):
            info = None
        if info is None:
            ours.append(path)
        else:
            foreign.append(info)
    return ours, foreign
