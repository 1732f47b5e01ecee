"""How a batch of spans travels through a broker: one message per chunk.

A message is a compact Arrow IPC stream of the chunk (its buffers compressed
with lz4 by default: :data:`COMPRESSIONS`) and a few text fields beside it
(Redis stream fields, NATS headers):

- ``llamonitor-format``: ``arrow-ipc`` (so a consumer can tell our messages);
- ``llamonitor-schema-version``: the producer's ``SCHEMA_VERSION``; a
  consumer refuses (dead-letters) a version newer than its own;
- ``llamonitor-rows``, ``llamonitor-first-event-id``, ``llamonitor-last-event-id``:
  what the message holds, for a person looking at the stream;
- ``llamonitor-batch-id``: a digest of the chunk's event ids (the same chunk
  published twice has the same id: JetStream drops the repeat within its
  duplicate window, and a consumer can tell);
- ``llamonitor-checksum``: ``crc32:<hex>`` of the payload; a truncated or
  altered payload fails it.

:func:`decode` raises :class:`PoisonMessage` (with the reason) for anything
that is not such a message; the ingest workers dead-letter it.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA_VERSION

__all__ = [
    "BATCH_ID",
    "CHECKSUM",
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "FORMAT",
    "FORMAT_NAME",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ROWS",
    "PoisonMessage",
    "ROWS",
    "SCHEMA_VERSION_FIELD",
    "BrokerMessage",
    "decode",
    "encode",
    "compression_option",
    "encode_table",
    "ids_digest",
]

FORMAT = "llamonitor-format"
FORMAT_NAME = "arrow-ipc"
SCHEMA_VERSION_FIELD = "llamonitor-schema-version"
ROWS = "llamonitor-rows"
FIRST_ID = "llamonitor-first-event-id"
LAST_ID = "llamonitor-last-event-id"
BATCH_ID = "llamonitor-batch-id"
CHECKSUM = "llamonitor-checksum"

MAX_MESSAGE_ROWS = 5_000
"""Rows in one message at most (a batch is split into messages of this many)."""

MAX_MESSAGE_BYTES = 768 * 1024
"""A message whose payload is larger than this is split in two (NATS refuses
a message over its ``max_payload``, 1 MiB by default)."""

COMPRESSIONS = ("lz4", "zstd", "none")
"""How a message's Arrow buffers may be compressed (``options={"compression": …}``
of the broker sinks). The IPC stream says which, so any worker reads any.
Measured on the benchmark's spans (1 KB answers, 500-span messages, CPU per
span): lz4 ~170 bytes, 1.0 µs to encode, 0.3 µs to decode; zstd ~95 bytes,
4.3 µs and 3.1 µs; none ~460 bytes, 0.2 µs and 0.1 µs."""

DEFAULT_COMPRESSION = "lz4"
"""lz4: zstd's payloads are ~45% smaller, at ~6 µs more CPU per span
(producer and worker together) -- a sixth of the whole path's."""

_WRITE_OPTIONS = {
    name: pa.ipc.IpcWriteOptions(compression=None if name == "none" else name)
    for name in COMPRESSIONS
}
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)
"""Decoded on the worker's thread: Arrow's thread pool costs more CPU than it
saves on messages of a few thousand rows."""


class PoisonMessage(ValueError):
    """A message that cannot be turned back into spans (the reason is the text)."""


@dataclass(frozen=True)
class BrokerMessage:
    """One encoded chunk: ``payload`` (Arrow IPC) and its ``headers``."""

    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    rows: int = 0

    @property
    def batch_id(self) -> str:
        return self.headers.get(BATCH_ID, "")


def ids_digest(ids: pa.ChunkedArray | pa.Array) -> str:
    h = hashlib.blake2b(digest_size=16)
    for chunk in ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]:
        buffers = chunk.buffers()
        for buf in buffers[1:]:
            if buf is not None:
                h.update(memoryview(buf))
    return h.hexdigest()


