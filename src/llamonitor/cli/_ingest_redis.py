"""Reading spans from a Redis stream through a consumer group.

Each worker is a consumer of the group (default ``llamonitor-ingest``,
created at the stream's first entry, so nothing published before the first
worker started is missed). It reads new entries with ``XREADGROUP``; entries
a dead or stalled worker left pending longer than ``claim_idle_seconds`` are
taken over with ``XAUTOCLAIM`` (a redelivery). ``XACK`` only after the rows
are durable in the target. A slow write keeps its entries (``XCLAIM`` by
this consumer, ``JUSTID``: the idle time restarts); a shutdown that cannot
finish gives them back (``XCLAIM ... IDLE`` past the claim time, so the next
worker's ``XAUTOCLAIM`` takes them at once). Dead letters go to the stream
``<stream>:dead`` with the error.
"""

from __future__ import annotations

import time
from typing import Any

from llamonitor.cli._ingest_source import Delivery, SourceGone
from llamonitor.export._broker_url import BrokerAddress
from llamonitor.export._redis_streams import PAYLOAD, import_redis

__all__ = ["DEAD_SUFFIX", "RedisSource"]

DEAD_SUFFIX = ":dead"
ERROR_FIELD = "llamonitor-error"
SOURCE_ID_FIELD = "llamonitor-source-id"
TIMEOUT_SECONDS = 10.0


class RedisSource:
    """A consumer of a Redis stream's consumer group."""

    def __init__(
        self, address: BrokerAddress, group: str, consumer: str, claim_idle_seconds: float
    ) -> None:
        self.redis = import_redis("--from")
        self.address = address
        self.stream = address.stream
        self.dead_stream = address.stream + DEAD_SUFFIX
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self.label = f"{address.shown}/{address.stream} (group {group})"
        self._client: Any = None
        self._cursor = "0-0"
        self._next_claim = 0.0
        self._own_pending = True  # after a restart under the same name: our PEL first

    def _connect(self) -> Any:
        if self._client is None:
            self._client = self.redis.Redis.from_url(
                self.address.url,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
            )
        return self._client

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:
                pass

    def _gone(self, exc: Exception) -> SourceGone | None:
        text = str(exc)
        if isinstance(exc, self.redis.ResponseError) and (
            text.startswith(("NOGROUP", "UNBLOCKED")) or "no such key" in text.lower()
        ):
            return SourceGone(
                f"the stream {self.stream!r} or its consumer group {self.group!r} no longer "
                f"exists on {self.address.shown} (deleted under the workers?): {exc}"
            )
        return None

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._connect(), name)(*args, **kwargs)
        except (self.redis.ConnectionError, self.redis.TimeoutError) as exc:
            await self._reset()
            raise ConnectionError(f"redis at {self.address.shown}: {exc}") from exc
        except self.redis.ResponseError as exc:
            gone = self._gone(exc)
            if gone is not None:
                raise gone from exc
            raise

    async def open(self) -> None:
        """Create the consumer group (and the stream) unless they exist."""
        try:
            await self._call("xgroup_create", self.stream, self.group, id="0", mkstream=True)
        except self.redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _deliveries(self, entries: Any, redelivered: bool) -> list[Delivery]:
        out = []
        for entry_id, fields in entries or ():
            if fields is None:
                continue  # deleted from the stream meanwhile (trimmed)
            raw = dict(fields)
            payload = raw.pop(PAYLOAD.encode(), b"")
            headers = {_text(k): _text(v) for k, v in raw.items()}
            out.append(Delivery(_text(entry_id), bytes(payload), headers, redelivered))
        return out

    async def fetch(self, max_messages: int, wait_seconds: float) -> list[Delivery]:
        now = time.monotonic()
        if self._own_pending:
            reply = await self._call(
                "xreadgroup", self.group, self.consumer, {self.stream: "0"}, count=max_messages
            )
            got = self._deliveries(reply[0][1] if reply else [], redelivered=True)
            if got:
                return got
            self._own_pending = False
        if now >= self._next_claim:
            reply = await self._call(
                "xautoclaim",
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=self._cursor,
                count=max_messages,
            )
            self._cursor = _text(reply[0])
            claimed = self._deliveries(reply[1], redelivered=True)
            if self._cursor == "0-0":
                self._next_claim = now + self.claim_idle_ms / 2000
            if claimed:
                return claimed
        reply = await self._call(
            "xreadgroup",
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=max_messages,
            block=max(1, int(wait_seconds * 1000)),
        )
        if not reply:
            return []
        return self._deliveries(reply[0][1], redelivered=False)

    def _ids(self, deliveries: list[Delivery]) -> list[str]:
        return [str(d.ref) for d in deliveries]

    async def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await self._call("xack", self.stream, self.group, *self._ids(deliveries))

    async def keep(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await self._call(
                "xclaim", self.stream, self.group, self.consumer, 0, self._ids(deliveries),
                justid=True,
            )

    async def give_back(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await self._call(
                "xclaim", self.stream, self.group, self.consumer, 0, self._ids(deliveries),
                idle=self.claim_idle_ms + 1000, justid=True,
            )

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        fields: dict[str, Any] = {
            PAYLOAD: delivery.payload,
            **delivery.headers,
            ERROR_FIELD: error,
            SOURCE_ID_FIELD: str(delivery.ref),
        }
        await self._call("xadd", self.dead_stream, fields)

    async def backlog(self) -> dict[str, int]:
        """``pending`` (delivered, not acknowledged) and ``lag`` (not yet delivered)."""
        for group in await self._call("xinfo_groups", self.stream):
            if _text(group.get("name")) == self.group:
                lag = group.get("lag")
                return {"pending": int(group.get("pending") or 0), "lag": int(lag or 0)}
        raise SourceGone(f"the consumer group {self.group!r} of {self.stream!r} no longer exists")

    async def close(self) -> None:
        await self._reset()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
