"""The ingest worker: broker messages in, rows durable in a store, then ack.

One loop per worker: fetch up to ``batch_messages`` messages (new ones, or
ones a dead worker left pending), decode them (a message that cannot be
decoded, or holds a schema version from the future, goes to the dead-letter
stream with the error and is acknowledged), write their spans to the target
in one write, and acknowledge them only once that write returned (the rows
are committed). A failed write is retried with backoff for as long as it
takes, keeping the messages (so no other worker takes them meanwhile): the
backlog waits in the broker while the target is down. A failure about the
content instead (the target refuses the rows; a ``ValueError``/``TypeError``;
a ``StoreError`` not marked transient; an ``OSError`` such as a file name too
long), which no retry can cure, splits the batch to find the message(s) that
fail alone: those are dead-lettered with the error, the rest are written. A
message that could not be dead-lettered (the broker went away at shutdown) is
given back, never acknowledged. Redelivery never
duplicates a row: spans are deduplicated by ``event_id`` within a write, and
the SQL stores skip rows whose ``event_id`` is already there (primary key).

The next batch is read and decoded while the one in hand is written
(``pipeline``, on by default; not after a batch of redeliveries, since a
source replaying its own pending messages would hand the same ones out
again): the broker round trip and the decoding overlap the database's work
instead of adding to it. The batch read ahead is kept with the one in hand
(``keep``), and given back at shutdown, never acknowledged unwritten.

The target lives on a writer thread of its own, with its own event loop
(:class:`TargetThread`): its ``initialize``, ``write_table`` and ``close``
run there, so a store whose writes block (Parquet, SQLite; the CPU of
PostgreSQL's COPY encoding) never stalls the worker's loop, and the broker
calls (fetch, ``keep`` heartbeats, acks, give-backs) go on meanwhile.

A Parquet target is written one file per message, named by the message's
batch id (a digest of its event ids: 32 hex digits; any other header value is
ignored and the digest recomputed), and a file that is already there is not
written again: a redelivered message (and the same chunk published twice)
lands once. That holds only while that per-message file exists: once
``llamonitor compact`` has merged it into another file, the same message
arriving again (a producer's spool replayed hours later, a stream position
reset) writes its rows a second time. A broker redelivery comes within
``--claim-idle`` seconds, normally long before a compaction.

Shutdown (``stop``, SIGTERM in the command): the batch in hand is finished
if it can be within ``shutdown_grace_seconds``, else given back to the
broker (another worker takes it at once); nothing is acknowledged that was
not written.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from llamonitor.cli._ingest_errors import Refused, about_content
from llamonitor.cli._ingest_rows import dedupe, keyed, spans
from llamonitor.cli._ingest_source import Delivery, Source, SourceGone
from llamonitor.cli._ingest_target import CLOSE_TIMEOUT_SECONDS, TargetThread
from llamonitor.export._broker_codec import PoisonMessage
from llamonitor.schema._rejected import RowsRejected

__all__ = ["IngestStats", "IngestWorker", "TargetThread"]

logger = logging.getLogger("llamonitor.ingest")

BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
BACKLOG_EVERY_SECONDS = 2.0
"""How often the worker asks the broker for its backlog (lag, pending)."""
ABANDONED_CLOSE_SECONDS = 1.0
"""How long the worker waits for the target to close after a write was
abandoned at shutdown (it may hold the writer thread); else
:data:`~llamonitor.cli._ingest_target.CLOSE_TIMEOUT_SECONDS`."""


@dataclass
class IngestStats:
    """What a worker did (its ``/metrics`` and ``health()``)."""

    messages: int = 0
    spans: int = 0
    batches: int = 0
    redeliveries: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    write_errors: int = 0
    source_errors: int = 0
    lag: int = 0
    pending: int = 0
    in_flight: int = 0
    healthy: bool = True
    last_error: str | None = None
    started: float = field(default_factory=time.time)


class IngestWorker:
    """Moves spans from ``source`` into ``target`` (a storage backend)."""

    def __init__(
        self,
        source: Source,
        target: Any,
        *,
        batch_messages: int = 64,
        wait_seconds: float = 1.0,
        keep_every_seconds: float = 10.0,
        shutdown_grace_seconds: float = 10.0,
        idle_exit_seconds: float | None = None,
        pipeline: bool = True,
    ) -> None:
        self.source = source
        self.target = target
        self.batch_messages = batch_messages
        self.wait_seconds = wait_seconds
        self.keep_every_seconds = keep_every_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.idle_exit_seconds = idle_exit_seconds
        self.pipeline = pipeline
        self.stats = IngestStats()
        self.stop = asyncio.Event()
        self._logged: set[str] = set()
        self._next_backlog = 0.0
        self._writer: TargetThread | None = None
        self._abandoned = False  # a write left running at shutdown
        self._keyed = callable(getattr(target, "write_tables_once", None))
        self._held: list[Delivery] = []  # fetched ahead, waiting for the write in hand

    def health(self) -> dict[str, Any]:
        s = self.stats
        up = max(1e-9, time.time() - s.started)
        return {
            "healthy": s.healthy,
            "source": self.source.label,
            "target": repr(self.target),
            "messages": s.messages,
            "spans": s.spans,
            "spans_per_second": s.spans / up,
            "redeliveries": s.redeliveries,
            "dead_letters": s.dead_letters,
            "duplicates": s.duplicates,
            "write_errors": s.write_errors,
            "source_errors": s.source_errors,
            "lag": s.lag,
            "pending": s.pending,
            "in_flight": s.in_flight,
            "last_error": s.last_error,
        }

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        level = logging.DEBUG if kind in self._logged else logging.WARNING
        self._logged.add(kind)
        logger.log(level, message, *args)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        """Ingest until :attr:`stop` is set (or the source stays empty for
        ``idle_exit_seconds``).

        Raises:
            SourceGone: the stream or the consumer group was deleted.
        """
        self._writer = writer = TargetThread(self.target)
        try:
            await writer.run("initialize")
        except BaseException:
            await asyncio.to_thread(writer.stop)
            raise
        ahead: asyncio.Future[Any] | None = None
        try:
            await self._with_source_retry(self.source.open)
            idle_since = time.monotonic()
            while not self.stop.is_set():
                if ahead is not None:
                    fetched, ahead = await ahead, None
                    self._held = []
                else:
                    fetched = await self._fetch()
                if fetched is None:
                    break
                deliveries, decoded = fetched
                await self._refresh_backlog()
                if not deliveries:
                    if (
                        self.idle_exit_seconds is not None
                        and time.monotonic() - idle_since >= self.idle_exit_seconds
                        and self.stats.lag == 0
                    ):
                        break
                    continue
                idle_since = time.monotonic()
                if self.pipeline and not any(d.redelivered for d in deliveries):
                    # The next batch is read and decoded while this one is
                    # written. Not after redeliveries: a source replaying its
                    # own pending messages would hand out this batch again.
                    ahead = asyncio.ensure_future(self._fetch_ahead())
                await self._handle(deliveries, decoded)
        finally:
            try:
                await self._give_back_ahead(ahead)
            except SourceGone:
                pass  # the stream is gone: nothing to give back to
            try:
                await self.source.close()
            except Exception as exc:
                logger.warning("llamonitor ingest: closing %s failed: %s", self.source.label, exc)
            finally:
                await self._close_target(writer)

    async def _close_target(self, writer: TargetThread) -> None:
        """Close the target on its thread. A write abandoned at shutdown (past
        the grace) may still hold that thread: then the worker does not wait
        for it (the thread is a daemon; its batch was given back, and the
        write, if it completes, is absorbed by the target's idempotence)."""
        timeout = ABANDONED_CLOSE_SECONDS if self._abandoned else CLOSE_TIMEOUT_SECONDS
        try:
            await asyncio.wait_for(writer.run("close"), timeout)
        except asyncio.TimeoutError:
            logger.warning("llamonitor ingest: %r did not close within %.0f s (a write still "
                           "running); exiting without it", self.target, timeout)
            writer.stop(timeout=0)
            return
        except Exception as exc:  # never hides why the worker stopped (SourceGone: exit 3)
            logger.warning("llamonitor ingest: closing %r failed: %s", self.target, exc)
        await asyncio.to_thread(writer.stop)

    async def _fetch(self) -> tuple[list[Delivery], Any] | None:
        """The next deliveries and their decoded spans (None if stopped meanwhile)."""
        deliveries = await self._with_source_retry(
            self.source.fetch, self.batch_messages, self.wait_seconds
        )
        if deliveries is None:
            return None
        return deliveries, self._decode(deliveries)

    async def _fetch_ahead(self) -> tuple[list[Delivery], Any] | None:
        """:meth:`_fetch` while the write in hand goes on: what it got is
        :attr:`_held` (kept from other workers with the batch in hand)."""
        fetched = await self._fetch()
        if fetched is not None:
            self._held = fetched[0]
        return fetched

    async def _give_back_ahead(self, ahead: asyncio.Future[Any] | None) -> None:
        """At the end of :meth:`run`: let a read ahead finish (a broker call is
        never cut in the middle: what it took would stay pending until
        ``--claim-idle``) and give back what it got."""
        self._held = []
        if ahead is None:
            return
        try:
            fetched = await ahead
        except SourceGone:
            raise
        except Exception:
            return
        if fetched:
            await self._settle(self.source.give_back, fetched[0])

    async def _with_source_retry(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, retried while the broker is unreachable (None if
        stopped meanwhile)."""
        delay = BACKOFF_SECONDS
        while True:
            try:
                result = await fn(*args)
                if not self.stats.healthy and self.stats.write_errors == 0:
                    self.stats.healthy = True
                return result
            except SourceGone:
                self.stats.healthy = False
                raise
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.stats.source_errors += 1
                self.stats.healthy = False
                self.stats.last_error = f"broker: {exc}"
                self._warn("source", "llamonitor ingest: %s unreachable (retrying): %s",
                           self.source.label, exc)
                if self.stop.is_set():
                    return None
                try:
                    await asyncio.wait_for(self.stop.wait(), delay * (0.5 + random.random() / 2))
                except asyncio.TimeoutError:
                    pass
                delay = min(MAX_BACKOFF_SECONDS, delay * 2)

    async def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now < self._next_backlog:
            return
        self._next_backlog = now + BACKLOG_EVERY_SECONDS
        try:
            backlog = await self.source.backlog()
        except SourceGone:
            raise
        except Exception:
            return  # the next fetch reports a broker that went away
        self.stats.lag = backlog.get("lag", 0)
        self.stats.pending = backlog.get("pending", 0)

    def _decode(
        self, deliveries: list[Delivery]
    ) -> tuple[list[tuple[Delivery, pa.Table]], list[tuple[Delivery, str]]]:
        """The spans of each delivery, and the poison ones with their error."""
        good: list[tuple[Delivery, pa.Table]] = []
        poison: list[tuple[Delivery, str]] = []
        for d in deliveries:
            try:
                good.append((d, spans(d)))
            except PoisonMessage as exc:
                poison.append((d, str(exc)))
        return good, poison

    async def _handle(
        self,
        deliveries: list[Delivery],
        decoded: tuple[list[tuple[Delivery, pa.Table]], list[tuple[Delivery, str]]],
    ) -> None:
        good, poison = decoded
        self.stats.redeliveries += sum(1 for d in deliveries if d.redelivered)
        self.stats.in_flight = len(deliveries)
        try:
            # A poison message not dead-lettered (the broker went away while
            # stopping) is given back, never acknowledged.
            kept = [d for d, error in poison if not await self._dead_letter(d, error)]
            kept_ids = {id(d) for d in kept}
            dead = [d for d, _ in poison if id(d) not in kept_ids]
            if good and not await self._write_all(good):
                # Shutting down and the write could not finish: the broker
                # gives these to another worker (nothing acknowledged).
                await self._settle(self.source.give_back, [d for d, _ in good] + kept)
                await self._settle(self.source.ack, dead)
                return
            await self._settle(self.source.give_back, kept)
            await self._settle(self.source.ack, [d for d in deliveries if id(d) not in kept_ids])
        finally:
            self.stats.in_flight = 0

    async def _dead_letter(self, d: Delivery, error: str) -> bool:
        """Publish ``d`` to the dead letters with ``error``; False if it was not
        (stopped while the broker was unreachable): then it must not be acked."""
        published = await self._with_source_retry(self._publish_dead, d, error)
        if not published:
            logger.warning("llamonitor ingest: could not dead-letter message %s (giving it "
                           "back): %s", d.ref, error)
            return False
        logger.warning("llamonitor ingest: dead-lettered message %s: %s", d.ref, error)
        self.stats.dead_letters += 1
        return True

    async def _publish_dead(self, d: Delivery, error: str) -> bool:
        await self.source.dead_letter(d, error)
        return True

    async def _settle(self, fn: Any, deliveries: list[Delivery]) -> None:
        """Ack (or give back) ``deliveries``; a broker that went away meanwhile
        redelivers them later, which the idempotent write absorbs."""
        if not deliveries:
            return
        try:
            await fn(deliveries)
        except SourceGone:
            raise
        except Exception as exc:
            self.stats.source_errors += 1
            self._warn("settle", "llamonitor ingest: could not settle %d messages: %s",
                       len(deliveries), exc)

    async def _write_all(self, good: list[tuple[Delivery, pa.Table]]) -> bool:
        """Write the spans of ``good``; False if stopped before it could."""
        if self._keyed:  # one file per message, named by its batch id
            named = [keyed(d, t) for d, t in good]
            rows = sum(t.num_rows for _, t in named)
            self.stats.duplicates += sum(t.num_rows for _, t in good) - rows
            call: tuple[Any, ...] = ("write_tables_once", named)
        else:
            try:
                table = pa.concat_tables([t for _, t in good], promote_options="default")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                # Messages of incompatible schemas: one write each.
                for item in good:
                    if not await self._write_all([item]):
                        return False
                return True
            table, dropped = dedupe(table)
            self.stats.duplicates += dropped
            rows = table.num_rows
            call = ("write_table", table)
        try:
            done, result = await self._write(call, [d for d, _ in good])
        except (RowsRejected, Refused) as exc:
            if len(good) == 1:
                why = exc.__cause__ if isinstance(exc, Refused) else exc
                return await self._dead_letter(
                    good[0][0], f"the target refused the rows: {type(why).__name__}: {why}"
                )
            for item in good:  # find the message(s) the target refuses
                if not await self._write_all([item]):
                    return False
            return True
        if done:
            # A keyed target answers how many rows were there already (a redelivery).
            skipped = result if isinstance(result, int) and not isinstance(result, bool) else 0
            self.stats.duplicates += skipped
            self.stats.messages += len(good)
            self.stats.spans += rows - skipped
            self.stats.batches += 1
        return done

    async def _write(self, call: tuple[Any, ...], deliveries: list[Delivery]) -> tuple[bool, Any]:
        """``target.<call[0]>(*call[1:])`` on the writer thread, retried until it
        works: ``(True, its result)``, or ``(False, None)`` if stopped before it could."""
        assert self._writer is not None
        delay = BACKOFF_SECONDS
        deadline: float | None = None
        next_keep = time.monotonic() + self.keep_every_seconds
        while True:
            write = self._writer.run(*call)
            while not write.done():
                stop_wait = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait(
                    {write, stop_wait},
                    timeout=max(0.01, min(1.0, next_keep - time.monotonic())),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stop_wait.cancel()
                now = time.monotonic()
                if self.stop.is_set() and deadline is None:
                    deadline = now + self.shutdown_grace_seconds
                if deadline is not None and now >= deadline and not write.done():
                    write.cancel()  # interrupts an await; a blocking write runs on
                    self._abandoned = True
                    return False, None
                if now >= next_keep:
                    next_keep = now + self.keep_every_seconds
                    await self._settle(self.source.keep, deliveries + self._held)
            try:
                result = write.result()
            except RowsRejected:
                raise
            except Exception as exc:
                if about_content(exc):
                    self.stats.write_errors += 1
                    self.stats.last_error = f"target: {exc}"
                    raise Refused(str(exc)) from exc
                self.stats.write_errors += 1
                self.stats.healthy = False
                self.stats.last_error = f"target: {exc}"
                self._warn("write", "llamonitor ingest: writing to %r failed (retrying; "
                           "the messages stay in the broker): %s", self.target, exc)
                if self.stop.is_set():
                    return False, None
                try:
                    await asyncio.wait_for(self.stop.wait(), delay * (0.5 + random.random() / 2))
                except asyncio.TimeoutError:
                    pass
                if self.stop.is_set():
                    return False, None
                delay = min(MAX_BACKOFF_SECONDS, delay * 2)
                if time.monotonic() >= next_keep:
                    next_keep = time.monotonic() + self.keep_every_seconds
                    await self._settle(self.source.keep, deliveries + self._held)
                continue
            self.stats.healthy = True
            return True, result
