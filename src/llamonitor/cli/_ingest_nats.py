"""Reading spans from a NATS JetStream stream through a durable pull consumer.

Every worker pulls from one durable consumer (``--group``, default
``llamonitor-ingest``; explicit acks, delivering from the stream's first
message), so the workers share the messages like a queue group: each
message goes to one worker at a time. ``--claim-idle`` is the consumer's
``ack_wait``: a message a worker took and did not settle in that time (the
worker died, or hangs) is delivered again, to whichever worker pulls next.
``ack`` only after the rows are durable in the target; a slow write keeps
its messages (``in_progress``: the ack wait restarts); a shutdown that
cannot finish gives them back (``nak``: redelivered at once).

Dead letters go to the subject ``dead.<subject>`` of the stream
``<stream>_DEAD`` (both created if missing) with ``llamonitor-error`` and
the source stream sequence, then the message is terminated (``term``: never
delivered again). A message delivered more than ``max_deliver`` times
(default 20; a worker died on it each time?) is dead-lettered the same way.

``--from nats://host:4222/STREAM[/SUBJECT][?subject=…&dead_subject=…&dead_stream=…
&max_deliver=N&max_ack_pending=N]``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llamonitor.cli._ingest_source import Delivery, SourceGone
from llamonitor.export._broker_url import BrokerAddress, parse_broker_url
from llamonitor.export._nats import (
    MSG_ID,
    TIMEOUT_SECONDS,
    NatsConnection,
    import_nats,
    stream_config,
)
from llamonitor.schema.config import ConfigurationError

__all__ = ["NatsSource", "nats_address"]

logger = logging.getLogger("llamonitor.ingest")

ERROR_HEADER = "llamonitor-error"
SOURCE_SEQ_HEADER = "llamonitor-source-seq"
SOURCE_STREAM_HEADER = "llamonitor-source-stream"
DELIVERIES_HEADER = "llamonitor-deliveries"
MAX_DELIVER = 20
_QUERY = ("subject", "dead_subject", "dead_stream", "max_deliver", "max_ack_pending")


def nats_address(url: str, setting: str = "--from") -> BrokerAddress:
    """The address of a ``nats://`` source URL (``?subject=`` wins over the path)."""
    first = parse_broker_url(url, setting)
    query = first.query or {}
    unknown = sorted(set(query) - set(_QUERY))
    if unknown:
        raise ConfigurationError(
            setting, f"unknown NATS parameter(s) {', '.join(unknown)}; known: {', '.join(_QUERY)}"
        )
    return parse_broker_url(url, setting, subject=query.get("subject") or None)


def _header_text(value: str) -> str:
    """A header value NATS can carry (no line breaks)."""
    return " ".join(value.splitlines())


def _int(query: dict[str, str], key: str, default: int) -> int:
    try:
        return int(query.get(key, default))
    except ValueError:
        raise ConfigurationError("--from", f"{key}={query[key]!r} is not a number") from None


