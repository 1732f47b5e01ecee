"""Small helpers shared by the test modules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import llamonitor

TEXT_COLUMNS = ("text_char_count", "text_word_count", "text_byte_size", "text_line_count")


def rows(spans: llamonitor.InMemoryBackend) -> list[dict[str, Any]]:
    """Every span recorded so far (after a flush)."""
    assert llamonitor.flush(5)
    return spans.rows()


def one(spans: llamonitor.InMemoryBackend) -> dict[str, Any]:
    """The only span recorded so far."""
    (row,) = rows(spans)
    return row


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def span_row(i: int, **values: Any) -> dict[str, Any]:
    """A complete stored span row (one per second from ``T0``); ``values`` override."""
    base: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
    base.update(
        event_id=f"e{i:06d}",
        session_id="s",
        trace_id="t" * 32,
        span_id=f"{i:016x}",
        operation_name="op",
        operation_type="llm_call",
        timestamp=T0 + timedelta(seconds=i),
        duration_ms=1.0,
        error=None,  # TRUE or NULL (schema version 3)
        process_id=1,
    )
    base.update(values)
    return base


def accounted(h: dict[str, Any]) -> int:
    """Every event ``health_check()`` says it holds or settled, in one number."""
    return int(
        h["events_written"]
        + h["events_failed"]
        + h["events_dropped"]
        + h["queue_size"]
        + h["buffer_size"]
        + h["events_spooled"]
        + h["events_rejected"]
    )
