"""A batch as PostgreSQL's binary ``COPY`` stream, built from its Arrow columns.

``copy_records_to_table`` needs a Python object per value (``to_pylist``)
and a tuple per row, then encodes each value again: most of the client's
time per row, on the two cores the server needs too. Here the stream is
built with numpy, a column at a time for all rows at once.

Columns of one width in every row (no NULL, and for text: every value the
same length -- ids usually are) are *uniform*: they go first in each row, so
that the front of every row has the same layout and is filled by strided
copies. The rest -- text of varying length, NULLs -- follow, written at the
offsets their rows give them; rows are padded to the longest and the padding
dropped at the end. (The ``COPY`` column list is given in that order.)

The format (``COPY ... (FORMAT binary)``): a 19-byte header; per row an int16
field count, then per field an int32 length (-1: NULL) and that many bytes;
an int16 -1 trailer. Values are the types' binary send forms: ``text``,
``json`` and ``varchar`` their UTF-8 bytes, ``jsonb`` a version byte (1) and
the text, ``bigint`` and ``double precision`` 8 bytes, ``boolean`` 1,
``timestamptz`` microseconds since 2000-01-01 UTC in 8; all big-endian.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"

PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 UTC, PostgreSQL's epoch, in microseconds since 1970."""

CHUNK_ROWS = 2_000
"""Rows per piece of the stream: the server parses one piece while the next
is built (and the other half of a batch gets the event loop between pieces)."""

MAX_PADDING = 2.0
"""Rows are padded to the longest in their piece unless that would more than
this many times the piece's size; then each byte is placed on its own."""

TEXT_TYPES = ("text", "character varying", "character", "json")
"""Column types whose binary form is the UTF-8 text itself."""

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def supported(db_type: str, field: pa.Field) -> bool:
    """Can a value of ``field`` be sent to a column of ``db_type`` (``format_type``'s text)?"""
    base = db_type.split("(")[0].strip()
    t = field.type
    if pa.types.is_string(t):
        return base in TEXT_TYPES or base == "jsonb"
    if pa.types.is_int64(t):
        return base == "bigint"
    if pa.types.is_float64(t):
        return base == "double precision"
    if pa.types.is_boolean(t):
        return base == "boolean"
    if pa.types.is_timestamp(t):
        return base == "timestamp with time zone"
    return False


class _Column:
    """One field of every row: payload widths (0 for NULL) and the payloads."""

    def __init__(self, name: str, array: pa.Array, db_type: str) -> None:
        self.name = name
        n = len(array)
        self.valid: npt.NDArray[np.bool_] | None = None
        if array.null_count:
            self.valid = pc.is_valid(array).to_numpy(zero_copy_only=False)
        self.fixed: U8 | None = None  # (rows, width) big-endian values
        self.prefix = b""
        t = array.type
        if pa.types.is_string(t):
            if array.null_count:
                array = array.fill_null("")  # a null slot may hold bytes: drop them
            offsets = np.frombuffer(array.buffers()[1], np.int32, n + 1, 4 * array.offset)
            self.offsets: I64 = offsets.astype(np.int64) - int(offsets[0])
            size = int(self.offsets[-1])
            buf = array.buffers()[2]
            self.data: U8 = (
                np.frombuffer(buf, np.uint8, size, int(offsets[0]))
                if size
                else np.empty(0, np.uint8)
            )
            if db_type.split("(")[0].strip() == "jsonb":
                self.prefix = b"\x01"
            self.width: I64 = np.diff(self.offsets) + len(self.prefix)
        else:
            if pa.types.is_timestamp(t):
                values = array.cast(pa.int64()).fill_null(0).to_numpy() - PG_EPOCH_US
                self.fixed = values.astype(">i8").view(np.uint8).reshape(-1, 8)
            elif pa.types.is_boolean(t):
                flags = array.fill_null(False).to_numpy(zero_copy_only=False)
                self.fixed = flags.astype(np.uint8).reshape(-1, 1)
            elif pa.types.is_float64(t):
                self.fixed = (
                    array.fill_null(0.0).to_numpy().astype(">f8").view(np.uint8).reshape(-1, 8)
                )
            else:
                self.fixed = (
                    array.fill_null(0).to_numpy().astype(">i8").view(np.uint8).reshape(-1, 8)
                )
            self.width = np.full(n, self.fixed.shape[1], np.int64)
        if self.valid is not None:
            self.width[~self.valid] = 0
        self.uniform = self.valid is None and (n == 0 or bool((self.width == self.width[0]).all()))

    def lengths(self, lo: int, hi: int) -> I64:
        """The int32 length fields of rows ``lo:hi``: payload sizes, -1 for NULL."""
        width = self.width[lo:hi]
        return width if self.valid is None else np.where(self.valid[lo:hi], width, -1)

    def values(self, lo: int, hi: int) -> U8:
        """A uniform column's payloads of rows ``lo:hi``, one row each."""
        if self.fixed is not None:
            return self.fixed[lo:hi]
        w = int(self.width[0]) - len(self.prefix)
        text = self.data[int(self.offsets[lo]) : int(self.offsets[hi])].reshape(hi - lo, w)
        if not self.prefix:
            return text
        return np.hstack([np.full((hi - lo, 1), self.prefix[0], np.uint8), text])

    def scatter(self, out: U8, lo: int, hi: int, at: I64) -> None:
        """Write the payloads of rows ``lo:hi`` into ``out`` (flat), row ``i``'s at ``at[i]``."""
        valid = None if self.valid is None else self.valid[lo:hi]
        rows = at if valid is None else at[valid]
        if self.fixed is not None:
            fixed = self.fixed[lo:hi] if valid is None else self.fixed[lo:hi][valid]
            out[rows[:, None] + np.arange(fixed.shape[1])] = fixed
            return
        if self.prefix:
            out[rows] = self.prefix[0]
            at = at + 1
        start, end = int(self.offsets[lo]), int(self.offsets[hi])
        if end > start:
            # The data buffer is the rows' values back to back: byte k of the
            # run goes to its row's offset plus its place in the value.
            text = np.diff(self.offsets[lo : hi + 1])
            shift = np.repeat(at - (np.cumsum(text) - text), text)
            out[np.arange(end - start, dtype=np.int64) + shift] = self.data[start:end]


