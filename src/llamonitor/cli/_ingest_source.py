"""What an ingest worker reads from: a broker source (Redis Streams, NATS JetStream).

A source hands out :class:`Delivery` objects and settles them: ``ack`` once
their rows are durable in the target, ``keep`` while a slow write is still
retrying (so no other worker takes them meanwhile), ``give_back`` at a
shutdown that could not finish (another worker takes them at once), and
``dead_letter`` for a message that cannot be ingested (kept with its error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Delivery", "Source", "SourceGone", "open_source"]


class SourceGone(RuntimeError):
    """The stream (or its consumer group / durable consumer) no longer exists."""


@dataclass
class Delivery:
    """One broker message in a worker's hands."""

    ref: Any  # the Redis entry id, or the NATS message
    payload: bytes
    headers: dict[str, str]
    redelivered: bool = False


class Source(Protocol):
    label: str

    async def open(self) -> None: ...

    async def fetch(self, max_messages: int, wait_seconds: float) -> list[Delivery]: ...

    async def ack(self, deliveries: list[Delivery]) -> None: ...

    async def keep(self, deliveries: list[Delivery]) -> None: ...

    async def give_back(self, deliveries: list[Delivery]) -> None: ...

    async def dead_letter(self, delivery: Delivery, error: str) -> None: ...

    async def backlog(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


def open_source(url: str, group: str, consumer: str, claim_idle_seconds: float) -> Source:
    """The source of a ``--from`` URL (``redis://…/STREAM`` or ``nats://…/STREAM``).

    Raises:
        ConfigurationError: an unsupported scheme, or the extra is missing.
    """
    from llamonitor.export._broker_url import parse_broker_url

    address = parse_broker_url(url, "--from")
    if address.kind == "nats":
        from llamonitor.cli._ingest_nats import NatsSource, nats_address

        return NatsSource(nats_address(url), group, consumer, claim_idle_seconds)
    from llamonitor.cli._ingest_redis import RedisSource

    return RedisSource(address, group, consumer, claim_idle_seconds)