class NatsSource:
    """One worker's pull subscription on the workers' durable consumer."""

    def __init__(
        self, address: BrokerAddress, group: str, consumer: str, claim_idle_seconds: float
    ) -> None:
        self.nats = import_nats("--from")
        self.address = address
        self.stream = address.stream
        self.subject = address.subject
        query = address.query or {}
        self.dead_stream = query.get("dead_stream") or f"{address.stream}_DEAD"
        self.dead_subject = query.get("dead_subject") or f"dead.{address.subject}"
        parse_broker_url(  # the same name rules as the source's
            f"{address.url}/{self.dead_stream}/{self.dead_subject}", "--from"
        )
        self.max_deliver = _int(query, "max_deliver", MAX_DELIVER)
        self.max_ack_pending = _int(query, "max_ack_pending", 0) or None
        if any(c in group for c in ".*> \t"):
            raise ConfigurationError(
                "--group", f"{group!r} cannot name a JetStream consumer (no '.', '*', '>', spaces)"
            )
        self.group = group
        self.consumer = consumer  # this worker's name (for logs; the consumer is shared)
        self.ack_wait = max(0.1, claim_idle_seconds)
        self.label = f"{address.shown}/{address.stream} (consumer {group})"
        self._conn = NatsConnection(address, TIMEOUT_SECONDS)
        self._sub: Any = None
        self.dead_at_fetch = 0

    # -- connection -----------------------------------------------------------

    async def _js(self) -> Any:
        if not self._conn.up:
            self._sub = None
        return await self._conn.connect()

    async def _ensure_stream(self, js: Any, name: str, subject: str) -> None:
        errors = self.nats.js.errors
        try:
            await self._conn.call(js.stream_info(name))
            return
        except errors.NotFoundError:
            pass
        try:
            await self._conn.call(js.add_stream(stream_config(self.nats, name, subject)))
        except errors.BadRequestError as exc:
            if "already in use" not in str(exc):  # another worker created it meanwhile
                raise ConfigurationError(
                    "--from", f"cannot create the JetStream stream {name!r}: {exc}"
                ) from exc

    async def open(self) -> None:
        """Create the stream, the dead-letter stream and the durable consumer
        unless they exist."""
        js = await self._js()
        await self._ensure_stream(js, self.stream, self.subject)
        await self._ensure_stream(js, self.dead_stream, self.dead_subject)
        api = self.nats.js.api
        config = api.ConsumerConfig(
            durable_name=self.group,
            name=self.group,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            filter_subject=self.subject,
            max_ack_pending=self.max_ack_pending,
        )
        try:
            # Creates the consumer, or updates the ack wait of an existing one.
            await self._conn.call(js.add_consumer(self.stream, config))
        except self.nats.js.errors.APIError as exc:
            if not await self._consumer_exists(js):
                raise ConfigurationError(
                    "--group", f"cannot create the JetStream consumer {self.group!r}: {exc}"
                ) from exc
            logger.warning("llamonitor ingest: using the existing consumer %r as it is: %s",
                           self.group, exc)

    async def _consumer_exists(self, js: Any) -> bool:
        try:
            await self._conn.call(js.consumer_info(self.stream, self.group))
        except self.nats.js.errors.NotFoundError:
            return False
        return True

    async def _subscription(self) -> Any:
        js = await self._js()
        if self._sub is None:
            self._sub = await self._conn.call(
                js.pull_subscribe_bind(durable=self.group, stream=self.stream)
            )
        return self._sub

    # -- the Source interface -------------------------------------------------

    async def fetch(self, max_messages: int, wait_seconds: float) -> list[Delivery]:
        sub = await self._subscription()
        try:
            msgs = await self._conn.call(
                sub.fetch(max_messages, timeout=max(0.05, wait_seconds)),
                passthrough=(asyncio.TimeoutError,),
            )
        except asyncio.TimeoutError:
            return []  # nothing came (a lost connection is told apart by call())
        except self.nats.js.errors.APIError as exc:
            await self.backlog()  # SourceGone if the stream or the consumer is gone
            raise ConnectionError(f"nats at {self.address.shown}: fetch: {exc}") from exc
        out = []
        for msg in msgs:
            delivered = msg.metadata.num_delivered
            d = Delivery(msg, bytes(msg.data), dict(msg.headers or {}), delivered > 1)
            if self.max_deliver and delivered > self.max_deliver:
                await self.dead_letter(
                    d, f"delivered {delivered} times without being acknowledged "
                    f"(max_deliver={self.max_deliver}): a worker failed on it each time?",
                )
                self.dead_at_fetch += 1
                continue
            out.append(d)
        return out

    async def _each(self, deliveries: list[Delivery], action: str) -> None:
        """``msg.<action>()`` for each delivery not settled yet, then a flush
        (the server has them all)."""
        errors = self.nats.errors
        try:
            for d in deliveries:
                if action != "in_progress" and d.ref.is_acked:
                    continue  # terminated by dead_letter
                await getattr(d.ref, action)()
        except (errors.ConnectionClosedError, errors.Error) as exc:
            raise ConnectionError(f"nats at {self.address.shown}: {action}: {exc}") from exc
        client = self._conn.client
        if client is not None:
            await self._conn.call(client.flush(TIMEOUT_SECONDS))

    async def ack(self, deliveries: list[Delivery]) -> None:
        await self._each(deliveries, "ack")

    async def keep(self, deliveries: list[Delivery]) -> None:
        await self._each(deliveries, "in_progress")

    async def give_back(self, deliveries: list[Delivery]) -> None:
        await self._each(deliveries, "nak")

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Publish the message to the dead-letter subject with ``error``
        (confirmed by its PubAck), then ``term`` the original."""
        msg = delivery.ref
        seq = msg.metadata.sequence.stream
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("Nats-")}
        headers.update({
            ERROR_HEADER: _header_text(error),
            SOURCE_STREAM_HEADER: self.stream,
            SOURCE_SEQ_HEADER: str(seq),
            DELIVERIES_HEADER: str(msg.metadata.num_delivered),
            MSG_ID: f"dead-{self.stream}-{seq}",  # dead-lettered twice: stored once
        })
        js = await self._js()
        await self._conn.call(js.publish(
            self.dead_subject, delivery.payload, timeout=TIMEOUT_SECONDS,
            stream=self.dead_stream, headers=headers,
        ))
        await self._each([delivery], "term")

    async def backlog(self) -> dict[str, int]:
        """``pending`` (delivered, not acknowledged) and ``lag`` (not yet delivered)."""
        js = await self._js()
        try:
            info = await self._conn.call(js.consumer_info(self.stream, self.group))
        except self.nats.js.errors.NotFoundError as exc:
            raise SourceGone(
                f"the JetStream stream {self.stream!r} or its consumer {self.group!r} no longer "
                f"exists on {self.address.shown} (deleted under the workers?): {exc}"
            ) from exc
        return {"pending": int(info.num_ack_pending or 0), "lag": int(info.num_pending or 0)}

    async def close(self) -> None:
        self._sub = None
        await self._conn.drop()
