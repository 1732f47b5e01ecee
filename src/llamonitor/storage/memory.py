"""An in-memory backend for users' own tests."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema._extensions import failed_or_null, rows_table
from llamonitor.schema.config import StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage.base import StorageBackend


class InMemoryBackend(StorageBackend):
    """Keeps every written span in memory.

    ``StorageConfig(backend=InMemoryBackend())`` (an instance, so the test can
    read it back) then ``backend.events()``/``backend.rows()``/``backend.table()``.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._tables: list[pa.Table] = []
        self._lock = threading.Lock()

    async def write_batch(self, events: list[MetricEvent]) -> None:
        table = rows_table([e.to_row() for e in events])
        await self.write_table(table)

    async def write_table(self, table: pa.Table) -> None:
        # As every store keeps it (schema version 3): ``error`` TRUE or NULL,
        # also in a table written here as it was given (FALSE for a success).
        i = table.schema.get_field_index("error")
        if i >= 0 and pa.types.is_boolean(table.schema.field(i).type):
            table = table.set_column(i, table.schema.field(i), failed_or_null(table.column(i)))
        with self._lock:
            self._tables.append(table)

    def table(self) -> pa.Table:
        """Everything written so far, one Arrow table."""
        with self._lock:
            tables = list(self._tables)
        if not tables:
            return SCHEMA.empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def rows(self) -> list[dict[str, Any]]:
        """Every written span as stored: ``error`` True on a failed span and
        None otherwise (``events()`` gives ``MetricEvent.error``, a bool)."""
        return self.table().to_pylist()  # type: ignore[no-any-return]

    def events(self) -> list[MetricEvent]:
        return [MetricEvent.from_row(r) for r in self.rows()]

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(t.num_rows for t in self._tables)
