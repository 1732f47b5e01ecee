"""The transport: exact accounting, queue policies, bounds, deadlines, recovery."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import llamonitor
from _helpers import accounted
from llamonitor import (
    InMemoryBackend,
    MonitorConfig,
    StorageBackend,
    StorageConfig,
    _handoff,
    initialize_monitoring,
    monitor_llm,
    shutdown_monitoring,
)
from llamonitor.schema.events import MetricEvent


def _config(backend: Any, **kw: Any) -> MonitorConfig:
    storage = {
        "backend": backend,
        "batch_size": kw.pop("batch_size", 100),
        "flush_interval_seconds": kw.pop("flush_interval_seconds", 0.05),
    }
    kw.setdefault("retry_backoff_seconds", 0.01)
    return MonitorConfig(storage=StorageConfig(**storage), **kw)




class BlockingBackend(StorageBackend):
    """Blocks every write until ``release`` is set (a hung database)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.rows = 0

    async def write_batch(self, events: list[MetricEvent]) -> None:
        raise NotImplementedError

    async def write_table(self, table: pa.Table) -> None:
        self.entered.set()
        self.release.wait()
        self.rows += table.num_rows


class FlakyBackend(InMemoryBackend):
    """Fails the first ``failures`` writes, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def write_table(self, table: pa.Table) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("database unavailable")
        await super().write_table(table)


@monitor_llm(operation_name="op", measure_text=True)
def op(i: int) -> str:
    return f"answer number {i}"


def test_accounting_adds_up_under_concurrent_overload() -> None:
    """With 4 threads overrunning a small queue, received = written + dropped exactly."""
    backend = InMemoryBackend()
    writer = initialize_monitoring(_config(backend, max_queue_size=200, batch_size=50))
    n_threads, per_thread = 4, 5000

    def produce() -> None:
        for i in range(per_thread):
            assert op(i) == f"answer number {i}"

    threads = [threading.Thread(target=produce) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_received"] == n_threads * per_thread
    assert accounted(h) == h["events_received"]
    assert h["events_written"] == len(backend)
    assert h["queue_size"] == h["buffer_size"] == 0
    assert h["dropped"]["queue_full"] == h["events_dropped"]
    assert len({r["event_id"] for r in backend.rows()}) == len(backend)


def _fill(policy: str, n: int = 25, size: int = 10) -> tuple[InMemoryBackend, dict[str, Any]]:
    backend = InMemoryBackend()
    # The worker wakes only on a full batch or the interval: neither happens
    # before the flush, so the queue fills deterministically.
    writer = initialize_monitoring(
        _config(
            backend,
            max_queue_size=size,
            batch_size=10_000,
            flush_interval_seconds=60,
            queue_full_policy=policy,
        )
    )
    for i in range(n):
        op(i)
    health = dict(writer.health_check())
    assert llamonitor.flush(5)
    return backend, health


def test_drop_newest_keeps_the_first_events_and_counts_the_rest() -> None:
    """drop_newest: the queue keeps what came first; each refusal is counted."""
    backend, h = _fill("drop_newest")
    assert h["dropped"]["queue_full"] == 15
    assert sorted(r["text_char_count"] for r in backend.rows()) == sorted(
        len(f"answer number {i}") for i in range(10)
    )
    texts = {r["text_word_count"] for r in backend.rows()}
    assert texts == {3}


def test_drop_oldest_keeps_the_latest_events() -> None:
    """drop_oldest: the queue keeps the newest events and counts the evicted ones."""
    seen: list[int] = []

    @monitor_llm(operation_name="seq")
    def seq(i: int) -> None:
        llamonitor.current_span().set_attribute("i", i)  # type: ignore[union-attr]
        seen.append(i)

    backend = InMemoryBackend()
    writer = initialize_monitoring(
        _config(
            backend,
            max_queue_size=10,
            batch_size=10_000,
            flush_interval_seconds=60,
            queue_full_policy="drop_oldest",
        )
    )
    for i in range(25):
        seq(i)
    assert llamonitor.flush(5)
    kept = sorted(int(r["custom_attributes"].split(":")[1].strip(" }")) for r in backend.rows())
    assert kept == list(range(15, 25))
    assert writer.health_check()["dropped"]["queue_full"] == 15


def test_block_policy_loses_nothing_with_a_working_sink() -> None:
    """block: producers wait for room instead of dropping."""
    backend = InMemoryBackend()
    writer = initialize_monitoring(
        _config(backend, max_queue_size=10, batch_size=5, queue_full_policy="block")
    )
    for i in range(2000):
        op(i)
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_written"] == 2000 == len(backend)
    assert h["events_dropped"] == 0


def test_block_policy_gives_up_after_its_timeout_when_the_sink_hangs() -> None:
    """block with a hung sink: each call waits at most block_timeout, then drops (counted)."""
    backend = BlockingBackend()
    writer = initialize_monitoring(
        _config(
            backend,
            max_queue_size=5,
            batch_size=5,
            queue_full_policy="block",
            block_timeout_seconds=0.05,
        )
    )
    try:
        start = time.monotonic()
        for i in range(60):
            op(i)
        elapsed = time.monotonic() - start
        h = writer.health_check()
        assert h["dropped"]["queue_full"] > 0
        # Generous: every call waits at most 50 ms.
        assert elapsed < 60 * 0.05 + 2
        assert accounted(h) == h["events_received"] == 60
    finally:
        backend.release.set()


def test_long_text_is_measured_on_the_hot_path_and_not_queued() -> None:
    """A 50 MB string costs the queue a few hundred bytes, not 50 MB."""
    big = "word " * 10_000_000

    @monitor_llm(operation_name="big", measure_text=True)
    def produce() -> str:
        return big

    backend = InMemoryBackend()
    initialize_monitoring(
        _config(backend, max_queue_bytes=1_000_000, batch_size=10_000, flush_interval_seconds=60)
    )
    for _ in range(5):
        assert produce() is big
    pipeline = _handoff.ACTIVE
    assert pipeline is not None
    assert len(pipeline._q) == 5
    assert pipeline._bytes < 5 * 1024
    assert all(not isinstance(rec[5], str) for rec in pipeline._q)
    assert llamonitor.flush(10)
    rows = backend.rows()
    assert [r["text_char_count"] for r in rows] == [len(big)] * 5
    assert rows[0]["text_word_count"] == 10_000_000
    assert rows[0]["text_byte_size"] == len(big)


def test_queue_is_bounded_in_bytes_too() -> None:
    """Kept texts count against max_queue_bytes; past it, events drop (counted)."""
    text = "x" * 10_000

    @monitor_llm(operation_name="mid", measure_text=True)
    def produce() -> str:
        return text

    backend = InMemoryBackend()
    writer = initialize_monitoring(
        _config(backend, max_queue_bytes=100_000, batch_size=10_000, flush_interval_seconds=60)
    )
    for _ in range(20):
        produce()
    h = writer.health_check()
    assert h["queue_size"] == 9  # 9 * (10_000 + 512) <= 100_000 < 10 * 10_512
    assert h["dropped"]["queue_full"] == 11


def test_shutdown_returns_by_its_deadline_when_a_sink_hangs() -> None:
    """shutdown(1) with a hung sink returns False within 1.1 s and counts what it left."""
    backend = BlockingBackend()
    writer = initialize_monitoring(_config(backend, batch_size=10))
    try:
        for i in range(50):
            op(i)
        assert backend.entered.wait(5)
        start = time.monotonic()
        ok = shutdown_monitoring(1.0)
        elapsed = time.monotonic() - start
        assert not ok
        assert elapsed < 1.1
        h = writer.health_check()
        assert h["dropped"]["shutdown"] == 50
        assert accounted(h) == 50
        # A second call is safe and immediate.
        start = time.monotonic()
        assert shutdown_monitoring(1.0)
        assert time.monotonic() - start < 0.1
    finally:
        backend.release.set()


def test_flush_returns_by_its_deadline_when_a_sink_hangs() -> None:
    """flush(0.5) with a hung sink returns False within 0.55 s; twice is safe."""
    backend = BlockingBackend()
    initialize_monitoring(_config(backend, batch_size=10))
    try:
        for i in range(20):
            op(i)
        for _ in range(2):
            start = time.monotonic()
            assert not llamonitor.flush(0.5)
            assert time.monotonic() - start < 0.55
    finally:
        backend.release.set()
    assert llamonitor.flush(5)
    assert backend.rows == 20


def test_awaited_and_sync_forms_of_the_lifecycle_functions() -> None:
    """initialize/flush/shutdown/health_check work both awaited and called."""
    import asyncio

    backend = InMemoryBackend()

    async def main() -> None:
        writer = await initialize_monitoring(_config(backend))
        assert writer is llamonitor.MonitoringWriter.get_instance_sync()
        op(1)
        assert await llamonitor.flush(5) is True
        health = await writer.health_check()
        assert health["events_written"] == 1
        assert await shutdown_monitoring(5) is True

    asyncio.run(main())
    assert len(backend) == 1


def test_sink_failures_are_retried_and_never_reach_user_code() -> None:
    """Two failed writes, then success: every event written, retries counted."""
    backend = FlakyBackend(failures=2)
    writer = initialize_monitoring(_config(backend, batch_size=10_000, max_retries=3))
    for i in range(30):
        assert op(i) == f"answer number {i}"
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_written"] == 30 == len(backend)
    assert h["events_retried"] == 60
    assert h["events_failed"] == 0


def test_a_sink_that_always_fails_counts_failed_events() -> None:
    """After max_retries the batch is counted failed; user calls are unaffected."""
    backend = FlakyBackend(failures=10**9)
    writer = initialize_monitoring(_config(backend, batch_size=10_000, max_retries=2))
    for i in range(10):
        assert op(i) == f"answer number {i}"
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_failed"] == 10
    assert h["events_written"] == 0
    assert not h["backend_healthy"]
    assert accounted(h) == 10


def test_a_hung_extra_backend_does_not_stall_the_primary() -> None:
    """Sinks are isolated: the primary store fills while another sink hangs."""
    primary = InMemoryBackend()
    hung = BlockingBackend()
    config = _config(primary, batch_size=10)
    config.extra_backends.append(StorageConfig(backend=hung, flush_interval_seconds=0.05))
    initialize_monitoring(config)
    try:
        for i in range(200):
            op(i)
        deadline = time.monotonic() + 5
        while len(primary) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(primary) == 200
    finally:
        hung.release.set()


def test_a_dead_worker_is_restarted_on_the_next_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the worker thread dies, the next event starts a new one; accounting holds."""
    from llamonitor.transport import _pipeline

    backend = InMemoryBackend()
    writer = initialize_monitoring(_config(backend, batch_size=1))
    real = _pipeline.records_to_table
    calls = {"n": 0}

    def dying(records: Any, pid: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit("worker killed")  # not an Exception: ends the thread
        return real(records, pid)

    monkeypatch.setattr(_pipeline, "records_to_table", dying)
    # The thread's death is the point of the test, not a warning.
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    op(0)
    deadline = time.monotonic() + 5
    pipeline = _handoff.ACTIVE
    assert pipeline is not None
    while pipeline._worker_alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pipeline._worker_alive
    op(1)
    assert llamonitor.flush(5)
    h = writer.health_check()
    assert h["worker_restarts"] == 1
    assert len(backend) == 1  # the event in the dead worker's hands is lost ...
    assert h["dropped"]["worker_died"] == 1  # ... and accounted for, not silently
    assert shutdown_monitoring(5)
    assert accounted(writer.health_check()) == 2


def test_llamonitor_log_records_never_feed_back_into_monitoring(
    internal_errors: list[Any],
) -> None:
    """A monitored log handler is not recorded for llamonitor's own log records."""

    @monitor_llm(operation_name="log_sink")
    def log_sink(message: str) -> None:
        pass

    class MonitoredHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_sink(record.getMessage())

    class Broken(llamonitor.MetricCollector):
        metric_type = "broken"  # type: ignore[assignment]

        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> None:
            raise RuntimeError("collector bug")

    @monitor_llm(operation_name="work", collectors=[Broken()])
    def work() -> int:
        return 1

    handler = MonitoredHandler()
    logger = logging.getLogger("llamonitor")
    logger.addHandler(handler)
    try:
        backend = FlakyBackend(failures=1)  # logs a warning from the sink thread
        initialize_monitoring(_config(backend))
        assert work() == 1  # logs an internal-error warning on this thread
        log_sink("from the application")  # recorded: the user's own call
        assert llamonitor.flush(5)
    finally:
        logger.removeHandler(handler)
    names = sorted(r["operation_name"] for r in backend.rows())
    assert names == ["log_sink", "work"]
    assert [k for k, _ in internal_errors] == ["collector:broken"]
    internal_errors.clear()


def test_durations_use_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wall clock jumping back an hour mid-call does not change the duration."""
    backend = InMemoryBackend()
    initialize_monitoring(_config(backend))
    real_time_ns = time.time_ns

    @monitor_llm(operation_name="sleepy")
    def sleepy() -> None:
        monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() - 3600 * 10**9)
        monkeypatch.setattr(time, "time", lambda: real_time_ns() / 1e9 - 3600)
        time.sleep(0.02)

    sleepy()
    monkeypatch.undo()
    assert llamonitor.flush(5)
    (row,) = backend.rows()
    assert 20 <= row["duration_ms"] < 2000


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_initialize_shutdown_cycles_leak_no_threads_files_or_memory(tmp_path: Path) -> None:
    """500 initialize/shutdown cycles (with a write each) leave nothing behind:
    no thread of theirs, no file descriptor, no memory kept per cycle."""
    config = MonitorConfig(
        storage=StorageConfig(backend="parquet", output_dir=tmp_path, flush_interval_seconds=0.05)
    )

    def cycle() -> None:
        initialize_monitoring(config)
        op(1)
        assert shutdown_monitoring(5)

    for _ in range(20):  # warm up caches, imports, pyarrow pools
        cycle()
    gc.collect()
    threads, fds = set(threading.enumerate()), _fds()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(500):
        cycle()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    diffs = after.compare_to(before, "lineno")
    # One block that grew once is a table resized (the interpreter's interned
    # strings, after big libraries were imported by earlier tests), not memory
    # kept per cycle: a leak over 500 cycles is many blocks.
    growth = sum(s.size_diff for s in diffs if s.count_diff > 1)
    # Threads and descriptors of earlier tests in this process may end meanwhile:
    # a leak is a thread that was not there before, or more descriptors.
    assert [t.name for t in set(threading.enumerate()) - threads] == []
    assert _fds() <= fds
    top = "\n".join(str(d) for d in diffs[:8])
    assert growth < 1024 * 1024, f"grew {growth} bytes over 500 cycles; most:\n{top}"
    rows = sum(1 for _ in tmp_path.rglob("*.parquet"))
    assert rows == 520


def test_records_in_the_workers_hands_count_against_the_queue_bound() -> None:
    """With a hung sink, queued plus in-hand records never exceed max_queue_size."""
    backend = BlockingBackend()
    writer = initialize_monitoring(_config(backend, max_queue_size=100, batch_size=10))
    pipeline = _handoff.ACTIVE
    assert pipeline is not None
    try:
        for i in range(2000):
            op(i)
            assert len(pipeline._q) + pipeline._inflight <= 100
        h = writer.health_check()
        assert h["dropped"]["queue_full"] > 0
        assert accounted(h) == 2000
    finally:
        backend.release.set()


def test_a_stream_finalized_by_the_gc_inside_our_lock_does_not_deadlock() -> None:
    """The garbage collector may close a decorated stream while the lock is held."""
    import gc

    backend = InMemoryBackend()
    initialize_monitoring(_config(backend))
    pipeline = _handoff.ACTIVE
    assert pipeline is not None

    @monitor_llm(operation_name="stream")
    def stream() -> Any:
        yield 1
        yield 2

    def make_garbage() -> None:
        gen = stream()
        next(gen)
        holder: list[Any] = [gen]
        holder.append(holder)  # a cycle: only the collector frees it

    done = threading.Event()

    def collect_while_locked() -> None:
        make_garbage()
        with pipeline._lock:  # as the worker does in _drain
            gc.collect()
        done.set()

    t = threading.Thread(target=collect_while_locked, daemon=True)
    t.start()
    assert done.wait(5), "deadlocked"
    assert llamonitor.flush(5)
    (row,) = backend.rows()
    assert row["stream_item_count"] == 1
    assert '"stream_closed_early": true' in row["custom_attributes"]


class SlowBackend(InMemoryBackend):
    async def write_table(self, table: pa.Table) -> None:
        time.sleep(0.3)
        await super().write_table(table)


def test_a_missed_shutdown_deadline_counts_each_event_once() -> None:
    """Slow writes past the deadline: counters still add up, nothing negative."""
    backend = SlowBackend()
    writer = initialize_monitoring(_config(backend, batch_size=5, flush_interval_seconds=0.01))
    for i in range(100):
        op(i)
        if i % 5 == 0:
            time.sleep(0.005)  # let the worker cut several batches
    assert not shutdown_monitoring(0.5)
    time.sleep(2.5)  # the abandoned threads finish what they were doing
    h = writer.health_check()
    assert h["buffer_size"] >= 0
    assert h["events_received"] == 100
    assert accounted(h) == 100


class CancellingBackend(StorageBackend):
    """An async driver that raises CancelledError (a BaseException) on write."""

    async def write_batch(self, events: list[MetricEvent]) -> None:
        raise NotImplementedError

    async def write_table(self, table: pa.Table) -> None:
        import asyncio

        raise asyncio.CancelledError


def test_a_base_exception_from_a_backend_is_a_failed_write_not_a_dead_sink() -> None:
    """CancelledError from a driver: retried, then counted failed; flush and shutdown return."""
    writer = initialize_monitoring(_config(CancellingBackend(), max_retries=1))
    threads = threading.active_count()
    for i in range(10):
        op(i)
    assert llamonitor.flush(5)
    h = writer.health_check()
    assert h["events_failed"] == 10
    assert not h["backend_healthy"]
    for i in range(5):
        op(i)
    assert shutdown_monitoring(5)
    assert accounted(writer.health_check()) == 15
    assert threading.active_count() <= threads - 2  # worker and sink threads are gone


def test_a_sink_that_cannot_start_after_fork_fails_its_events_and_flush_returns(
    tmp_path: Path,
) -> None:
    """A dead sink (its backend failed to start) counts events failed; flush does not wait."""
    from llamonitor.transport._sinks import SinkRunner

    class NoStart(InMemoryBackend):
        async def initialize(self) -> None:
            raise ConnectionError("database unreachable")

    runner = SinkRunner(
        "nostart",
        NoStart(),
        primary=True,
        max_retries=0,
        backoff_seconds=0.01,
        max_backoff_seconds=0.01,
    )
    runner.start(wait=False)  # as after a fork: nobody waits for initialize
    deadline = time.monotonic() + 5
    while runner.health()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.put(pa.table({"x": [1, 2, 3]}), 3)
    from llamonitor.transport._sinks import Marker

    marker = Marker(1)
    start = time.monotonic()
    runner.put_marker(marker)
    assert marker.event.wait(1) and time.monotonic() - start < 0.5
    assert not marker.ok
    h = runner.health()
    assert h["failed"] == 3 and not h["healthy"] and not h["running"]
    assert "database unreachable" in (h["last_error"] or "")


BURST = """
import asyncio, atexit, json, os, threading
from llamonitor import MonitorConfig, initialize_monitoring, monitor_llm

TEXT = ("word " * 205)[:1012]

@monitor_llm(operation_name="burst", measure_text=True)
def call(i):
    return TEXT + f"{i:012d}"  # a fresh 1 KB text, as an LLM client returns

@monitor_llm(operation_name="burst_async", measure_text=True)
async def acall(i):
    return TEXT + f"{i:012d}"

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def report():  # registered before llamonitor's exit flush, so it runs after it
    h = writer.health_check()
    print(json.dumps({"dropped": h["dropped"], "growth": peak[0] - base}))

atexit.register(report)
writer = initialize_monitoring(MonitorConfig())  # the defaults, in the cwd
base = rss()
peak = [base]
done = threading.Event()

def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], rss())

