"""Ingest workers under faults, with real servers: a worker SIGKILLed mid-batch,
Redis killed and restarted (AOF on), the target PostgreSQL down, a write that
blocks, redeliveries into a Parquet target, poison messages in a flow.

Servers that are killed are private (tests/_redisserver.py, tests/_pgcluster.py);
the others are the shared ones (tests/_servers.py). Every wait polls an
observable condition, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llamonitor
from _helpers import span_row
from _pgcluster import PgCluster, StallProxy, _close
from _redisserver import RedisServer
from _servers import IN_CI, Store
from llamonitor.cli._ingest import build_worker
from llamonitor.export._broker_codec import encode
from llamonitor.export._redis_streams import entry_fields
from llamonitor.storage._layout import data_files
from llamonitor.storage.parquet import ParquetBackend

redis = pytest.importorskip("redis")
pytest_plugins = ["_servers", "_pgcluster", "_redisserver"]
SHARED_REDIS = "redis://127.0.0.1:6379/0"
DEADLINE = 120.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def stream() -> Iterator[str]:
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if IN_CI:
            pytest.fail(f"redis is not reachable: {exc}")
        pytest.skip(f"redis is not reachable: {exc}")
    name = f"fault-{secrets.token_hex(4)}"
    yield name
    client.delete(name, name + ":dead")


def _table(start: int, n: int, **values: Any) -> pa.Table:
    return pa.Table.from_pylist(
        [span_row(i, event_id=f"e{i:06d}", **values) for i in range(start, start + n)],
        schema=llamonitor.SCHEMA,
    )


def _publish(url: str, stream: str, tables: list[pa.Table]) -> None:
    """Every table as one entry, in one MULTI/EXEC: a blocked reader sees them all at once."""
    pipe = redis.Redis.from_url(url).pipeline(transaction=True)
    for t in tables:
        pipe.xadd(stream, entry_fields(encode(t)))
    pipe.execute()


def _consumers(url: str, stream: str) -> dict[str, int]:
    """Consumer name -> pending messages, of the default group."""
    try:
        found = redis.Redis.from_url(url).xinfo_consumers(stream, "llamonitor-ingest")
    except redis.ResponseError:
        return {}
    return {c["name"].decode(): int(c["pending"]) for c in found}


def _group(url: str, stream: str) -> dict[str, int]:
    for g in redis.Redis.from_url(url).xinfo_groups(stream):
        if g["name"] == b"llamonitor-ingest":
            return {"pending": int(g["pending"]), "lag": int(g["lag"] or 0)}
    raise AssertionError("no consumer group")


def _count_pg(cluster_or_store: Any, table: str) -> tuple[int, int]:
    """(rows, distinct event ids), or (-1, -1) while the table does not exist."""
    sql = f'SELECT count(*), count(DISTINCT event_id) FROM "{table}"'
    try:
        row = cluster_or_store.execute(sql)[0]
    except Exception:
        return (-1, -1)
    return int(row[0]), int(row[1])


def _ingest_cmd(source: str, to: str, table: str, consumer: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "llamonitor.cli", "ingest", "--from", source, "--to", to,
        "--table", table, "--consumer", consumer, *extra,
    ]  # fmt: skip


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})


def _finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM ``proc`` (a worker: it finishes its batch), wait, its output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return log.read_text(errors="replace")


class BlackholeProxy(StallProxy):
    """A TCP proxy that, once :meth:`blackhole` is called, swallows every byte
    (both ways; connections stay open): a request sent then never arrives,
    even after the client is gone."""

    def __init__(self, host: str, port: int) -> None:
        self.swallowing = threading.Event()
        super().__init__(host, port)

    def blackhole(self) -> None:
        self.swallowing.set()

    def _pump(self, src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        try:
            while not self._closed.is_set():
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                if not self.swallowing.is_set():
                    dst.sendall(data)
        except (OSError, ValueError):
            _close(src, dst)
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait(timeout=30)


# -- a worker SIGKILLed mid-batch ----------------------------------------------


@pytest.mark.parametrize("moment", ["writing", "committed-not-acked"])
def test_a_worker_killed_mid_batch_its_messages_are_claimed_and_land_once(
    moment: str, stream: str, pg_cluster: PgCluster, stall_proxy: StallProxy, tmp_path: Path
) -> None:
    """SIGKILL a worker process while its write hangs (``writing``) or after
    the write committed but before its XACK reached Redis: another worker
    claims its pending messages (XAUTOCLAIM), and every span is in the table
    exactly once."""
    table = f"t_{secrets.token_hex(5)}"
    with BlackholeProxy("127.0.0.1", 6379) as redis_proxy:
        doomed = _spawn(
            _ingest_cmd(
                f"redis://127.0.0.1:{redis_proxy.port}/0/{stream}", stall_proxy.dsn(), table,
                "doomed", "--batch", "8", "--claim-idle", "60",
            ),
            tmp_path / "doomed.log",
        )
        try:
            # Its consumer appears at its first read, after its target is set up.
            wait_for("its first read", lambda: "doomed" in _consumers(SHARED_REDIS, stream))
            stall_proxy.stall()  # its next write hangs
            _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(20)])
            wait_for("the worker's batch", lambda: _consumers(SHARED_REDIS, stream)["doomed"] == 8)
            if moment == "committed-not-acked":
                redis_proxy.blackhole()  # its XACK will never arrive
                stall_proxy.resume()  # the write commits
                wait_for("the batch's commit", lambda: _count_pg(pg_cluster, table)[0] == 800)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(30)
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait(10)
        stall_proxy.resume()
    # Never acknowledged: its batch, and the one it may have read ahead while
    # writing it (the worker is pipelined), at most one batch more.
    pending = _consumers(SHARED_REDIS, stream)["doomed"]
    assert pending in (8, 16)
    log = tmp_path / "heir.log"
    heir = _spawn(
        _ingest_cmd(f"{SHARED_REDIS}/{stream}", pg_cluster.dsn, table, "heir",
                    "--claim-idle", "0.5"),
        log,
    )
    try:
        wait_for("every span", lambda: _count_pg(pg_cluster, table)[0] >= 2000)
        wait_for("every ack", lambda: _group(SHARED_REDIS, stream)["pending"] == 0)
    finally:
        out = _finish(heir, log)
    assert _count_pg(pg_cluster, table) == (2000, 2000), out
    assert f"{pending} redelivered" in out, out


# -- Redis killed and restarted under producers and workers --------------------


def test_redis_restarted_mid_run_loses_nothing(
    redis_server: RedisServer, pg_db: Store, tmp_path: Path
) -> None:
    """Kill Redis (AOF, appendfsync always) while a producer records and two
    workers ingest; the producer's sink spools what it cannot publish and
    replays it once Redis is back, the workers reconnect: every span once."""
    stream = "spans"
    writer = llamonitor.initialize_monitoring(
        llamonitor.MonitorConfig(
            storage=llamonitor.StorageConfig(
                backend="redis-streams", connection_string=redis_server.url, stream=stream,
                batch_size=200, flush_interval_seconds=0.1,
                options={"max_message_rows": 100, "timeout_seconds": 2},
            ),
            spool_dir=tmp_path / "spool",
            max_retries=1,
            retry_backoff_seconds=0.1,
            retry_max_backoff_seconds=1.0,
        )
    )

    @llamonitor.monitor_llm(operation_name="call")
    def call(i: int) -> int:
        return i

    workers = [
        (
            _spawn(
                _ingest_cmd(f"{redis_server.url}/{stream}", pg_db.dsn, pg_db.table, f"w{n}",
                            "--claim-idle", "2", "--batch", "4"),
                tmp_path / f"w{n}.log",
            ),
            tmp_path / f"w{n}.log",
        )
        for n in range(2)
    ]
    try:
        for i in range(2000):
            call(i)
        assert llamonitor.flush(30)
        wait_for("the first spans", lambda: _count_pg(pg_db, pg_db.table)[0] >= 1)
        redis_server.kill()
        for i in range(2000, 4000):
            call(i)
        wait_for("the spool", lambda: writer.health_check()["events_spooled"] > 0)
        redis_server.start()  # reloads the AOF
        for i in range(4000, 5000):
            call(i)
        assert llamonitor.flush(60)
        wait_for("the replay", lambda: writer.health_check()["events_replayed"] > 0)
        wait_for("every span", lambda: _count_pg(pg_db, pg_db.table)[0] >= 5000)
        wait_for("every ack", lambda: _group(redis_server.url, stream)["pending"] == 0)
    finally:
        llamonitor.shutdown_monitoring(30)
        outs = [_finish(p, log) for p, log in workers]
    rows = pg_db.execute(f'SELECT event_id FROM "{pg_db.table}"')
    assert len(rows) == 5000 == len({r[0] for r in rows}), outs
    assert all("ingested" in o for o in outs), outs


# -- the target down under ingest ----------------------------------------------


class _Running:
    """An in-process worker on a thread of its own (its stats readable live)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for("the worker's loop", lambda: self.loop is not None)

    def _run(self) -> None:
        async def go() -> None:
            self.loop = asyncio.get_running_loop()
            await self.worker.run()

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.worker.stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_target_down_backlog_waits_in_the_stream_then_drains_once(
    stream: str, pg_cluster: PgCluster
) -> None:
    """PostgreSQL killed for ~10 s under ingest: nothing is acknowledged
    meanwhile (the backlog is in the stream), the worker retries, and after
    the restart every span is in the table exactly once."""
    pg_cluster.ensure_running()
    table = f"t_{secrets.token_hex(5)}"
    worker = build_worker(
        f"{SHARED_REDIS}/{stream}", pg_cluster.dsn, table=table, consumer="w",
        wait_seconds=0.2, batch_messages=8,
    )
    running = _Running(worker)
    try:
        _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(10)])
        wait_for("the first spans", lambda: worker.stats.spans == 1000)
        pg_cluster.kill()
        _publish(SHARED_REDIS, stream, [_table(1000 + i * 100, 100) for i in range(20)])
        wait_for("a failed write", lambda: worker.stats.write_errors >= 1)
        outage_end = time.monotonic() + 10
        while time.monotonic() < outage_end:  # the outage lasts ~10 s; nothing is acked
            g = _group(SHARED_REDIS, stream)
            assert g["pending"] + g["lag"] == 20, g
            time.sleep(0.5)
        assert not worker.health()["healthy"]
        pg_cluster.start()
        wait_for("the backlog drained", lambda: _group(SHARED_REDIS, stream)["pending"] == 0
                 and worker.stats.spans == 3000)
    finally:
        pg_cluster.ensure_running()
        running.stop()
    assert _count_pg(pg_cluster, table) == (3000, 3000)
    assert worker.stats.write_errors >= 1 and worker.health()["healthy"]


