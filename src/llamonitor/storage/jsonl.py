"""A JSON Lines file sink: one span per line, appended."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from llamonitor.schema._extensions import conform, rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage.base import StorageBackend

DEFAULT_FILE_NAME = "events.jsonl"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


class JSONLBackend(StorageBackend):
    """Appends spans to ``output_dir/events.jsonl`` (``options={"file_name": ...}``).

    Each batch is written with one ``write`` call on a file opened in append
    mode and fsynced, so concurrent processes interleave whole lines.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        name = str(self.config.options.get("file_name", DEFAULT_FILE_NAME))
        self.path = Path(self.config.output_dir) / name
        self._lock = threading.Lock()

    async def initialize(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigurationError(
                "storage.output_dir", f"cannot append to {str(self.path)!r}: {exc}"
            ) from exc

    async def write_table(self, table: pa.Table) -> None:
        table = conform(table)
        lines = []
        for row in table.to_pylist():
            attrs = row.get("custom_attributes")
            row["custom_attributes"] = json.loads(attrs) if attrs else {}
            lines.append(json.dumps(row, default=_default, ensure_ascii=False))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))