threading.Thread(target=sample, daemon=True).start()

def produce(k):
    for i in range(20_000):
        call(k * 20_000 + i)

n_threads = int(os.environ["BURST_THREADS"])  # each 20,000 calls; asyncio the rest
threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
for t in threads:
    t.start()

async def main():
    for start in range(n_threads * 20_000, 100_000, 1000):
        await asyncio.gather(*(acall(i) for i in range(start, start + 1000)))

asyncio.run(main())
for t in threads:
    t.join()
# exits without shutdown
"""


@pytest.mark.parametrize("threads", [4, 0], ids=["threads-and-asyncio", "asyncio-alone"])
def test_the_defaults_absorb_a_burst_of_100k_spans_from_threads_and_asyncio(
    tmp_path: Path, threads: int
) -> None:
    """100,000 spans of 1 KB text from 4 threads and asyncio at once (or asyncio
    alone), in a program that exits without shutdown: all written, none dropped,
    memory growth < 128 MB."""
    import json
    import subprocess
    import sys

    import duckdb

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env["BURST_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-c", BURST], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sum(report["dropped"].values()) == 0, report
    rows = duckdb.sql(
        "select count(*), count(distinct event_id), sum(text_char_count) "
        f"from read_parquet('{tmp_path}/monitoring_data/**/*.parquet')"
    ).fetchall()
    assert rows == [(100_000, 100_000, 100_000 * 1024)]
    assert report["growth"] < 128 * 2**20, report


def test_the_defaults_keep_every_span_of_a_thread_calling_as_fast_as_it_can(
    tmp_path: Path,
) -> None:
    """200,000 calls in a tight loop with the default configuration: every span written."""
    writer = initialize_monitoring(MonitorConfig(storage=StorageConfig(output_dir=tmp_path)))
    for i in range(200_000):
        op(i)
    assert shutdown_monitoring(60)
    h = writer.health_check()
    assert h["events_dropped"] == 0, h["dropped"]
    assert h["events_written"] == 200_000
    assert sum(1 for _ in tmp_path.rglob("*.parquet"))


def test_an_explicit_queue_size_is_honoured_or_refused_naming_max_queue_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """max_queue_size alone: the byte bound follows it (1 KB of text an event), so
    60,000 spans of 1 KB text are all held (the default 64 MiB would cap the queue
    near 43,000). With both set, a size that cannot fit is refused, naming
    max_queue_bytes; a bound that fits is taken."""
    text = "x" * 1024

    @monitor_llm(measure_text=True)
    def answer() -> str:
        return text

    for source in ("argument", "environment"):
        backend = InMemoryBackend()
        if source == "environment":
            monkeypatch.setenv("LLMOPS_MAX_QUEUE_SIZE", "60000")
            config = _config(backend, batch_size=10**9, flush_interval_seconds=3600)
        else:
            config = _config(
                backend, max_queue_size=60_000, batch_size=10**9, flush_interval_seconds=3600
            )
        writer = initialize_monitoring(config)
        for _ in range(60_000):
            answer()
        h = writer.health_check()
        assert h["queue_size"] == 60_000 and h["events_dropped"] == 0, (source, h["dropped"])
        assert llamonitor.flush(60)
        assert len(backend) == 60_000
        shutdown_monitoring(10)
    monkeypatch.delenv("LLMOPS_MAX_QUEUE_SIZE")
    with pytest.raises(llamonitor.ConfigurationError, match=r"^max_queue_bytes: .*200,000"):
        initialize_monitoring(
            MonitorConfig(
                storage={"backend": "memory"}, max_queue_size=200_000, max_queue_bytes=2**26
            )
        )
    backend = InMemoryBackend()
    writer = initialize_monitoring(
        _config(
            backend,
            max_queue_size=200_000,
            max_queue_bytes=200_000 * 1024,
            batch_size=10**9,
            flush_interval_seconds=3600,
        )
    )
    for i in range(150_000):  # short texts: about 530 bytes each, by the queue's count
        op(i)
    h = writer.health_check()
    assert h["queue_size"] == 150_000 and h["events_dropped"] == 0
    assert llamonitor.flush(60)
    assert len(backend) == 150_000


def test_past_the_soft_mark_a_thread_waits_for_the_worker_but_an_event_loop_never_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the worker converts, a plain thread past the soft mark gives it a
    moment (SOFT_WAIT_SECONDS); a thread running an asyncio loop only hands it the
    GIL (LOOP_WAIT_SECONDS), so the loop's tasks never stall for long."""
    import asyncio

    from llamonitor import Deferred, MetricCollector
    from llamonitor.transport import _pipeline

    monkeypatch.setattr(_pipeline, "SOFT_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(_pipeline, "STALL_SECONDS", 60.0)
    converting = threading.Event()
    release = threading.Event()

    def hold(_: object) -> dict[str, Any]:
        converting.set()
        release.wait(30)
        return {}

    class Holding(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"hold": Deferred(hold, result)} if result == "first" else {}

        @property
        def metric_type(self) -> str:
            return "hold"

    @monitor_llm(collectors=[Holding()])
    def call(x: str) -> str:
        return x

    @monitor_llm
    async def acall() -> int:
        return 1

    backend = InMemoryBackend()
    writer = initialize_monitoring(_config(backend, batch_size=4, max_queue_size=400))
    try:
        call("first")
        for _ in range(3):
            call("wake")  # a batch: the worker takes it and holds in the Deferred
        assert converting.wait(10)
        for _ in range(100):  # a quarter of the queue: the soft mark
            call("fill")

        async def many() -> float:
            longest = 0.0
            for _ in range(20):
                start = time.monotonic()
                await acall()
                longest = max(longest, time.monotonic() - start)
            return longest

        in_loop = asyncio.run(many())
        start = time.monotonic()
        call("thread")
        on_thread = time.monotonic() - start
        assert on_thread >= 0.25  # it waited for the worker
        assert in_loop < 0.15  # none of the 20 calls waited 0.3 s
        release.set()
        assert shutdown_monitoring(30)
        h = writer.health_check()
        assert h["events_written"] == 125 and h["events_dropped"] == 0
    finally:
        release.set()
        shutdown_monitoring(5)


def test_get_instance_with_the_running_config_keeps_the_writer() -> None:
    """Seed 000's ``MonitoringWriter.get_instance(config)``: the same config gives the
    running writer, even when its queue bounds were fitted at start."""
    from llamonitor import MonitoringWriter

    config = _config(InMemoryBackend(), max_queue_size=100_000)
    first = MonitoringWriter.get_instance(config)
    try:
        assert MonitoringWriter.get_instance(config) is first
        assert first.config is config
    finally:
        shutdown_monitoring(5)