def encode(table: pa.Table, compression: str = DEFAULT_COMPRESSION) -> BrokerMessage:
    """One message holding all of ``table`` (buffers compressed with ``compression``)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS[compression]) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    headers = {
        FORMAT: FORMAT_NAME,
        SCHEMA_VERSION_FIELD: str(SCHEMA_VERSION),
        ROWS: str(table.num_rows),
        CHECKSUM: f"crc32:{zlib.crc32(payload):08x}",
    }
    if "event_id" in table.column_names and table.num_rows:
        ids = table.column("event_id").combine_chunks()
        headers[FIRST_ID] = str(ids[0].as_py())
        headers[LAST_ID] = str(ids[-1].as_py())
        headers[BATCH_ID] = ids_digest(ids)
    return BrokerMessage(payload, headers, table.num_rows)


def encode_table(
    table: pa.Table,
    max_rows: int = MAX_MESSAGE_ROWS,
    max_bytes: int = MAX_MESSAGE_BYTES,
    compression: str = DEFAULT_COMPRESSION,
) -> Iterator[BrokerMessage]:
    """``table`` as messages of at most ``max_rows`` rows and (unless one row
    alone is larger) ``max_bytes`` of payload."""
    for start in range(0, table.num_rows, max_rows):
        yield from _fit(table.slice(start, max_rows), max_bytes, compression)


def _fit(chunk: pa.Table, max_bytes: int, compression: str) -> Iterator[BrokerMessage]:
    message = encode(chunk, compression)
    if len(message.payload) <= max_bytes or chunk.num_rows <= 1:
        yield message
        return
    half = chunk.num_rows // 2
    yield from _fit(chunk.slice(0, half), max_bytes, compression)
    yield from _fit(chunk.slice(half), max_bytes, compression)


def compression_option(options: dict[str, object]) -> str:
    """Pop ``compression`` from a broker sink's ``options`` (default lz4).

    Raises:
        ConfigurationError: not one of :data:`COMPRESSIONS`.
    """
    from llamonitor.schema.config import ConfigurationError

    value = str(options.pop("compression", DEFAULT_COMPRESSION)).lower()
    if value not in COMPRESSIONS:
        raise ConfigurationError(
            "storage.options",
            f"compression={value!r}: use one of {', '.join(COMPRESSIONS)}",
        )
    return value


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def decode(payload: bytes, headers: Mapping[str, object]) -> pa.Table:
    """The spans of one message.

    Raises:
        PoisonMessage: not a llamonitor message, a schema version newer than
            this llamonitor's, a checksum that does not match (a truncated or
            altered payload), or a payload that is not an Arrow table.
    """
    fields = {_text(k): _text(v) for k, v in headers.items()}
    if fields.get(FORMAT) != FORMAT_NAME:
        raise PoisonMessage(
            f"not a llamonitor message ({FORMAT}={fields.get(FORMAT)!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version_text = fields.get(SCHEMA_VERSION_FIELD, "")
    try:
        version = int(version_text)
    except ValueError:
        raise PoisonMessage(f"{SCHEMA_VERSION_FIELD}={version_text!r} is not a number") from None
    if version > SCHEMA_VERSION:
        raise PoisonMessage(
            f"schema version {version} is newer than this llamonitor's ({SCHEMA_VERSION}): "
            "upgrade the ingest workers, then replay the dead letters"
        )
    expected = fields.get(CHECKSUM, "")
    actual = f"crc32:{zlib.crc32(payload):08x}"
    if expected != actual:
        raise PoisonMessage(
            f"checksum mismatch ({CHECKSUM}={expected!r}, payload of {len(payload)} bytes "
            f"has {actual}): a truncated or altered message"
        )
    try:
        table = pa.ipc.open_stream(pa.py_buffer(payload), options=_READ_OPTIONS).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PoisonMessage(f"the payload is not an Arrow IPC stream: {exc}") from exc
    rows = fields.get(ROWS)
    if rows is not None and rows != str(table.num_rows):
        raise PoisonMessage(f"{ROWS}={rows} but the payload holds {table.num_rows} rows")
    if "event_id" not in table.column_names:
        raise PoisonMessage("the payload has no event_id column")
    return table
