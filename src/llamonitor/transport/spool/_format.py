"""The spool's record layout: one record of a segment, encoded and read back.

Record layout (little-endian)::

    0   4  magic b"LMSP"
    4   1  format version (1)
    5   1  kind (1 batch, 2 rejected)
    6   1  state (0 pending, 1 done): rewritten in place, not checksummed
    7   1  reserved (0)
    8   4  rows
    12  4  payload length
    16  8  time spooled, UTC nanoseconds
    24  4  CRC32 of bytes 0-23 (state taken as 0) and of the payload
    28  -  payload: an Arrow IPC stream of the rows (``SCHEMA``); for rejected
           rows the errors are a JSON list in the schema metadata
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from llamonitor.schema import _extensions

MAGIC = b"LMSP"
VERSION = 1
BATCH = 1
REJECTED = 2
KIND_NAMES = {BATCH: "batch", REJECTED: "rejected"}
PENDING = 0
DONE = 1
HEADER = struct.Struct("<4sBBBBIIQI")
HEADER_SIZE = HEADER.size  # 28
STATE_OFFSET = 6
ERRORS_KEY = b"llamonitor.spool.errors"


# -- encoding -----------------------------------------------------------------


def _ipc_options() -> Any:
    codec = "zstd" if pa.Codec.is_available("zstd") else None
    return pa.ipc.IpcWriteOptions(compression=codec)


def encode(table: pa.Table, kind: int, errors: list[str] | None = None) -> bytes:
    """One record (header and payload) holding ``table``."""
    if errors is not None:
        meta = dict(table.schema.metadata or {})
        meta[ERRORS_KEY] = json.dumps(errors).encode()
        table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_ipc_options()) as ipc:
        ipc.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    head = HEADER.pack(MAGIC, VERSION, kind, PENDING, 0, table.num_rows, len(payload),
                       time.time_ns(), 0)
    crc = zlib.crc32(payload, zlib.crc32(head[:24]))
    return head[:24] + struct.pack("<I", crc) + payload


def conform(table: pa.Table) -> pa.Table:
    """``table`` in the current ``SCHEMA``: a record spooled by an older version
    gets the new columns as nulls (and ``error`` FALSE as NULL); its metric
    groups' columns are kept (see ``llamonitor.schema._extensions.conform``)."""
    return _extensions.conform(table)


def decode(payload: bytes) -> tuple[pa.Table, list[str] | None]:
    """The rows of a record's payload and, for rejected rows, their errors."""
    table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    meta = table.schema.metadata or {}
    errors = json.loads(meta[ERRORS_KEY]) if ERRORS_KEY in meta else None
    return conform(table), errors


@dataclass
class Record:
    """One spooled record, as a replayer sees it."""

    kind: int
    rows: int
    spooled_at_ns: int
    table: pa.Table
    errors: list[str] | None
    segment: Path
    offset: int
    mine: bool = False  # appended by this ``Spool`` object (this process)

    @property
    def key(self) -> tuple[str, int]:
        return (self.segment.name, self.offset)


def parse(mm: Any, offset: int) -> tuple[int, int, int, int, int] | None:
    """The header at ``offset`` if it and its payload are intact:
    ``(kind, state, rows, length, spooled_at_ns)``."""
    end = len(mm)
    if offset + HEADER_SIZE > end:
        return None
    magic, version, kind, state, _, rows, length, at, crc = HEADER.unpack_from(mm, offset)
    if magic != MAGIC or version != VERSION or kind not in KIND_NAMES:
        return None
    if offset + HEADER_SIZE + length > end:
        return None
    head = bytearray(mm[offset : offset + 24])
    head[STATE_OFFSET] = 0
    body = mm[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
    if zlib.crc32(body, zlib.crc32(bytes(head))) != crc:
        return None
    return kind, state, rows, length, at


def walk(mm: Any) -> Iterator[tuple[int, tuple[int, int, int, int, int] | None]]:
    """``(offset, header)`` of each record; ``(offset, None)`` for a corrupt
    stretch (reading resumes at the next intact record, if any)."""
    offset, end = 0, len(mm)
    while offset < end:
        hdr = parse(mm, offset)
        if hdr is not None:
            yield offset, hdr
            offset += HEADER_SIZE + hdr[3]
            continue
        yield offset, None
        nxt = offset
        while True:
            nxt = mm.find(MAGIC, nxt + 1)
            if nxt < 0 or parse(mm, nxt) is not None:
                break
        if nxt < 0:
            return
        offset = nxt