# -- a write that blocks does not stall the broker side -------------------------


class _BlockingParquet(ParquetBackend):
    """A Parquet store whose writes block (a slow disk) until ``release`` is set."""

    release = threading.Event()

    async def write_tables_once(self, keyed: list[tuple[str, pa.Table]]) -> int:
        self.release.wait(DEADLINE)  # blocks its thread, as a slow synchronous write does
        return await super().write_tables_once(keyed)


def test_a_blocking_write_keeps_its_messages_from_other_workers(
    stream: str, tmp_path: Path
) -> None:
    """While a synchronous write blocks for longer than the claim time, the
    worker keeps renewing its claim (its loop is not blocked): a second worker
    takes none of its messages; once the write returns, every span lands once."""
    _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(4)])
    _BlockingParquet.release.clear()
    slow = build_worker(f"{SHARED_REDIS}/{stream}", str(tmp_path / "store"), consumer="slow",
                        wait_seconds=0.2, claim_idle_seconds=60)
    slow.keep_every_seconds = 0.2
    slow.target = _BlockingParquet(slow.target.config)
    running = _Running(slow)
    other = build_worker(f"{SHARED_REDIS}/{stream}", str(tmp_path / "store"), consumer="other",
                         wait_seconds=0.2, claim_idle_seconds=3)
    try:
        wait_for("the slow batch", lambda: _consumers(SHARED_REDIS, stream).get("slow") == 4)
        fetched_at = time.monotonic()
        other_run = _Running(other)
        while time.monotonic() < fetched_at + 8:  # well past the other's claim time
            time.sleep(0.2)
        assert _consumers(SHARED_REDIS, stream)["slow"] == 4
        assert other.stats.redeliveries == 0
        _BlockingParquet.release.set()
        wait_for("the write", lambda: slow.stats.spans == 400)
        other_run.stop()
    finally:
        _BlockingParquet.release.set()
        running.stop()
    ids = pq.read_table(data_files(tmp_path / "store")).column("event_id").to_pylist()
    assert len(ids) == 400 == len(set(ids))


