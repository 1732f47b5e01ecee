"""``stop(timeout)`` and ``flush(timeout)`` keep one deadline for everything:
the sources that feed the pipeline (the OTel span processor) and the pipeline
itself share it, as OpenTelemetry's BatchProcessor shutdown does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import llamonitor
from llamonitor import MonitorConfig, StorageConfig, _handoff, monitor_llm

TIMEOUT = 2.0


class BlockedBackend:
    """A store whose every write waits for ``release`` (a store that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows = 0

    def initialize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write_table(self, table: Any) -> None:
        self.release.wait(30)
        self.rows += table.num_rows


@pytest.fixture
def blocked() -> Iterator[tuple[BlockedBackend, threading.Event, list[float]]]:
    """Monitoring into a hung store, with a feeder that is stuck too (it uses
    all the time it is given, as a span processor waiting on its lock does)."""
    backend = BlockedBackend()
    stuck = threading.Event()
    given: list[float] = []

    def feeder(timeout: float) -> bool:
        given.append(timeout)
        return stuck.wait(timeout)

    llamonitor.initialize_monitoring(
        MonitorConfig(
            storage=StorageConfig(backend=backend, batch_size=1, flush_interval_seconds=0.01),
            spool_enabled=False,
            max_retries=0,
        )
    )
    _handoff.feeders.append(feeder)
    try:
        yield backend, stuck, given
    finally:
        _handoff.feeders.remove(feeder)
        stuck.set()
        backend.release.set()


def _record_one() -> None:
    @monitor_llm(operation_name="stuck")
    def call() -> str:
        return "x"

    call()


def test_stop_returns_by_its_timeout_with_a_stuck_feeder_and_a_hung_store(blocked: Any) -> None:
    """stop(2 s) with both the feeder and the store hanging returns well before
    twice the timeout (each used to get the whole timeout), reporting not done."""
    _backend, _, given = blocked
    _record_one()
    t0 = time.monotonic()
    done = llamonitor.shutdown_monitoring(TIMEOUT)
    elapsed = time.monotonic() - t0
    assert not done  # the hung store could not be written in time
    assert given and given[0] <= TIMEOUT
    assert elapsed < 1.9 * TIMEOUT, elapsed  # 2 x TIMEOUT (or more) is the bug


def test_flush_returns_by_its_timeout_with_a_stuck_feeder_and_a_hung_store(blocked: Any) -> None:
    """flush(2 s) shares one deadline between the feeder and the pipeline."""
    _record_one()
    t0 = time.monotonic()
    done = llamonitor.flush(TIMEOUT)
    elapsed = time.monotonic() - t0
    assert not done
    assert elapsed < 1.9 * TIMEOUT, elapsed


def test_a_feeder_gets_only_what_is_left_of_the_deadline(blocked: Any) -> None:
    """Two stuck feeders: the second is given what the first left (about 0 s),
    not a fresh timeout."""
    _, stuck, given = blocked

    def second(timeout: float) -> bool:
        given.append(timeout)
        return stuck.wait(timeout)

    _handoff.feeders.append(second)
    try:
        llamonitor.flush(TIMEOUT)
    finally:
        _handoff.feeders.remove(second)
    assert len(given) == 2
    assert given[1] < 0.5 * TIMEOUT
