"""A sink's backlog: a primary sink that falls behind spills to its spool instead
of making the queue drop, writes the spill back once it catches up, and events
are dropped (counted) only when both the queue and the spool are full."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import llamonitor
from _helpers import accounted
from llamonitor import (
    InMemoryBackend,
    MonitorConfig,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
)


class SlowStart(InMemoryBackend):
    """A store whose first write takes 0.5 s (a slow moment), then fast ones."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def write_table(self, table: pa.Table) -> None:
        self.writes += 1
        if self.writes == 1:
            time.sleep(0.5)
        await super().write_table(table)


@monitor_llm(operation_name="op", measure_text=True)
def op(i: int) -> str:
    return f"answer number {i}"


def _config(backend: Any, spool: Path, queue: int = 500, **kw: Any) -> MonitorConfig:
    return MonitorConfig(
        storage=StorageConfig(backend=backend, batch_size=50, flush_interval_seconds=0.01),
        max_queue_size=queue,
        spool_enabled=True,
        spool_dir=spool,
        **kw,
    )


def _produce(n: int) -> None:
    for i in range(n):
        op(i)
        if i % 50 == 49:
            time.sleep(0.002)  # batches of about 50 reach the worker one by one


def test_a_sink_that_falls_behind_spills_to_its_spool_and_writes_it_later(
    tmp_path: Path,
) -> None:
    """While the store is slow, batches past its backlog go to the spool, not to
    drops; once it is fast again, the flush writes them: every event once."""
    backend = SlowStart()
    # A queue of 2,000: the spill keeps pace with these calls even when the
    # machine is so loaded that each append to the spool takes a few ms.
    writer = initialize_monitoring(_config(backend, tmp_path / "spool", queue=2_000))
    _produce(5_000)
    assert llamonitor.flush(30)
    h = writer.health_check()
    sink = next(iter(h["sinks"].values()))
    assert h["events_dropped"] == 0, h["dropped"]
    assert sink["spilled_total"] > 0
    assert h["events_written"] == 5_000 and h["events_spooled"] == 0
    ids = [r["event_id"] for r in backend.rows()]
    assert len(ids) == len(set(ids)) == 5_000
    assert accounted(h) == h["events_received"] == 5_000


def test_events_are_dropped_only_when_the_queue_and_the_spool_are_both_full(
    tmp_path: Path,
) -> None:
    """With no room in the spool, the same slow moment fills the queue: what does
    not fit is dropped and counted (queue_full), the rest written, nothing failed."""
    backend = SlowStart()
    writer = initialize_monitoring(_config(backend, tmp_path / "spool", spool_max_bytes=1))
    _produce(5_000)
    assert llamonitor.flush(30)
    h = writer.health_check()
    sink = next(iter(h["sinks"].values()))
    assert sink["spilled_total"] == 0
    assert h["dropped"]["queue_full"] > 0
    assert h["events_failed"] == 0 and h["events_spooled"] == 0
    assert h["events_written"] == len(backend) == 5_000 - h["events_dropped"]
    assert accounted(h) == h["events_received"] == 5_000
