"""Faults with a real PostgreSQL server: every event lands exactly once.

Each scenario records 50,000 spans from decorated calls into a private
PostgreSQL cluster (``_pgcluster``; the machine's shared server is never
touched), breaks something a third of the way in while the calls go on, puts
it right about 10 s later, and then counts the rows: 50,000, one per event
(each call carries a unique marker as its session id), with the writer's
accounting agreeing (nothing failed, dropped or left in the spool). The
faults: the server stopped cleanly, the server killed (SIGKILL, crash
recovery at the restart), the span table dropped under the writer, the
network stalled (a proxy that stops forwarding but keeps the connections
open), and a spool directory that cannot be created while the server is down.
During each outage the application's calls are timed: they keep their normal
latency, since only the sink's threads ever wait on the store.

The figures (outage length, rows, call latency during the outage) are
printed per scenario (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest

import llamonitor
from _helpers import accounted, span_row
from llamonitor import MonitorConfig, monitor_llm
from llamonitor.storage import StoreError, create_backend
from llamonitor.storage import mysql as mysql_store
from llamonitor.storage import postgres as postgres_store
from llamonitor.storage.base import StorageBackend

if TYPE_CHECKING:
    from _pgcluster import PgCluster, StallProxy
    from _servers import Store

# pg_cluster (one per module), stall_proxy, make_stall_proxy; mysql_db (the shared MariaDB)
pytest_plugins = ["_pgcluster", "_servers"]

pytestmark = pytest.mark.timeout(300)  # a safety net; each test takes well under a minute

EVENTS = 50_000
OUTAGE_SECONDS = 10.0
OUTAGE_RATE = EVENTS / 3 / OUTAGE_SECONDS
"""Calls per second during the outage: the middle third of the run."""

P99_BOUND_SECONDS = 0.05
MAX_BOUND_SECONDS = 0.5
"""A decorated call during an outage: generous bounds (a call takes a few µs)."""

SETTLE_SECONDS = 90.0
"""How long the spool may take to drain once the fault is over (seconds, in
practice)."""


@monitor_llm("fault_op", session_id_from="sid")
def op(sid: str) -> str:
    return sid


def marker(i: int) -> str:
    return f"m{i:05d}"


# -- the database, beside the writer --------------------------------------------


def sql(cluster: PgCluster, query: str) -> list[tuple[Any, ...]]:
    return cluster.execute(query)


def row_count(cluster: PgCluster, table: str) -> int:
    try:
        return int(sql(cluster, f'SELECT count(*) FROM "{table}"')[0][0])
    except Exception:
        return -1  # not there (yet), or the server is down


def markers_in(cluster: PgCluster, table: str) -> list[str]:
    """The session id of every row (duplicates kept)."""
    return [r[0] for r in sql(cluster, f'SELECT session_id FROM "{table}"')]


def assert_unique_rows(cluster: PgCluster, table: str, markers: bool = True) -> None:
    """No event twice (and, with ``markers``, no marker twice)."""
    total, ids, sessions = sql(
        cluster,
        f'SELECT count(*), count(DISTINCT event_id), count(DISTINCT session_id) FROM "{table}"',
    )[0]
    assert total == ids
    if markers:
        assert total == sessions


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


# -- one scenario -----------------------------------------------------------------


class Run:
    """A monitored run of :data:`EVENTS` decorated calls against ``dsn``, with
    a fault in its middle third; times every call by phase."""

    def __init__(self, dsn: str, table: str, tmp_path: Path, **settings: Any) -> None:
        options = settings.pop("options", {})
        storage = MonitorConfig.for_production(
            dsn, table_name=table, flush_interval_seconds=0.25, options=options
        ).storage
        settings.setdefault("spool_dir", tmp_path / "spool")
        self.config = MonitorConfig(
            storage=storage,
            retry_backoff_seconds=0.05,
            retry_max_backoff_seconds=0.5,
            max_retries=2,
            # The queue holds a whole run: what is measured is the store and
            # the spool, not the queue's capacity (tested in test_transport).
            **{"max_queue_size": 100_000, **settings},
        )
        self.table = table
        self.writer = llamonitor.initialize_monitoring(self.config)
        self.produced = 0
        self.timings: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
        self.outage_seconds = 0.0
        self.outage_events = 0

    def call(self, upto: int, phase: str) -> None:
        """Calls until ``upto`` events were produced, each timed."""
        times = self.timings[phase]
        clock = time.perf_counter
        while self.produced < upto:
            sid = marker(self.produced)
            start = clock()
            assert op(sid) == sid
            times.append(clock() - start)
            self.produced += 1

    def paced(self, until: threading.Event, cap: int, rate: float, phase: str) -> None:
        """Calls at ``rate`` per second until ``until`` is set (or ``cap`` events)."""
        start, base = time.monotonic(), self.produced
        while not until.is_set() and self.produced < cap:
            due = base + int((time.monotonic() - start) * rate) + 1
            self.call(min(due, cap), phase)
            until.wait(0.005)

    def with_fault(
        self,
        begin: Callable[[], None],
        end: Callable[[], None] | None,
        seconds: float = OUTAGE_SECONDS,
        first: int = EVENTS // 3,
        cluster: PgCluster | None = None,
    ) -> None:
        """The run: ``first`` events, ``begin()`` the fault, calls at
        :data:`OUTAGE_RATE` meanwhile, ``end()`` it after ``seconds``, the rest."""
        self.call(first, "before")
        if cluster is not None:  # the writer is writing when the fault comes
            assert wait_until(lambda: row_count(cluster, self.table) > 0, 30)
        began, ended = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def fault() -> None:
            try:
                start = time.monotonic()
                begin()
                began.set()
                time.sleep(max(0.0, start + seconds - time.monotonic()))
                if end is not None:
                    end()
                self.outage_seconds = time.monotonic() - start
            except BaseException as exc:
                errors.append(exc)
            finally:
                began.set()
                ended.set()

        thread = threading.Thread(target=fault, name="fault", daemon=True)
        thread.start()
        began.wait(60)
        before = self.produced
        self.paced(ended, first + EVENTS // 3, OUTAGE_RATE, "outage")
        ended.wait(120)
        thread.join(5)
        self.outage_events = self.produced - before
        if errors:
            raise errors[0]
        self.call(EVENTS, "after")

    def settle(self, cluster: PgCluster, expected: int) -> dict[str, Any]:
        """Flush, wait until the spool is written back and the table holds
        ``expected`` rows, shut down; the final health report."""
        result = llamonitor.flush(60)
        assert result, "flush did not finish"
        assert wait_until(
            lambda: (
                self.health()["events_spooled"] == 0 and row_count(cluster, self.table) >= expected
            ),
            SETTLE_SECONDS,
        ), (self.health(), row_count(cluster, self.table))
        final = llamonitor.flush(30)
        assert final and final.spooled == 0, final
        assert llamonitor.shutdown_monitoring(30)
        return dict(self.writer.health_check())

    def health(self) -> dict[str, Any]:
        return dict(self.writer.health_check())

    def figures(self, name: str, rows: int) -> dict[str, float]:
        """Print (and return) the scenario's figures; assert the latency bounds."""
        during = self.timings["outage"]
        before = self.timings["before"]
        got = {
            "events": float(self.produced),
            "outage_s": self.outage_seconds,
            "outage_events": float(self.outage_events),
            "rows": float(rows),
            "p50_before_ms": statistics.median(before) * 1e3 if before else 0.0,
            "p99_before_ms": p99(before) * 1e3,
            "p99_outage_ms": p99(during) * 1e3,
            "max_outage_ms": max(during, default=0.0) * 1e3,
        }
        print(f"\n[faults] {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in got.items()))
        assert during, "no call was made during the outage"
        assert p99(during) < P99_BOUND_SECONDS, got
        assert max(during) < MAX_BOUND_SECONDS, got
        return got


def assert_accounting(h: dict[str, Any], spooled: bool = True) -> None:
    """Every event written, none failed, dropped, pending or left in the spool."""
    assert (
        h["events_received"]
        == EVENTS
        == accounted(h)
    )
    assert h["events_written"] == EVENTS, h
    assert h["events_failed"] == 0 and h["events_failed_by_reason"] == {}, h
    assert h["events_dropped"] == 0, h["dropped"]
    assert h["events_spooled"] == h["events_rejected"] == 0, h
    assert h["queue_size"] == h["buffer_size"] == 0, h
    (sink,) = h["sinks"].values()
    assert not sink["outage"] and sink["healthy"], sink
    if spooled:  # the outage went through the spool, and all of it came back
        assert sink["spooled_total"] > 0 and h["events_replayed"] == sink["spooled_total"], sink


def assert_every_event_once(cluster: PgCluster, table: str) -> int:
    assert_unique_rows(cluster, table)
    found = markers_in(cluster, table)
    assert len(found) == EVENTS
    assert set(found) == {marker(i) for i in range(EVENTS)}
    return len(found)


@pytest.fixture
def cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The private cluster, running before and after the test."""
    pg_cluster.ensure_running()
    yield pg_cluster
    llamonitor.shutdown_monitoring(10)
    pg_cluster.ensure_running()


@pytest.fixture
def table(request: pytest.FixtureRequest, cluster: PgCluster) -> Iterator[str]:
    """The test's span table, dropped afterwards (with the writer stopped first:
    it would create the table again)."""
    name = f"faults_{request.node.name.removeprefix('test_')[:40]}"
    yield name
    llamonitor.shutdown_monitoring(10)
    cluster.ensure_running()
    sql(cluster, f'DROP TABLE IF EXISTS "{name}", "{name}_saved"')


# -- the scenarios ---------------------------------------------------------------


def test_server_stopped_for_10_s_mid_run(cluster: PgCluster, table: str, tmp_path: Path) -> None:
    """pg_ctl stop -m fast a third of the way in, start 10 s later: all 50,000
    events land once (the outage's via the spool); calls stay fast meanwhile."""
    run = Run(cluster.dsn, table, tmp_path)
    run.with_fault(cluster.stop, cluster.start, cluster=cluster)
    h = run.settle(cluster, EVENTS)
    rows = assert_every_event_once(cluster, table)
    assert_accounting(h)
    run.figures("stopped", rows)


def test_server_killed_mid_run(cluster: PgCluster, table: str, tmp_path: Path) -> None:
    """SIGKILL to the postmaster and its processes, restart (crash recovery) 10 s
    later: all 50,000 events land once."""
    run = Run(cluster.dsn, table, tmp_path)
    run.with_fault(cluster.kill, cluster.start, cluster=cluster)
    h = run.settle(cluster, EVENTS)
    rows = assert_every_event_once(cluster, table)
    assert_accounting(h)
    run.figures("killed", rows)


def test_network_stall_mid_run(
    cluster: PgCluster,
    table: str,
    tmp_path: Path,
    stall_proxy: StallProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy between the writer and the server stops forwarding (connections
    stay open, nothing is refused or reset) for 10 s: the write in flight times
    out, the outage goes to the spool, and after the stall all 50,000 events
    land once. Default timeouts: the sink takes a write still running after
    ``STALLED_WRITE_SECONDS`` (5 s) for a stall and spools from then on."""
    proxy = stall_proxy
    with caplog.at_level(logging.WARNING):
        run = Run(proxy.dsn(), table, tmp_path, max_queue_size=20_000)
        run.with_fault(proxy.stall, proxy.resume, cluster=cluster)
        h = run.settle(cluster, EVENTS)
    rows = assert_every_event_once(cluster, table)
    assert_accounting(h)
    assert any("did not finish within" in r.getMessage() for r in caplog.records)  # noticed
    run.figures("stalled", rows)


def test_table_dropped_under_the_writer(
    cluster: PgCluster, table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DROP TABLE from another connection while the writer writes: the table is
    created again and every event not in the dropped table lands in the new
    one. (The drop moves the rows it removes to ``<table>_saved`` in the same
    transaction, so the test can count them.)"""
    saved = f"{table}_saved"

    def drop() -> None:
        async def go() -> None:
            import asyncpg

            conn = await asyncpg.connect(cluster.dsn, timeout=10)
            try:
                async with conn.transaction():
                    await conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
                    await conn.execute(f'CREATE TABLE "{saved}" AS SELECT * FROM "{table}"')
                    await conn.execute(f'DROP TABLE "{table}"')
            finally:
                await conn.close()

        asyncio.run(go())

    with caplog.at_level(logging.INFO, logger="llamonitor.storage.postgres"):
        run = Run(cluster.dsn, table, tmp_path)
        run.with_fault(drop, None, seconds=3.0, cluster=cluster)
        old = markers_in(cluster, saved)
        assert old  # the drop took rows with it
        h = run.settle(cluster, EVENTS - len(old))
    created = [r for r in caplog.records if f"created table {table} " in r.getMessage()]
    assert len(created) == 2  # at the start, and again after the drop
    assert_unique_rows(cluster, table)
    new = markers_in(cluster, table)
    both = set(old) & set(new)
    # Every event is in one table or the other; in both only if its batch was
    # being written in two parts when the table went, and the part that had
    # committed (and went with the table) was written again by the retry.
    assert set(old) | set(new) == {marker(i) for i in range(EVENTS)}
    assert len(old) == len(set(old)) and len(both) <= 5_000
    assert len(old) + len(new) - len(both) == EVENTS
    assert_accounting(h, spooled=False)
    run.figures("table dropped", len(new) + len(old) - len(both))
    print(f"[faults] table dropped: {len(old)} rows went with the table, {len(both)} rewritten")


def test_unwritable_spool_while_the_server_is_down(
    cluster: PgCluster, table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool directory cannot be created (its parent is a file; root writes
    through any chmod) and the server is stopped for 3 s: nothing reaches the
    application, one warning, the events that could not be kept are counted as
    failed exactly, and the events recorded while the server was up are all in
    the table, once."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run = Run(cluster.dsn, table, tmp_path, spool_dir=blocker / "spool")
    first = 20_000
    with caplog.at_level(logging.WARNING, logger="llamonitor"):
        run.call(first, "before")
        assert llamonitor.flush(60)
        assert wait_until(lambda: row_count(cluster, table) == first, 30)
        down = threading.Event()
        stopped_at = time.monotonic()
        cluster.stop()
        timer = threading.Timer(3.0, down.set)
        timer.start()
        run.paced(down, first + 10_000, OUTAGE_RATE, "outage")
        timer.join()
        cluster.start()
        run.outage_seconds = time.monotonic() - stopped_at
        run.outage_events = run.produced - first
        # Calls go on until the sink has written again (the next batch is its
        # probe); from then on every event must be written.
        back = threading.Event()

        def watch() -> None:
            wait_until(lambda: not run.health()["sinks"]["postgres"]["outage"], 60, 0.02)
            back.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run.paced(back, EVENTS - 10_000, OUTAGE_RATE, "after")
        watcher.join()
        assert back.is_set() and not run.health()["sinks"]["postgres"]["outage"]
        late = run.produced
        run.call(EVENTS, "after")
        assert llamonitor.flush(60)
        assert llamonitor.shutdown_monitoring(30)
    h = run.writer.health_check()
    assert h["events_received"] == EVENTS
    assert h["events_written"] + h["events_failed"] == EVENTS
    assert h["events_failed"] == h["events_failed_by_reason"]["spool_error"] > 0
    assert set(h["events_failed_by_reason"]) == {"spool_error"}
    assert h["events_dropped"] == h["events_spooled"] == h["events_rejected"] == 0
    warnings = [r for r in caplog.records if "cannot write the spool" in r.getMessage()]
    assert len(warnings) == 1
    assert_unique_rows(cluster, table)
    found = set(markers_in(cluster, table))
    assert len(found) == h["events_written"]
    assert {marker(i) for i in range(first)} <= found  # before the outage
    assert {marker(i) for i in range(late, EVENTS)} <= found  # after the sink was back
    run.figures("unwritable spool", len(found))
    print(f"[faults] unwritable spool: {h['events_failed']} events counted failed")


# -- the store's own fault handling (regression tests) ---------------------------


def batch(start: int, n: int) -> pa.Table:
    """Stored span rows ``e<start>``... (all of session ``s``)."""
    return pa.Table.from_pylist(
        [span_row(i) for i in range(start, start + n)], schema=llamonitor.SCHEMA
    )


async def stalled_writes(backend: StorageBackend, proxy: StallProxy) -> list[float]:
    """Write through ``proxy``, stall it, write twice (each must fail, as a
    transient StoreError naming the timeout), resume, write again (it must
    work): the seconds each failed write took."""
    await backend.initialize()
    took = []
    try:
        await backend.write_table(batch(0, 100))
        proxy.stall()
        for _ in range(2):  # on the pooled connections, then on new ones
            start = time.monotonic()
            with pytest.raises(StoreError) as info:
                await backend.write_table(batch(100, 3000))
            took.append(time.monotonic() - start)
            assert info.value.llamonitor_transient
            assert "TimeoutError" in str(info.value)
        proxy.resume()
        await backend.write_table(batch(100, 3000))
    finally:
        await backend.close()
    return took


def test_a_stalled_connection_times_out_by_default_and_the_pool_recovers(
    cluster: PgCluster, table: str, stall_proxy: StallProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, no timeout in ``options``: the writer's defaults apply. A
    write on a connection that stopped answering fails instead of hanging, as
    does a reconnect through the stalled network; once it flows again the same
    backend writes, and the batch retried after the timeouts is not duplicated."""
    monkeypatch.setattr(postgres_store, "COMMAND_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(postgres_store, "CONNECT_TIMEOUT_SECONDS", 1.0)
    config = MonitorConfig.for_production(stall_proxy.dsn(), table_name=table).storage
    took = asyncio.run(stalled_writes(create_backend(config), stall_proxy))
    assert all(t < 10 for t in took), took
    assert row_count(cluster, table) == 3100
    assert_unique_rows(cluster, table, markers=False)


def test_a_stalled_mysql_connection_times_out_by_default(
    mysql_db: Store,
    make_stall_proxy: Callable[[str, int], StallProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for MySQL/MariaDB (the shared server, reached through a proxy
    of our own: only the proxy stalls). aiomysql has no read timeout, so the
    backend bounds its own work."""
    monkeypatch.setattr(mysql_store, "COMMAND_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(mysql_store, "CONNECT_TIMEOUT_SECONDS", 1.0)
    parts = urlsplit(mysql_db.dsn)
    proxy = make_stall_proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    dsn = f"{parts.scheme}://{user}127.0.0.1:{proxy.port}{parts.path}"
    config = MonitorConfig.for_production(dsn, table_name=mysql_db.table).storage
    took = asyncio.run(stalled_writes(create_backend(config), proxy))
    assert all(t < 10 for t in took), took
    assert mysql_db.count() == 3100


def test_the_pool_recovers_after_the_server_was_killed(cluster: PgCluster, table: str) -> None:
    """After the server is killed and started again, at most one write fails
    (on a pooled connection that died with the server), as a transient
    StoreError; the next works."""
    config = MonitorConfig.for_production(cluster.dsn, table_name=table, pool_size=4).storage

    async def go() -> list[StoreError]:
        backend = create_backend(config)
        await backend.initialize()
        errors: list[StoreError] = []
        try:
            await backend.write_table(batch(0, 4000))  # two parts: two pooled connections
            await asyncio.to_thread(cluster.kill)
            await asyncio.to_thread(cluster.start)
            for _ in range(3):
                try:
                    await backend.write_table(batch(4000, 100))
                    break
                except StoreError as exc:
                    assert exc.llamonitor_transient
                    errors.append(exc)
        finally:
            await backend.close()
        return errors

    errors = asyncio.run(go())
    assert len(errors) <= 1, errors
    assert row_count(cluster, table) == 4100
    assert_unique_rows(cluster, table, markers=False)


def test_a_store_that_refuses_the_credentials_at_start_is_an_outage(
    cluster: PgCluster, table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that does not exist yet: initialize_monitoring returns (fail_silently),
    one warning with the password masked, the events wait in the spool and are
    written once the role exists; with fail_silently=False the start raises."""
    role = "llamonitor_late_role"

    def drop_role() -> None:
        if sql(cluster, f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):
            sql(cluster, f"REASSIGN OWNED BY {role} TO postgres")
            sql(cluster, f"DROP ROLE {role}")

    drop_role()
    dsn = f"postgresql://{role}:hunter2@127.0.0.1:{cluster.port}/postgres"
    storage = llamonitor.StorageConfig(
        backend="postgres", connection_string=dsn, table_name=table, output_dir=tmp_path
    )
    with pytest.raises(llamonitor.ConfigurationError, match="does not exist") as refused:
        llamonitor.initialize_monitoring(MonitorConfig(storage=storage, fail_silently=False))
    assert "hunter2" not in str(refused.value)

    caplog.set_level(logging.WARNING, logger="llamonitor")
    writer = llamonitor.initialize_monitoring(
        MonitorConfig(storage=storage, retry_backoff_seconds=0.05, retry_max_backoff_seconds=0.2)
    )
    try:
        for i in range(100):
            op(marker(i))
        assert llamonitor.flush(10).spooled == 100
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "refuses to work at start" in warnings[0] and "does not exist" in warnings[0]
        assert "hunter2" not in warnings[0] and "***" in warnings[0]
        sql(cluster, f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'hunter2'")
        deadline = time.monotonic() + 30
        while writer.health_check()["events_written"] < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        health = writer.health_check()
        assert health["events_written"] == 100 and health["events_spooled"] == 0
        assert sql(cluster, f'SELECT count(DISTINCT session_id) FROM "{table}"') == [(100,)]
    finally:
        llamonitor.shutdown_monitoring(10)
        drop_role()
