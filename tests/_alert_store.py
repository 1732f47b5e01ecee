"""Spans written into a Parquet store the way the writer lays it out (for the alert tests)."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import llamonitor

_seq = 0


def span(ts: datetime, **values: Any) -> dict[str, Any]:
    """A stored span row started at ``ts``; ``values`` override."""
    global _seq
    _seq += 1
    row: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
    row.update(
        event_id=secrets.token_hex(8), session_id="s", trace_id=secrets.token_hex(16),
        span_id=secrets.token_hex(8), operation_name="llm.answer", operation_type="llm_call",
        timestamp=ts, duration_ms=100.0, error=None, process_id=1, model="m1",
    )
    row.update(values)
    return row


def write_spans(store: Path, rows: list[dict[str, Any]]) -> Path:
    """One Parquet file of ``rows`` in the day partition of the first, named like ours."""
    first = rows[0]["timestamp"]
    day = store / first.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"events_{first:%Y%m%dT%H%M%S%f}_{secrets.token_hex(4)}.parquet"
    tmp = day / f".{path.name}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA), tmp)
    tmp.rename(path)
    return path