# -- redeliveries into a Parquet target ---------------------------------------------


def test_parquet_target_redelivered_messages_land_once(stream: str, tmp_path: Path) -> None:
    """Every message delivered again (the group's position reset, as after
    lost acks) and one chunk published twice: each span is in the Parquet
    store once, spans of two days included."""
    tables = [_table(i * 100, 100) for i in range(5)]
    tables.append(_table(500, 100, timestamp=span_row(0)["timestamp"] + timedelta(days=1)))
    _publish(SHARED_REDIS, stream, [*tables, tables[0]])
    store = str(tmp_path / "store")

    def run(name: str) -> Any:
        worker = build_worker(f"{SHARED_REDIS}/{stream}", store, consumer=name,
                              wait_seconds=0.2, idle_exit_seconds=1.0, batch_messages=3)
        asyncio.run(worker.run())
        return worker

    first = run("first")
    assert first.stats.duplicates == 100  # the chunk published twice
    assert first.stats.spans == 600
    redis.Redis.from_url(SHARED_REDIS).xgroup_setid(stream, "llamonitor-ingest", "0")
    again = run("again")
    assert again.stats.messages == 7 and again.stats.duplicates == 700
    assert again.stats.spans == 0
    ids = pq.read_table(data_files(store)).column("event_id").to_pylist()
    assert len(ids) == 600 == len(set(ids))
    assert len({p.parent for p in data_files(store)}) == 2  # two days


