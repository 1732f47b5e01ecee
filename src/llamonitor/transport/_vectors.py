"""Whole columns of a batch in a few vectorized steps (worker thread).

The facts every span record has — ids, clock readings, the decorator's static
facts — become Arrow arrays without a Python step per row beyond reading the
attribute: ids are hexed in bulk (``binascii.hexlify`` of one buffer, then
``pa.StringArray.from_buffers``), times go through numpy, and a decorator's
facts are stored once per distinct decorator and taken row by row in C++.
"""

from __future__ import annotations

import binascii
import os
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

_sid = attrgetter("_sid")
_parent = attrgetter("_parent")


def fixed_hex(raw: bytes, n: int, validity: pa.Buffer | None = None, nulls: int = 0) -> pa.Array:
    """``n`` strings of equal width: the hex of consecutive slices of ``raw``."""
    width = 2 * len(raw) // n if n else 0
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32) if n else np.zeros(1, np.int32)
    data = binascii.hexlify(raw)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), validity, nulls
    )


def event_ids(n: int) -> pa.Array:
    """``n`` fresh UUIDv7s (RFC 9562) as 32 hex characters: the current Unix
    time in milliseconds, then 74 random bits. Time-ordered, so a database's
    primary-key index takes each batch near its right edge instead of on
    random pages (benchmarks/bench_ids.py: a third less PostgreSQL CPU per span,
    with the time-ordered session and trace ids)."""
    raw = bytearray(os.urandom(16 * n))
    if n:
        rows = np.frombuffer(raw, np.uint8).reshape(n, 16)
        rows[:, :6] = np.frombuffer((time.time_ns() // 1_000_000).to_bytes(6, "big"), np.uint8)
        rows[:, 6] = (rows[:, 6] & 0x0F) | 0x70  # version 7
        rows[:, 8] = (rows[:, 8] & 0x3F) | 0x80  # the RFC's variant
    return fixed_hex(bytes(raw), n)


def span_ids(spans: Sequence[Any]) -> pa.Array:
    """The 16-hex-character ``span_id`` of each span (``to_bytes(8, "big").hex()``)."""
    sids = np.fromiter(map(_sid, spans), np.uint64, len(spans))
    return fixed_hex(sids.astype(">u8").tobytes(), len(spans))


def parent_ids(spans: Sequence[Any]) -> pa.Array | None:
    """The parent's span id of each span, null for a root; ``None`` if all are roots."""
    parents = list(map(_parent, spans))
    n = len(parents)
    if parents.count(None) == n:
        return None
    ints = pa.array(parents, pa.uint64())
    values = np.frombuffer(ints.buffers()[1], np.uint64, n)  # nulls hold zeros
    return fixed_hex(values.astype(">u8").tobytes(), n, ints.buffers()[0], ints.null_count)


def strings(values: list[Any]) -> pa.Array:
    """A string column; ASCII strings (ids) are joined and laid out in one go,
    3x faster than ``pa.array`` converting them one by one."""
    try:
        joined = "".join(values)
    except TypeError:  # a None, or not a str: let Arrow say what it makes of it
        return pa.array(values, pa.string())
    n = len(values)
    if not joined.isascii() or len(joined) >= 2**31:
        return pa.array(values, pa.string())
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.fromiter(map(len, values), np.int32, n), out=offsets[1:])
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(joined.encode("ascii"))
    )


def int64s(values: Sequence[int]) -> Any:
    return np.fromiter(values, np.int64, len(values))


class BySpec:
    """The distinct decorators (specs) of a batch and which one each row has:
    a column of per-decorator facts is built from one value per decorator."""

    __slots__ = ("index", "n", "specs")

    def __init__(self, specs: Sequence[Any]) -> None:
        self.n = n = len(specs)
        first = specs[0]
        if specs.count(first) == n:  # the common case, one C loop (identity first)
            self.specs = [first]
            self.index: Any = None
            return
        seen: dict[Any, int] = {}
        idx = [seen.setdefault(s, len(seen)) for s in specs]
        self.specs = list(seen)
        self.index = pa.array(idx, pa.int32())

    def column(self, values: list[Any], typ: pa.DataType) -> pa.Array | None:
        """A column from one value per distinct spec (``None``: all null)."""
        if all(v is None for v in values):
            return None
        if self.index is None:
            return pa.repeat(pa.scalar(values[0], typ), self.n)
        return pa.array(values, typ).take(self.index)

    def rows_of(self, which: list[int]) -> Any:
        """A boolean numpy mask of the rows whose spec is one of ``which`` (indices)."""
        if self.index is None:
            return np.full(self.n, bool(which))
        return np.isin(self.index.to_numpy(), which)