class Encoder:
    """The binary ``COPY`` stream of a table's columns, piece by piece.

    Args:
        table: the rows.
        names: the columns to send (of ``table``).
        db_types: each column's type in the target table (``format_type``'s text).
    """

    def __init__(self, table: pa.Table, names: Sequence[str], db_types: Mapping[str, str]) -> None:
        self.rows = table.num_rows
        columns = [_Column(n, _array(table.column(n)), db_types[n]) for n in names]
        self._uniform = [c for c in columns if c.uniform]
        self._varying = [c for c in columns if not c.uniform]
        self.columns = [c.name for c in self._uniform + self._varying]
        """The ``COPY`` column list, in the stream's order."""
        self._count = np.frombuffer(len(columns).to_bytes(2, "big"), np.uint8)
        self._front = 2 + sum(4 + int(c.width[0]) for c in self._uniform) if self.rows else 2

    def pieces(self, rows: int | None = None) -> Iterator[bytes]:
        """The stream in pieces of ``rows`` rows (default :data:`CHUNK_ROWS`),
        the header in the first and the trailer in the last, each built when
        asked for."""
        step = rows or CHUNK_ROWS
        if self.rows == 0:
            yield HEADER + TRAILER
            return
        for lo in range(0, self.rows, step):
            hi = min(self.rows, lo + step)
            yield (HEADER if lo == 0 else b"") + self._rows(lo, hi) + (
                TRAILER if hi == self.rows else b""
            )

    def encode(self) -> bytes:
        """The whole stream."""
        return b"".join(self.pieces(max(1, self.rows)))

    def _front_block(self, lo: int, hi: int) -> U8:
        """Rows ``lo:hi``'s field count and uniform fields, one row each."""
        block = np.empty((hi - lo, self._front), np.uint8)
        block[:, :2] = self._count
        at = 2
        for c in self._uniform:
            w = int(c.width[0])
            block[:, at : at + 4] = np.frombuffer(w.to_bytes(4, "big"), np.uint8)
            block[:, at + 4 : at + 4 + w] = c.values(lo, hi)
            at += 4 + w
        return block

    def _rows(self, lo: int, hi: int) -> bytes:
        m = hi - lo
        front = self._front_block(lo, hi)
        if not self._varying:
            return front.tobytes()
        tail = np.zeros(m, np.int64)  # each row's varying part: lengths and payloads
        for c in self._varying:
            tail += 4 + c.width[lo:hi]
        size = self._front + tail
        widest = int(size.max())
        if m * widest <= MAX_PADDING * int(size.sum()):
            # Rows padded to the widest: the front is a strided copy, the
            # padding is dropped by one mask at the end.
            out = np.empty((m, widest), np.uint8)
            out[:, : self._front] = front
            flat = out.reshape(-1)
            at = np.arange(m, dtype=np.int64) * widest + self._front
            self._scatter_varying(flat, lo, hi, at)
            keep = np.arange(widest) < size[:, None]
            return flat[keep.reshape(-1)].tobytes()
        # A few very long rows: no padding, every byte placed on its own.
        start = np.zeros(m, np.int64)
        np.cumsum(size[:-1], out=start[1:])
        flat = np.empty(int(size.sum()), np.uint8)
        flat[start[:, None] + np.arange(self._front)] = front
        self._scatter_varying(flat, lo, hi, start + self._front)
        return flat.tobytes()

    def _scatter_varying(self, flat: U8, lo: int, hi: int, at: I64) -> None:
        four = np.arange(4)
        for c in self._varying:
            lengths = c.lengths(lo, hi).astype(">i4").view(np.uint8).reshape(-1, 4)
            flat[at[:, None] + four] = lengths
            c.scatter(flat, lo, hi, at + 4)
            at = at + 4 + c.width[lo:hi]


def _array(column: Any) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column