# -- poison in a flow, and a stream deleted under a worker process ----------------


def test_poison_messages_in_a_flow_are_dead_lettered_and_the_rest_flows(
    stream: str, pg_db: Store
) -> None:
    """Garbage, a missing payload, a truncated payload, a schema version from
    the future, spans whose columns do not fit the schema and a table without
    event ids, among good messages read by two workers: each bad one is in
    ``<stream>:dead`` with its error, every good span is written once."""
    client = redis.Redis.from_url(SHARED_REDIS)
    truncated = entry_fields(encode(_table(10_000, 10)))
    truncated["payload"] = truncated["payload"][:-30]
    future = entry_fields(encode(_table(10_100, 10)))
    future["llamonitor-schema-version"] = "1000"
    misfit = pa.table({"event_id": ["m1"], "timestamp": ["yesterday"]})
    bad: list[dict[Any, Any]] = [
        {"payload": b"\x00garbage"},
        {k: v for k, v in entry_fields(encode(_table(10_200, 10))).items() if k != "payload"},
        truncated,
        future,
        entry_fields(encode(misfit)),
        entry_fields(encode(pa.table({"id": [1, 2]}))),
    ]
    pipe = client.pipeline(transaction=False)
    for i in range(30):
        pipe.xadd(stream, entry_fields(encode(_table(i * 100, 100))))
        if i % 5 == 0:
            pipe.xadd(stream, bad[i // 5])
    pipe.execute()
    workers = [
        build_worker(f"{SHARED_REDIS}/{stream}", pg_db.dsn, table=pg_db.table, consumer=f"w{n}",
                     wait_seconds=0.2, idle_exit_seconds=1.0, batch_messages=4)
        for n in range(2)
    ]

    async def both() -> None:
        await asyncio.gather(*(w.run() for w in workers))

    asyncio.run(both())
    ids = [r[0] for r in pg_db.execute(f'SELECT event_id FROM "{pg_db.table}"')]
    assert sorted(ids) == [f"e{i:06d}" for i in range(3000)]
    errors = sorted(f[b"llamonitor-error"].decode() for _, f in client.xrange(stream + ":dead"))
    assert len(errors) == 6 == sum(w.stats.dead_letters for w in workers)
    for expected in ("not a llamonitor message", "checksum", "newer", "do not fit the schema",
                     "no event_id"):
        assert any(expected in e for e in errors), (expected, errors)
    assert _group(SHARED_REDIS, stream)["pending"] == 0


def test_a_stream_deleted_under_a_worker_process_exits_3_naming_it(
    stream: str, pg_db: Store, tmp_path: Path
) -> None:
    """``llamonitor ingest`` whose stream is deleted exits with code 3 and an
    error naming the stream; what it had written stays."""
    _publish(SHARED_REDIS, stream, [_table(0, 100)])
    log = tmp_path / "w.log"
    proc = _spawn(_ingest_cmd(f"{SHARED_REDIS}/{stream}", pg_db.dsn, pg_db.table, "w"), log)
    try:
        wait_for("the spans", lambda: _count_pg(pg_db, pg_db.table)[0] == 100)
        wait_for("the ack", lambda: _group(SHARED_REDIS, stream)["pending"] == 0)
        redis.Redis.from_url(SHARED_REDIS).delete(stream)
        code = proc.wait(60)
    finally:
        out = _finish(proc, log)
    assert code == 3, out
    assert stream in out and "no longer exists" in out, out
    assert _count_pg(pg_db, pg_db.table) == (100, 100)


def test_a_write_stuck_past_the_grace_is_given_back_and_lands_once(
    stream: str, tmp_path: Path
) -> None:
    """Stopping a worker whose synchronous write outlasts ``--grace``: it
    returns promptly, gives its messages back (another worker takes them at
    once, long before the claim time), and when the stuck write completes
    after all, no span is there twice."""
    _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(3)])
    _BlockingParquet.release.clear()
    store = str(tmp_path / "store")
    stuck = build_worker(f"{SHARED_REDIS}/{stream}", store, consumer="stuck", wait_seconds=0.2,
                         claim_idle_seconds=60, shutdown_grace_seconds=0.5)
    stuck.target = _BlockingParquet(stuck.target.config)
    running = _Running(stuck)
    try:
        wait_for("the stuck batch", lambda: _consumers(SHARED_REDIS, stream).get("stuck") == 3)
        running.stop()  # returns although the write is still blocked
        heir = build_worker(f"{SHARED_REDIS}/{stream}", store, consumer="heir", wait_seconds=0.2,
                            claim_idle_seconds=60, idle_exit_seconds=1.0)
        asyncio.run(heir.run())
        assert heir.stats.redeliveries == 3 and heir.stats.spans == 300
    finally:
        _BlockingParquet.release.set()  # the stuck write completes after all
    abandoned = stuck._writer
    assert abandoned is not None
    wait_for("the stuck write to finish", lambda: not abandoned.thread.is_alive())
    ids = pq.read_table(data_files(store)).column("event_id").to_pylist()
    assert len(ids) == 300 == len(set(ids))
    assert _group(SHARED_REDIS, stream)["pending"] == 0


