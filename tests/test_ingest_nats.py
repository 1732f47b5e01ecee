"""NATS JetStream end to end: the sink publishes, ingest workers write PostgreSQL.

Against the real NATS (127.0.0.1:4222, JetStream) and PostgreSQL
(tests/_servers.py); each test has its own streams and table. The broker
restart runs a private ``nats-server`` (tests/_nats.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import llamonitor
from _helpers import span_row
from _nats import NatsServer, delete_streams, require_shared
from _servers import Store
from llamonitor.cli._ingest import build_worker
from llamonitor.export._broker_codec import encode

nats = pytest.importorskip("nats")
pytest.importorskip("nats.js.errors")
pytest_plugins = ["_servers"]  # the pg_db fixture

DEADLINE_SECONDS = 90.0


class Names:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stream = f"T{secrets.token_hex(4).upper()}"
        self.subject = f"test.{self.stream}"
        self.dead_stream = f"{self.stream}_DEAD"
        self.dead_subject = f"dead.{self.subject}"

    @property
    def source(self) -> str:
        return f"{self.url}/{self.stream}?subject={self.subject}"

    def storage(self, **options: Any) -> llamonitor.StorageConfig:
        return llamonitor.StorageConfig(
            backend="nats", connection_string=self.url, stream=self.stream,
            subject=self.subject, options=options,
        )


@pytest.fixture
def names() -> Iterator[Names]:
    n = Names(require_shared())
    yield n
    asyncio.run(delete_streams(n.url, n.stream, n.dead_stream))


def _table(start: int, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [span_row(i, event_id=f"e{i:06d}") for i in range(start, start + n)],
        schema=llamonitor.SCHEMA,
    )


def _publish(names: Names, tables: list[pa.Table]) -> Any:
    """Publish through the sink's backend (stream created, Nats-Msg-Id set)."""
    from llamonitor.storage import create_backend

    async def go() -> Any:
        backend = create_backend(names.storage())
        await backend.initialize()
        try:
            for t in tables:
                await backend.write_table(t)
        finally:
            await backend.close()
        return backend

    return asyncio.run(go())


async def _js_call(url: str, fn: Any) -> Any:
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def _worker(names: Names, store: Store, consumer: str, **kw: Any) -> Any:
    kw.setdefault("idle_exit_seconds", 1.5)
    kw.setdefault("wait_seconds", 0.2)
    return build_worker(names.source, store.dsn, table=store.table, consumer=consumer, **kw)


def _ids(store: Store) -> list[str]:
    return [r[0] for r in store.execute(f'SELECT event_id FROM "{store.table}"')]


