"""The embedded default store: Parquet files, read back with DuckDB.

Layout: ``output_dir/YYYY-MM-DD/events_*.parquet`` (``partition_by="date"``,
the UTC day of the span's start) or ``output_dir/session=<id>/events_*.parquet``
(``partition_by="session_id"``). Each batch becomes one file per partition,
written to a hidden temporary name, fsynced and renamed, so readers never see
a partial file; names carry time, pid, a sequence number and random bits, so
several processes can share a directory.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage.base import StorageBackend

FILE_GLOB = "**/*.parquet"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def partition_dir_name(partition_by: str, key: str) -> str:
    if partition_by == "session_id":
        return "session=" + (_UNSAFE.sub("_", key)[:100] or "_")
    return key


def write_table_atomic(table: pa.Table, path: Path, compression: str = "snappy") -> None:
    """Write ``table`` to ``path`` so that ``path`` is either absent or complete."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression=None if compression == "none" else compression)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


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
        return f"events_{now:%Y%m%dT%H%M%S%f}_{os.getpid()}_{seq:06d}_{secrets.token_hex(3)}.parquet"

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
        for key, part in self._partitions(table):
            directory = self.root / partition_dir_name(self.config.partition_by, key)
            directory.mkdir(parents=True, exist_ok=True)
            write_table_atomic(part, directory / self._name(), self.config.compression)

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(pa.Table.from_pylist([e.to_row() for e in events], schema=SCHEMA))

    async def health_check(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)