# -- writes that can never succeed, dead letters that could not be sent -----------


def _dead_errors(stream: str) -> list[str]:
    found = redis.Redis.from_url(SHARED_REDIS).xrange(stream + ":dead")
    return [f[b"llamonitor-error"].decode() for _, f in found]


def test_a_batch_id_too_long_for_a_file_name_does_not_stall_the_stream(
    stream: str, tmp_path: Path
) -> None:
    """A message whose ``llamonitor-batch-id`` header is 300 letters (a file
    name too long, were it used): the key is recomputed from the event ids,
    and every span of the batch lands, once."""
    entries = [entry_fields(encode(_table(i * 100, 100))) for i in range(3)]
    entries[1]["llamonitor-batch-id"] = "a" * 300
    client = redis.Redis.from_url(SHARED_REDIS)
    for fields in entries:
        client.xadd(stream, fields)
    store = tmp_path / "store"
    worker = build_worker(f"{SHARED_REDIS}/{stream}", str(store), consumer="w", wait_seconds=0.2)
    running = _Running(worker)
    try:
        wait_for("the spans", lambda: worker.stats.spans == 300, timeout=60)
        wait_for("the acks", lambda: _group(SHARED_REDIS, stream)["pending"] == 0)
    finally:
        running.stop()
    ids = pq.read_table(data_files(store)).column("event_id").to_pylist()
    assert len(ids) == 300 == len(set(ids))
    assert _dead_errors(stream) == []


