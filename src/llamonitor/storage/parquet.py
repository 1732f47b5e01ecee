"""The embedded default store: Parquet files, read back with DuckDB.

Layout (see ``_layout``): ``output_dir/YYYY-MM-DD/events_*.parquet``
(``partition_by="date"``, the UTC day of the span's start) or
``output_dir/session=<id>/events_*.parquet`` (``partition_by="session_id"``).
Each batch becomes one file per partition, written to a hidden temporary name,
fsynced and renamed, so readers never see a partial file; names carry time,
pid, a sequence number and random bits, so several processes can share a
directory. Temporary files of a writer that died are removed at the next start
(see ``_files``); compaction is in ``_compact``.
"""

from __future__ import annotations

import os
import secrets
import threading
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._extensions import conform, rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage._compact import (
    DEFAULT_TARGET_ROWS,
    LOCK_NAME,
    CompactionError,
    CompactResult,
    compact,
)
from llamonitor.storage._files import (
    fsync_dir,
    locked_temp,
    sweep_in_background,
    sync,
    temp_name,
)
from llamonitor.storage._layout import (
    FILE_GLOB,
    JOURNAL_NAME,
    data_files,
    parquet_writer,
    partition_dir_name,
    write_table_atomic,
)
from llamonitor.storage._parquet_read import query
from llamonitor.storage.base import StorageBackend

__all__ = [
    "DEFAULT_TARGET_ROWS",
    "FILE_GLOB",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "CompactResult",
    "CompactionError",
    "ParquetBackend",
    "compact",
    "data_files",
    "partition_dir_name",
    "query",
    "write_table_atomic",
]


class ParquetBackend(StorageBackend):
    """Writes each batch as Parquet files under ``config.output_dir``."""

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self.root = Path(self.config.output_dir)
        self._seq = 0
        self._lock = threading.Lock()
        self.sweeper: threading.Thread | None = None

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
        # Left by a writer that was killed mid-write; a large store must not delay the start.
        self.sweeper = sweep_in_background(self.root)

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        now = datetime.now(timezone.utc)
        rand = secrets.token_hex(3)
        return f"events_{now:%Y%m%dT%H%M%S%f}_{os.getpid()}_{seq:06d}_{rand}.parquet"

    def _partitions(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        if self.config.partition_by != "session_id":
            return _days(table)
        keys = table.column("session_id")
        uniques = pc.unique(keys).to_pylist()
        if len(uniques) == 1:
            return [(uniques[0], table)]
        return [(k, table.filter(pc.equal(keys, k))) for k in uniques]

    async def write_table(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = conform(table)
        parts = self._partitions(table)
        if len(parts) == 1:
            key, part = parts[0]
            directory = self.root / partition_dir_name(self.config.partition_by, key)
            _mkdir(directory)
            write_table_atomic(part, directory / self._name(), self.config.compression)
            return
        # Several files for one batch: write them all under (locked) temporary
        # names first, then rename, so a failure (a full disk) leaves none of
        # them and the retry does not duplicate the partitions that had succeeded.
        with ExitStack() as held:
            staged = []
            for key, part in parts:
                directory = self.root / partition_dir_name(self.config.partition_by, key)
                _mkdir(directory)
                final = directory / self._name()
                staged.append((_stage(part, final, self.config.compression, held), final))
            for tmp, final in staged:
                os.replace(tmp, final)
        for directory in {final.parent for _, final in staged}:
            fsync_dir(directory)

    async def write_tables_once(self, keyed: list[tuple[str, pa.Table]]) -> int:
        """Write each ``(key, table)`` as files named by ``key`` (one per
        partition: ``events_<first timestamp>_k<key>.parquet``), unless that
        file is already there: writing the same keyed table again (a broker
        redelivery) adds nothing. ``key``: ``[A-Za-z0-9]``, the same for the
        same rows. Returns the rows skipped as already written.
        """
        skipped = 0
        for key, table in keyed:
            if table.num_rows == 0:
                continue
            if not key.isalnum():
                raise ValueError(f"a file key must be letters and digits, not {key!r}")
            for part_key, part in self._partitions(conform(table)):
                directory = self.root / partition_dir_name(self.config.partition_by, part_key)
                final = directory / _keyed_name(part, key)
                if final.exists():
                    skipped += part.num_rows
                    continue
                _mkdir(directory)
                write_table_atomic(part, final, self.config.compression)
        return skipped

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))

    async def health_check(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)


_DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def _days(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """The rows of each UTC day of ``timestamp``, keyed ``YYYY-MM-DD``: integer
    division of the microseconds (``pc.strftime`` would cost more than the
    write itself, 1-2 us a row)."""
    micros = table.column("timestamp").cast(pa.int64()).to_numpy()
    days = np.floor_divide(micros, _DAY_US)
    first, last = int(days.min()), int(days.max())
    if first == last:
        return [((_EPOCH + timedelta(days=first)).isoformat(), table)]
    return [
        ((_EPOCH + timedelta(days=int(d))).isoformat(), table.filter(pa.array(days == d)))
        for d in np.unique(days)
    ]


def _mkdir(directory: Path) -> None:
    """``mkdir -p directory``, each directory it created made durable in its
    parent (fsync), as the renames of the files in it are."""
    missing = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def _keyed_name(part: pa.Table, key: str) -> str:
    """The file name of a keyed part: its first span's start (so names sort in
    time and read as ours, like the writer's), then the key."""
    first = pc.min(part.column("timestamp")).as_py()
    stamp = f"{first:%Y%m%dT%H%M%S%f}" if first is not None else "00000000T000000000000"
    return f"events_{stamp}_k{key}.parquet"


def _stage(part: pa.Table, final: Path, compression: str, held: ExitStack) -> Path:
    """Write ``part`` to a temporary file beside ``final``, kept open (and locked)
    by ``held`` until the batch's renames are done; returns its path."""
    tmp = temp_name(final, ".staged")
    f = held.enter_context(locked_temp(tmp))
    parquet_writer(part, compression)(f)
    sync(f)
    return tmp
