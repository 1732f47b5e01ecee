"""The broker transport extension point: ``Transport.put`` / ``put_batch``.

A transport is a sink backend (``StorageConfig(backend=MyTransport(...))``):
the transport's sink thread hands it every batch, with the same isolation,
retries and spool as a database. The base class encodes each batch as
broker messages (:mod:`._broker_codec`: Arrow IPC with the schema version,
event ids and a checksum) and calls :meth:`Transport.put_batch`; a subclass
only says how one message is published and confirmed::

    class KafkaTransport(Transport):
        async def start(self): ...          # connect
        async def put(self, message): ...   # publish, wait for the broker's ack
        async def close(self): ...

A ``put`` that returns counts as delivered, so it must return only once the
broker confirmed the message; one that raises is retried, then spooled (raise
``ConnectionError`` or ``TimeoutError``, or set ``exc.llamonitor_transient =
True``, for "broker unreachable": the sink then goes to outage mode at once).
"""

from __future__ import annotations

import inspect
from typing import Any

import pyarrow as pa

from llamonitor.export._broker_codec import DEFAULT_COMPRESSION, BrokerMessage, encode_table
from llamonitor.schema._extensions import conform

__all__ = ["BrokerUnavailable", "Transport"]


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached now (the sink retries, then spools)."""


class Transport:
    """A broker transport: subclass it and define :meth:`put` (and usually
    :meth:`start` and :meth:`close`). Methods may be ``async`` or plain.

    Args:
        max_message_rows: spans in one message at most.
        compression: ``lz4`` (the default), ``zstd`` (~45% smaller payloads,
            ~6 µs more CPU per span) or ``none``.
    """

    max_message_rows: int = 5_000
    compression: str = DEFAULT_COMPRESSION
    """How the messages' Arrow buffers are compressed: ``lz4``, ``zstd`` or ``none``."""

    async def start(self) -> None:
        """Connect to the broker (called once, on the sink's thread)."""

    async def put(self, message: BrokerMessage) -> None:
        """Publish one message and return once the broker confirmed it."""
        raise NotImplementedError(f"{type(self).__name__} does not define put()")

    async def put_batch(self, messages: list[BrokerMessage]) -> None:
        """Publish several messages (default: :meth:`put` each, in order); a
        broker with pipelining or async acks can override it."""
        for message in messages:
            done = self.put(message)
            if inspect.isawaitable(done):
                await done

    async def close(self) -> None:
        """Release the connection."""

    # -- the sink backend interface (used by the transport) ----------------

    async def initialize(self) -> None:
        done: Any = self.start()
        if inspect.isawaitable(done):
            await done

    async def write_table(self, table: pa.Table) -> None:
        messages = list(
            encode_table(conform(table), self.max_message_rows, compression=self.compression)
        )
        done: Any = self.put_batch(messages)
        if inspect.isawaitable(done):
            await done