class _ContentRefusingParquet(ParquetBackend):
    """A Parquet store that can never write the spans of one message (as a
    file system refusing its name): ENAMETOOLONG, every time."""

    bad_id = "e000150"

    async def write_tables_once(self, keyed: list[tuple[str, pa.Table]]) -> int:
        for _, table in keyed:
            if self.bad_id in table.column("event_id").to_pylist():
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "events_k")
        return await super().write_tables_once(keyed)


def test_a_write_failing_for_one_messages_content_dead_letters_it_and_writes_the_rest(
    stream: str, tmp_path: Path
) -> None:
    """A batch whose write fails with an error no retry can cure (an OSError
    about the file name, not the store being down): the worker splits it,
    dead-letters the one message that fails alone, with the error, writes the
    others, and the stream flows on (nothing left pending)."""
    _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(4)])
    store = tmp_path / "store"
    worker = build_worker(f"{SHARED_REDIS}/{stream}", str(store), consumer="w",
                          wait_seconds=0.2, batch_messages=8)
    worker.target = _ContentRefusingParquet(worker.target.config)
    running = _Running(worker)
    try:
        wait_for("the dead letter", lambda: worker.stats.dead_letters == 1, timeout=60)
        wait_for("the acks", lambda: _group(SHARED_REDIS, stream)["pending"] == 0)
        _publish(SHARED_REDIS, stream, [_table(1000, 100)])  # the stream flows on
        wait_for("the next message", lambda: worker.stats.spans == 400)
    finally:
        running.stop()
    ids = sorted(pq.read_table(data_files(store)).column("event_id").to_pylist())
    assert ids == [f"e{i:06d}" for i in (*range(100), *range(200, 400), *range(1000, 1100))]
    errors = _dead_errors(stream)
    assert len(errors) == 1 and "File name too long" in errors[0], errors


