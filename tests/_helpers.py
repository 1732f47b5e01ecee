"""Small helpers shared by the test modules."""

from __future__ import annotations

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
