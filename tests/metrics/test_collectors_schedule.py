"""The scheduler runs each collector on its own interval (driven by an
injected clock), isolates a failing one, and writes points to the store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from llamonitor.metrics import (
    CollectorScheduler,
    Metric,
    MetricCollector,
    PointBuffer,
    StoreSink,
    configure,
    configure_collectors,
    read_points,
    stop_collectors,
)
from llamonitor.metrics._schema import METRIC_SCHEMA
from llamonitor.schema.config import StorageConfig


class Ticker(MetricCollector):
    """Counts its collections."""

    name = "ticker"

    def __init__(self, name: str = "ticker") -> None:
        self.name = name  # type: ignore[misc]
        self.calls = 0

    def collect(self) -> list[Metric]:
        self.calls += 1
        return [Metric.counter("ticks_total", self.calls, {"who": self.name})]

    def get_metadata(self) -> dict[str, Any]:
        return {"name": self.name}


class Broken(MetricCollector):
    name = "broken"

    def collect(self) -> list[Metric]:
        raise RuntimeError("device gone")

    def get_metadata(self) -> dict[str, Any]:
        return {"name": self.name}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_each_collector_runs_on_its_own_interval() -> None:
    """Over 60 s of injected time, a 10-s and a 30-s collector run 7 and 3 times."""
    clock, sink = Clock(), PointBuffer()
    s = CollectorScheduler(sink, clock=clock)
    fast, slow = Ticker("fast"), Ticker("slow")
    s.add(fast, 10)
    s.add(slow, 30)
    while clock.t <= 1060:
        wait = s.run_due()
        clock.t += min(wait, 1.0) or 1.0
    assert (fast.calls, slow.calls) == (7, 3)
    assert sink.table().num_rows == 10
    assert sink.table().schema == METRIC_SCHEMA


def test_missed_ticks_are_skipped_not_bursted() -> None:
    """After a 100-s pause a 10-s collector runs once, and the skipped ticks are counted."""
    clock = Clock()
    s = CollectorScheduler(PointBuffer(), clock=clock)
    t = Ticker()
    s.add(t, 10)
    s.run_due()
    clock.t += 100
    s.run_due()
    s.run_due()
    assert t.calls == 2
    assert s.stats()["ticker"].skipped_ticks == 9


def test_a_failing_collector_is_counted_logged_once_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collector that raises never stops the others, and is logged once."""
    clock, sink = Clock(), PointBuffer()
    s = CollectorScheduler(sink, clock=clock)
    ok = Ticker()
    s.add(Broken(), 10)
    s.add(ok, 10)
    with caplog.at_level(logging.WARNING, logger="llamonitor.metrics"):
        for _ in range(3):
            s.run_due()
            clock.t += 10
    assert ok.calls == 3
    st = s.stats()["broken"]
    assert st.errors == 3 and st.last_error == "RuntimeError: device gone"
    assert sum("broken" in r.getMessage() for r in caplog.records) == 1


def test_a_failing_sink_is_counted() -> None:
    """A sink that raises is counted; collection goes on."""
    def sink(table: pa.Table) -> None:
        raise OSError("disk full")

    s = CollectorScheduler(sink, clock=Clock())
    s.add(Ticker(), 10)
    s.run_due()
    assert s.sink_errors == 1


def test_collected_points_reach_the_metric_store(tmp_path: Path) -> None:
    """On its thread, the collectors' points are written to the Parquet point store."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    configure(storage=storage, interval_seconds=60)
    t = Ticker()
    s = configure_collectors(collectors=[(t, 0.05)])
    try:
        import time

        deadline = time.monotonic() + 10
        while t.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop_collectors()
    from llamonitor.metrics import flush

    assert flush() >= 3
    points = read_points(storage)
    ticks = points.filter(pa.compute.equal(points.column("name"), "ticks_total"))
    assert ticks.num_rows >= 3
    assert set(ticks.column("source").to_pylist()) == {"ticker"}
    assert not s.running


def test_no_store_means_points_are_counted_not_kept() -> None:
    """Without a store the default sink drops points and counts them."""
    sink = StoreSink()
    s = CollectorScheduler(sink, clock=Clock())
    s.add(Ticker(), 10)
    s.run_due()
    assert sink.unstored_points == 1