def test_a_poison_message_that_could_not_be_dead_lettered_is_not_acknowledged(
    stream: str, pg_db: Store
) -> None:
    """The broker fails the dead-letter publish while the worker is stopping
    (fault injected in the source's ``dead_letter``): the poison message is
    not acknowledged (still pending, given back), not counted; the good one
    beside it is written and acknowledged. The next worker dead-letters it."""
    client = redis.Redis.from_url(SHARED_REDIS)
    client.xadd(stream, entry_fields(encode(_table(0, 100))))
    poison_id = client.xadd(stream, {"payload": b"\x00garbage"}).decode()
    worker = build_worker(f"{SHARED_REDIS}/{stream}", pg_db.dsn, table=pg_db.table,
                          consumer="w", wait_seconds=0.2, batch_messages=8)

    async def unreachable(delivery: Any, error: str) -> None:
        worker.stop.set()  # a SIGTERM arrives while the broker is unreachable
        raise ConnectionError("redis went away")

    worker.source.dead_letter = unreachable  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(worker.run(), DEADLINE))
    assert worker.stats.dead_letters == 0
    assert _count_pg(pg_db, pg_db.table) == (100, 100)
    pending = client.xpending_range(stream, "llamonitor-ingest", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [poison_id]
    assert _dead_errors(stream) == []
    heir = build_worker(f"{SHARED_REDIS}/{stream}", pg_db.dsn, table=pg_db.table,
                        consumer="heir", wait_seconds=0.2, idle_exit_seconds=1.0)
    asyncio.run(asyncio.wait_for(heir.run(), DEADLINE))
    assert heir.stats.dead_letters == 1 and len(_dead_errors(stream)) == 1
    assert _group(SHARED_REDIS, stream)["pending"] == 0


# -- the writer thread's edges ------------------------------------------------------


class _FailingCloseParquet(ParquetBackend):
    async def close(self) -> None:
        raise RuntimeError("close failed")


def test_a_target_failing_to_close_does_not_hide_why_the_worker_stopped(
    stream: str, tmp_path: Path
) -> None:
    """The stream deleted under a worker whose target then fails to close:
    the worker still raises SourceGone (exit 3), and its writer thread ends."""
    _publish(SHARED_REDIS, stream, [_table(0, 100)])
    worker = build_worker(f"{SHARED_REDIS}/{stream}", str(tmp_path / "store"), consumer="w",
                          wait_seconds=0.2)
    worker.target = _FailingCloseParquet(worker.target.config)
    running = _Running(worker)
    wait_for("the spans", lambda: worker.stats.spans == 100)
    wait_for("the ack", lambda: _group(SHARED_REDIS, stream)["pending"] == 0)
    redis.Redis.from_url(SHARED_REDIS).delete(stream)
    running.thread.join(60)
    assert not running.thread.is_alive()
    from llamonitor.cli._ingest_source import SourceGone

    assert isinstance(running.error, SourceGone), repr(running.error)
    assert worker._writer is not None and not worker._writer.thread.is_alive()


def test_a_short_claim_idle_keeps_a_blocking_writes_messages(
    stream: str, tmp_path: Path
) -> None:
    """A claim renewed more often than once a second (``keep_every`` 0.2 s):
    while a write blocks, another worker claiming entries idle for 0.8 s
    takes none of them (the write loop wakes in time for each renewal)."""
    _publish(SHARED_REDIS, stream, [_table(i * 100, 100) for i in range(4)])
    _BlockingParquet.release.clear()
    store = str(tmp_path / "store")
    slow = build_worker(f"{SHARED_REDIS}/{stream}", store, consumer="slow", wait_seconds=0.2,
                        claim_idle_seconds=1.2)
    slow.keep_every_seconds = 0.2
    slow.target = _BlockingParquet(slow.target.config)
    running = _Running(slow)
    other = build_worker(f"{SHARED_REDIS}/{stream}", store, consumer="other", wait_seconds=0.2,
                         claim_idle_seconds=0.8)
    try:
        wait_for("the slow batch", lambda: _consumers(SHARED_REDIS, stream).get("slow") == 4)
        other_run = _Running(other)
        watch_end = time.monotonic() + 8
        while time.monotonic() < watch_end:  # ten times the other's claim time
            time.sleep(0.2)
        assert other.stats.redeliveries == 0
        assert _consumers(SHARED_REDIS, stream)["slow"] == 4
        _BlockingParquet.release.set()
        wait_for("the write", lambda: slow.stats.spans == 400)
        other_run.stop()
    finally:
        _BlockingParquet.release.set()
        running.stop()
    ids = pq.read_table(data_files(store)).column("event_id").to_pylist()
    assert len(ids) == 400 == len(set(ids))


# -- Parquet: a new partition directory is durable --------------------------------


def test_a_new_partition_directory_is_fsynced_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing into a day that has no directory yet fsyncs the store's root
    (the new directory's entry), for keyed (ingest) and plain writes."""
    from llamonitor.storage import parquet

    synced: list[Path] = []
    real = parquet.fsync_dir

    def recording(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(parquet, "fsync_dir", recording)
    root = tmp_path / "store"
    backend = ParquetBackend(llamonitor.StorageConfig(output_dir=str(root)))
    asyncio.run(backend.initialize())
    day2 = span_row(0)["timestamp"] + timedelta(days=1)
    asyncio.run(backend.write_tables_once([("0" * 32, _table(0, 10))]))
    assert root in synced
    synced.clear()
    asyncio.run(backend.write_table(_table(10, 10, timestamp=day2)))
    assert root in synced
    assert len({p.parent for p in data_files(root)}) == 2


def test_which_write_errors_are_blamed_on_the_messages() -> None:
    """Only errors about the rows dead-letter a message; the target being
    down, full, misconfigured or refusing the login or a privilege is retried."""
    from llamonitor.cli._ingest_errors import about_content as _about_content
    from llamonitor.schema.config import ConfigurationError
    from llamonitor.storage._sql import StoreError

    about_rows = [
        OSError(errno.ENAMETOOLONG, "File name too long"),
        ValueError("a file key must be letters and digits"),
        TypeError("unhashable"),
        StoreError("invalid input syntax", sqlstate="22P02"),
        StoreError("duplicate key", sqlstate="23505"),
    ]
    about_target = [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError("timed out"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EACCES, "Permission denied"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        StoreError("server closed the connection", transient=True),
        StoreError("permission denied for table t", sqlstate="42501"),
        StoreError("password authentication failed", sqlstate="28P01"),
        StoreError("could not extend file: disk full", sqlstate="53100"),
        ConfigurationError("storage.table", "bad"),
        RuntimeError("a driver bug"),
    ]
    assert [e for e in about_rows if not _about_content(e)] == []
    assert [e for e in about_target if _about_content(e)] == []