def _wait_rows(store: Store, n: int, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    count = -1
    while time.monotonic() < deadline:
        try:
            count = store.count()
        except Exception:
            count = -1  # the table is not created yet
        if count >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: {count} of {n} rows after {DEADLINE_SECONDS}s")


def test_sink_publishes_and_two_workers_write_each_span_once(
    names: Names, pg_db: Store, tmp_path: Path
) -> None:
    """Spans recorded with the nats backend reach PostgreSQL exactly once,
    shared by two workers pulling from one durable consumer."""
    llamonitor.initialize_monitoring(
        llamonitor.MonitorConfig(
            storage=names.storage(max_message_rows=200), spool_dir=tmp_path / "spool"
        )
    )

    @llamonitor.monitor_llm(operation_name="call")
    def call(i: int) -> str:
        return "x" * i

    for i in range(3000):
        call(i)
    assert llamonitor.flush(10)
    llamonitor.shutdown_monitoring(10)
    info = asyncio.run(_js_call(names.url, lambda js: js.stream_info(names.stream)))
    storage = info.config.storage
    assert getattr(storage, "value", storage) == "file"  # created by the sink: file storage
    assert info.state.messages >= 15  # 3000 spans in messages of at most 200
    w1 = _worker(names, pg_db, "w1", batch_messages=2)
    w2 = _worker(names, pg_db, "w2", batch_messages=2)

    async def both() -> None:
        await asyncio.gather(w1.run(), w2.run())

    asyncio.run(both())
    ids = _ids(pg_db)
    assert len(ids) == 3000 == len(set(ids))
    assert w1.stats.spans > 0 and w2.stats.spans > 0
    assert w1.stats.spans + w2.stats.spans == 3000
    assert asyncio.run(w1.source.backlog()) == {"pending": 0, "lag": 0}


def test_a_republished_batch_is_stored_once(names: Names) -> None:
    """The same batch published twice (a retry after a lost PubAck, a spool
    replay) is one message in the stream: Nats-Msg-Id is its batch id."""
    table = _table(0, 100)
    backend = _publish(names, [table, table, _table(100, 100)])
    info = asyncio.run(_js_call(names.url, lambda js: js.stream_info(names.stream)))
    assert info.state.messages == 2
    assert backend.duplicates == 1
    assert backend.messages_sent == 3


def test_a_wrong_url_or_subject_is_a_configuration_error(names: Names) -> None:
    """A nats backend with a redis URL, or a stream that does not take the subject,
    fails with an error naming the setting."""
    from llamonitor.storage import create_backend

    with pytest.raises(llamonitor.ConfigurationError, match="connection_string"):
        create_backend(llamonitor.StorageConfig(
            backend="nats", connection_string="redis://127.0.0.1:6379/0"))
    _publish(names, [_table(0, 1)])
    other = llamonitor.StorageConfig(
        backend="nats", connection_string=names.url, stream=names.stream, subject="other.x")

    async def go() -> None:
        backend = create_backend(other)
        try:
            await backend.initialize()
        finally:
            await backend.close()

    with pytest.raises(llamonitor.ConfigurationError, match=r"storage\.subject"):
        asyncio.run(go())


def test_poison_truncated_and_future_messages_are_dead_lettered(
    names: Names, pg_db: Store
) -> None:
    """Bad messages go to the dead-letter stream with their error and are
    terminated (never delivered again); the good ones are written."""
    _publish(names, [_table(0, 50)])  # creates the stream; the good message
    truncated = encode(_table(50, 50))
    future = encode(_table(100, 50))

    async def bad(js: Any) -> None:
        await js.publish(names.subject, b"garbage", stream=names.stream)
        await js.publish(names.subject, truncated.payload[:100], stream=names.stream,
                         headers=dict(truncated.headers))
        await js.publish(names.subject, future.payload, stream=names.stream,
                         headers={**future.headers, "llamonitor-schema-version": "99"})

    asyncio.run(_js_call(names.url, bad))
    worker = _worker(names, pg_db, "w")
    asyncio.run(worker.run())
    assert sorted(_ids(pg_db)) == [f"e{i:06d}" for i in range(50)]
    assert worker.stats.dead_letters == 3

    async def read_dead(js: Any) -> list[Any]:
        sub = await js.pull_subscribe(names.dead_subject, stream=names.dead_stream)
        return list(await sub.fetch(10, timeout=5))

    dead = asyncio.run(_js_call(names.url, read_dead))
    errors = sorted((int(m.headers["llamonitor-source-seq"]), m.headers["llamonitor-error"])
                    for m in dead)
    assert [seq for seq, _ in errors] == [2, 3, 4]
    assert "not a llamonitor message" in errors[0][1]
    assert "checksum" in errors[1][1]
    assert "newer" in errors[2][1]
    # Terminated: a second worker on the consumer gets nothing back.
    again = _worker(names, pg_db, "w2")
    asyncio.run(again.run())
    assert again.stats.messages == 0 and again.stats.dead_letters == 0
    assert asyncio.run(again.source.backlog()) == {"pending": 0, "lag": 0}


def test_a_sigkilled_workers_messages_are_redelivered_and_land_once(
    names: Names, pg_db: Store
) -> None:
    """A worker process SIGKILLed while its batch is being written: after the
    ack wait, JetStream redelivers its messages to another worker, and every
    span is in the table exactly once."""
    tables = [_table(i * 100, 100) for i in range(8)]
    _publish(names, tables)
    pg_db.write(_table(10_000, 1))  # create the table, so the test can lock it

    async def go() -> Any:
        import asyncpg

        lock = await asyncpg.connect(pg_db.dsn)
        tx = lock.transaction()
        await tx.start()
        await lock.execute(f'LOCK TABLE "{pg_db.table}" IN ACCESS EXCLUSIVE MODE')
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llamonitor.cli", "ingest", "--from", names.source,
            "--to", pg_db.dsn, "--table", pg_db.table, "--consumer", "doomed",
            "--batch", "5", "--claim-idle", "3",
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            # The doomed worker holds messages: fetched, its write blocked by the lock.
            deadline = time.monotonic() + DEADLINE_SECONDS
            while True:
                try:
                    info = await _js_call(names.url, lambda js: js.consumer_info(
                        names.stream, "llamonitor-ingest"))
                except nats.js.errors.NotFoundError:
                    info = None  # the worker has not created the consumer yet
                if info is not None and (info.num_ack_pending or 0) > 0:
                    break
                assert time.monotonic() < deadline, "the worker never took a message"
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await tx.rollback()
            await lock.close()
        return info

    held = asyncio.run(go())
    assert held.num_ack_pending >= 1
    heir = _worker(names, pg_db, "heir", claim_idle_seconds=3, idle_exit_seconds=5)
    asyncio.run(heir.run())
    ids = _ids(pg_db)
    assert len(ids) == 801 == len(set(ids))
    assert heir.stats.redeliveries >= held.num_ack_pending
    assert asyncio.run(heir.source.backlog()) == {"pending": 0, "lag": 0}


def test_the_broker_restarted_mid_run_loses_nothing(pg_db: Store, tmp_path: Path) -> None:
    """A private nats-server (file storage) SIGKILLed and started again while
    spans are published and ingested: the sink spools and replays, the worker
    reconnects, every span lands exactly once."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    names = Names(server.url)
    worker = _worker(names, pg_db, "w", idle_exit_seconds=None, claim_idle_seconds=3)
    done = threading.Event()
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()

    def run_worker() -> None:
        try:
            loop.run_until_complete(worker.run())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    llamonitor.initialize_monitoring(
        llamonitor.MonitorConfig(
            storage=names.storage(max_message_rows=100, timeout_seconds=3),
            spool_dir=tmp_path / "spool", retry_backoff_seconds=0.1,
        )
    )

    @llamonitor.monitor_llm(operation_name="call")
    def call(i: int) -> str:
        return "x" * (i % 50)

    thread = threading.Thread(target=run_worker, daemon=True)
    try:
        for i in range(1000):
            call(i)
        assert llamonitor.flush(10)
        thread.start()
        _wait_rows(pg_db, 200, "before the restart")
        server.kill()
        for i in range(1000, 2000):  # published while the broker is down: spooled
            call(i)
        during = llamonitor.flush(10)
        assert during.spooled > 0, during  # the sink could not publish: on disk
        server.start()
        for i in range(2000, 3000):
            call(i)
        llamonitor.flush(10)
        _wait_rows(pg_db, 3000, "after the restart")
    finally:
        llamonitor.shutdown_monitoring(10)
        loop.call_soon_threadsafe(worker.stop.set)
        done.wait(60)
        server.stop()
    assert not errors, errors
    ids = _ids(pg_db)
    assert len(ids) == 3000 == len(set(ids))
    assert worker.stats.source_errors > 0  # it did see the broker go away


def test_a_message_every_worker_gave_up_on_is_dead_lettered(
    names: Names, pg_db: Store
) -> None:
    """A message delivered more than max_deliver times without an ack (workers
    that died on it) goes to the dead letters instead of around again."""
    _publish(names, [_table(0, 10)])
    worker = build_worker(
        f"{names.source}&max_deliver=2", pg_db.dsn, table=pg_db.table, consumer="w",
        idle_exit_seconds=1.5, wait_seconds=0.2,
    )
    source = worker.source

    async def go() -> list[int]:
        await source.open()
        seen = []
        try:
            for _ in range(3):
                got = await source.fetch(10, 2.0)
                seen.append(len(got))
                await source.give_back(got)  # as a shutdown that could not finish
        finally:
            await source.close()
        return seen

    assert asyncio.run(go()) == [1, 1, 0]
    assert source.dead_at_fetch == 1

    async def read_dead(js: Any) -> list[Any]:
        sub = await js.pull_subscribe(names.dead_subject, stream=names.dead_stream)
        return list(await sub.fetch(10, timeout=5))

    dead = asyncio.run(_js_call(names.url, read_dead))
    assert len(dead) == 1
    assert "delivered 3 times" in dead[0].headers["llamonitor-error"]
    assert dead[0].headers["llamonitor-rows"] == "10"  # the original message, kept whole
    assert asyncio.run(source.backlog()) == {"pending": 0, "lag": 0}


def test_a_stream_deleted_under_the_workers_is_a_clear_error(
    names: Names, pg_db: Store
) -> None:
    """Deleting the stream stops the worker with an error naming the stream."""
    from llamonitor.cli._ingest_source import SourceGone

    _publish(names, [_table(0, 10)])
    worker = _worker(names, pg_db, "w", idle_exit_seconds=None)

    async def go() -> None:
        task = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + DEADLINE_SECONDS
        while worker.stats.spans < 10:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        await _js_call(names.url, lambda js: js.delete_stream(names.stream))
        await asyncio.wait_for(task, 60)

    with pytest.raises(SourceGone, match=names.stream):
        asyncio.run(go())
    assert len(_ids(pg_db)) == 10


def test_a_full_stream_refuses_new_messages_rather_than_dropping_unconsumed_ones(
    names: Names,
) -> None:
    """A stream created with ``max_bytes``, filled while no worker consumes it:
    the publish that does not fit fails with a transient error (the sink
    retries and spools it), and the messages already there stay (discard=new,
    not the default discard=old that would silently drop the oldest)."""
    from llamonitor.export._transport import BrokerUnavailable
    from llamonitor.storage import create_backend
    from llamonitor.transport.spool import is_transient

    async def fill() -> tuple[int, BaseException | None]:
        backend = create_backend(names.storage(max_bytes=30_000))
        await backend.initialize()
        try:
            for i in range(10):  # ~9 KB each: the fourth does not fit
                try:
                    await backend.write_table(_table(i * 50, 50))
                except Exception as exc:
                    return i, exc
            return 10, None
        finally:
            await backend.close()

    stored, error = asyncio.run(fill())
    assert isinstance(error, BrokerUnavailable) and is_transient(error), repr(error)
    info = asyncio.run(_js_call(names.url, lambda js: js.stream_info(names.stream)))
    assert info.state.first_seq == 1 and info.state.messages == stored > 0
