"""What the hot path hands the worker, and the pure helpers both sides share.

A *span record* is the tuple ``(spec, span, t0_ns, t1_ns, error, text, extra)``:

- ``spec``: the decorator's static facts (``operation_name``,
  ``operation_type``, ``custom_attributes``, ``custom_json``, ``text_metrics``);
- ``span``: the ``SpanContext`` (ids, sampled flag, attributes);
- ``t0_ns``/``t1_ns``: ``time.perf_counter_ns()`` at start and end;
- ``error``: ``None`` or ``(error_type, error_message)``;
- ``text``: ``None``, a ``str`` to measure on the worker, or a ``TextMeasure``
  already taken on the hot path (long text, not kept);
- ``extra``: ``None``, a dict of column values / ``custom_attributes`` /
  ``Deferred`` work from collectors, or ``StreamFacts`` for a stream.

A *row record* is ``(None, row, 0, 0, None, None, None)`` with ``row`` a
stored-form dict (from ``MetricEvent.to_row``): the same length, so the hot
path never checks which kind it holds. A *table row record* is ``(None, table, i, 0, None,
None, None)``: row ``i`` of a ready ``SCHEMA`` Arrow table (an OTLP request's
spans, ``MonitoringWriter.record_table``); the worker slices, never converts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

KEEP_TEXT_CHARS = 16 * 1024
"""Longer text is measured on the hot path and not kept in the queue."""

RECORD_BASE_BYTES = 512
"""Estimated size of a record without its text, for the queue's byte bound."""

ROW_RECORD_BYTES = 96
"""A table row record's own tuple, beside its share of the table."""

MAX_ERROR_MESSAGE_CHARS = 2000
CHUNK_CHARS = 1 << 20


class TextMeasure(NamedTuple):
    char_count: int
    word_count: int
    byte_size: int
    line_count: int


# ASCII bytes that str.split() treats as whitespace map to " ", the others to
# "x": an ASCII text's words are then its "x" runs, counted by their starts.
_WS = frozenset(range(9, 14)) | frozenset(range(0x1C, 0x21))
_WORD_MAP = bytes(32 if b in _WS else 120 for b in range(256))


def words_and_bytes(s: str) -> tuple[int, int]:
    """``len(s.split())`` and the UTF-8 size of ``s`` (at most 1 MiB of it),
    without building the list of words (2.4x faster for ASCII text)."""
    if s.isascii():
        mapped = s.encode("ascii").translate(_WORD_MAP)
        return mapped.count(b" x") + (mapped[:1] == b"x"), len(s)
    return len(s.split()), len(s.encode("utf-8", "surrogatepass"))


def measure_text(s: str) -> TextMeasure:
    """Characters, ``str.split()`` words, UTF-8 bytes and lines of ``s``.

    Works in 1 MiB slices, so a huge string costs time but no big temporaries.
    """
    n = len(s)
    if n <= CHUNK_CHARS:
        words, size = words_and_bytes(s)
    else:
        words = size = 0
        prev_word_end = False
        for i in range(0, n, CHUNK_CHARS):
            part = s[i : i + CHUNK_CHARS]
            w, b = words_and_bytes(part)
            if prev_word_end and not part[0].isspace():
                w -= 1  # a word cut in two by the slice boundary
            prev_word_end = not part[-1].isspace()
            words += w
            size += b
    lines = 0 if n == 0 else s.count("\n") + (0 if s.endswith("\n") else 1)
    return TextMeasure(n, words, size, lines)


class StreamFacts(NamedTuple):
    """The ``extra`` of a stream's record: written to columns directly."""

    items: int
    time_to_first_token_ms: float | None
    more: dict[str, Any] | None  # collectors' output, stream_closed_early


class Deferred:
    """Collector work the worker thread finishes: ``fn(*args)`` returns a dict
    of column values (or ``custom_attributes``).

    Run once: a later call (the worker converting a record again, alone, after
    its batch failed) gives the first call's result or raises its exception,
    and the arguments are let go as soon as it has run."""

    __slots__ = ("_error", "_out", "args", "fn")
    _out: dict[str, Any] | None  # set once run

    def __init__(self, fn: Callable[..., dict[str, Any] | None], *args: Any) -> None:
        self.fn = fn
        self.args = args
        self._error: Exception | None = None

    def __call__(self) -> dict[str, Any] | None:
        if self._error is not None:
            raise self._error
        try:
            return self._out
        except AttributeError:
            pass
        try:
            out = self.fn(*self.args)
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self.args = ()
        self._out = out
        return out


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a __repr__ that raises
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"


def _jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # NaN is not JSON
    if depth < 8 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    return safe_repr(value)


def safe_json(attrs: dict[str, Any]) -> str | None:
    """JSON of ``attrs``; what JSON cannot hold is stored as its repr, never dropped."""
    if not attrs:
        return None
    try:
        return json.dumps(attrs, default=safe_repr, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        # Cycles, non-string keys, NaN/Infinity: degrade value by value.
        return json.dumps(
            {str(k): _jsonable(v) for k, v in attrs.items()},
            default=safe_repr,
            ensure_ascii=False,
            allow_nan=False,
        )


def error_facts(exc: BaseException) -> tuple[str, str]:
    """``(error_type, error_message)`` of an exception, never raising."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:
        message = safe_repr(exc)
    return name, message[:MAX_ERROR_MESSAGE_CHARS]


def row_bytes(row: dict[str, Any]) -> int:
    """Estimated memory of a queued stored-form row dict: the base size plus its text."""
    return RECORD_BASE_BYTES + sum(len(v) for v in row.values() if v.__class__ is str)


def table_row_bytes(table: Any) -> int:
    """Each row's share of an Arrow table's buffers (rounded up), plus its
    record: what one table row record holds in the queue."""
    n = table.num_rows
    return ROW_RECORD_BYTES + (-(-table.nbytes // n) if n else 0)
