"""Redis Streams end to end: the sink publishes, ingest workers write PostgreSQL.

Against the real Redis (127.0.0.1:6379) and PostgreSQL (tests/_servers.py);
each test has its own stream and table.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

import llamonitor
from _helpers import span_row
from _servers import IN_CI, Store
from llamonitor.cli._ingest import build_worker
from llamonitor.cli._ingest_source import SourceGone
from llamonitor.export._broker_codec import PoisonMessage, decode, encode
from llamonitor.export._redis_streams import entry_fields

redis = pytest.importorskip("redis")
REDIS_URL = "redis://127.0.0.1:6379/0"
pytest_plugins = ["_servers"]  # the pg_db fixture


@pytest.fixture
def stream() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if IN_CI:
            pytest.fail(f"redis is not reachable: {exc}")
        pytest.skip(f"redis is not reachable: {exc}")
    name = f"test-{secrets.token_hex(4)}"
    yield name
    client.delete(name, name + ":dead")


def _table(start: int, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [span_row(i, event_id=f"e{i:06d}") for i in range(start, start + n)],
        schema=llamonitor.SCHEMA,
    )


def _publish(stream: str, tables: list[pa.Table]) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for t in tables:
        client.xadd(stream, entry_fields(encode(t)))  # type: ignore[arg-type]


def _worker(stream: str, store: Store, consumer: str, **kw: Any) -> Any:
    kw.setdefault("idle_exit_seconds", 1.0)
    kw.setdefault("wait_seconds", 0.2)
    return build_worker(
        f"{REDIS_URL}/{stream}", store.dsn, table=store.table, consumer=consumer, **kw
    )


def _ids(store: Store) -> list[str]:
    return [r[0] for r in store.execute(f'SELECT event_id FROM "{store.table}"')]


def test_codec_refuses_truncated_altered_and_future_messages() -> None:
    """A message that is cut short, altered, or of a newer schema is poison, with the reason."""
    message = encode(_table(0, 10))
    assert decode(message.payload, message.headers).num_rows == 10
    with pytest.raises(PoisonMessage, match="checksum"):
        decode(message.payload[:-20], message.headers)
    future = {**message.headers, "llamonitor-schema-version": "999"}
    with pytest.raises(PoisonMessage, match="newer"):
        decode(message.payload, future)
    with pytest.raises(PoisonMessage, match="not a llamonitor message"):
        decode(b"hello", {})


def test_sink_publishes_and_two_workers_write_each_span_once(
    stream: str, pg_db: Store, tmp_path: Any
) -> None:
    """Spans recorded with the redis-streams backend reach PostgreSQL exactly once,
    shared by two workers."""
    llamonitor.initialize_monitoring(
        llamonitor.MonitorConfig(
            storage=llamonitor.StorageConfig(
                backend="redis-streams", connection_string=REDIS_URL, stream=stream,
                options={"max_message_rows": 200},
            ),
            spool_dir=tmp_path / "spool",
        )
    )

    @llamonitor.monitor_llm(operation_name="call")
    def call(i: int) -> str:
        return "x" * i

    for i in range(3000):
        call(i)
    assert llamonitor.flush(10)
    llamonitor.shutdown_monitoring(10)
    w1 = _worker(stream, pg_db, "w1", batch_messages=2)
    w2 = _worker(stream, pg_db, "w2", batch_messages=2)

    async def both() -> None:
        await asyncio.gather(w1.run(), w2.run())

    asyncio.run(both())
    ids = _ids(pg_db)
    assert len(ids) == 3000 == len(set(ids))
    assert w1.stats.spans > 0 and w2.stats.spans > 0
    assert w1.stats.spans + w2.stats.spans == 3000


def test_messages_of_a_dead_worker_are_claimed_and_land_once(
    stream: str, pg_db: Store
) -> None:
    """A worker that took messages and died without acking: another claims them
    (XAUTOCLAIM); a message published twice is still one row per span."""
    tables = [_table(i * 100, 100) for i in range(6)]
    _publish(stream, [*tables, tables[0]])  # the first batch twice (a producer retry)

    async def die() -> None:
        dead = _worker(stream, pg_db, "dead")
        await dead.source.open()
        got = await dead.source.fetch(4, 0.2)  # delivered to "dead", never acked
        assert len(got) == 4
        await dead.source.close()

    asyncio.run(die())
    heir = _worker(stream, pg_db, "heir", claim_idle_seconds=0.2)
    asyncio.run(heir.run())
    ids = _ids(pg_db)
    assert len(ids) == 600 == len(set(ids))
    assert heir.stats.redeliveries >= 4
    assert asyncio.run(heir.source.backlog())["pending"] == 0


def test_poison_truncated_and_future_messages_are_dead_lettered(
    stream: str, pg_db: Store
) -> None:
    """Bad messages go to <stream>:dead with their error; the good ones are written."""
    good = encode(_table(0, 50))
    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(stream, {"payload": b"garbage"})
    client.xadd(stream, entry_fields(good))  # type: ignore[arg-type]
    truncated = entry_fields(encode(_table(50, 50)))
    truncated["payload"] = truncated["payload"][:100]
    client.xadd(stream, truncated)  # type: ignore[arg-type]
    future = entry_fields(encode(_table(100, 50)))
    future["llamonitor-schema-version"] = "99"
    client.xadd(stream, future)  # type: ignore[arg-type]
    worker = _worker(stream, pg_db, "w")
    asyncio.run(worker.run())
    assert sorted(_ids(pg_db)) == [f"e{i:06d}" for i in range(50)]
    dead = client.xrange(stream + ":dead")
    errors = [fields[b"llamonitor-error"].decode() for _, fields in dead]
    assert len(errors) == 3
    assert "not a llamonitor message" in errors[0]
    assert "checksum" in errors[1]
    assert "newer" in errors[2]
    assert worker.stats.dead_letters == 3
    assert asyncio.run(worker.source.backlog())["pending"] == 0


def test_a_stream_deleted_under_the_workers_is_a_clear_error(
    stream: str, pg_db: Store
) -> None:
    """Deleting the stream stops the worker with an error naming the stream."""
    _publish(stream, [_table(0, 10)])
    worker = _worker(stream, pg_db, "w", idle_exit_seconds=None)

    async def go() -> None:
        task = asyncio.ensure_future(worker.run())
        while worker.stats.spans < 10:
            await asyncio.sleep(0.05)
        redis.Redis.from_url(REDIS_URL).delete(stream)
        await asyncio.wait_for(task, 10)

    with pytest.raises(SourceGone, match=stream):
        asyncio.run(go())
    assert len(_ids(pg_db)) == 10


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_messages_of_each_compression_are_written_once(
    stream: str, pg_db: Store, compression: str
) -> None:
    """The sink's ``compression`` option changes only the payload's size: a
    worker reads each kind, the same chunk published twice lands once."""
    table = _table(0, 300)
    message = encode(table, compression)
    assert decode(message.payload, message.headers).equals(table)
    client = redis.Redis.from_url(REDIS_URL)
    for _ in range(2):
        client.xadd(stream, entry_fields(message))  # type: ignore[arg-type]
    worker = _worker(stream, pg_db, "w")
    asyncio.run(worker.run())
    assert sorted(_ids(pg_db)) == [f"e{i:06d}" for i in range(300)]
    assert worker.stats.duplicates == 300


def test_an_unknown_compression_fails_early_naming_the_setting() -> None:
    from llamonitor.schema.config import ConfigurationError
    from llamonitor.storage.base import create_backend

    config = llamonitor.StorageConfig(
        backend="redis-streams", connection_string=REDIS_URL, stream="s",
        options={"compression": "brotli"},
    )
    with pytest.raises(ConfigurationError, match=r"storage\.options.*compression='brotli'"):
        create_backend(config)


def test_a_stopped_worker_gives_back_what_it_read_ahead(stream: str, pg_db: Store) -> None:
    """A worker reads the next batch while it writes the one in hand; stopped,
    it finishes the write and gives the batch read ahead back: another worker
    takes it at once (no wait for --claim-idle), every span lands once."""
    _publish(stream, [_table(i * 100, 100) for i in range(20)])
    first = _worker(stream, pg_db, "first", batch_messages=1, idle_exit_seconds=None)

    async def stop_after_one() -> None:
        task = asyncio.ensure_future(first.run())
        while first.stats.spans < 100:
            await asyncio.sleep(0.005)
        first.stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(stop_after_one())
    assert 100 <= first.stats.spans < 2000
    left = asyncio.run(first.source.backlog())
    assert left["pending"] >= 1  # given back, not acknowledged
    heir = _worker(stream, pg_db, "heir")
    asyncio.run(heir.run())
    ids = _ids(pg_db)
    assert len(ids) == 2000 == len(set(ids))
    assert heir.stats.redeliveries >= 1
    assert asyncio.run(heir.source.backlog())["pending"] == 0
