"""The metrics worker: points reach the configured store (or the monitor's),
a failing store never raises into the application and loses nothing it can keep,
and a forked child counts on its own."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pyarrow.compute as pc
import pytest

import llamonitor
from llamonitor import metrics
from llamonitor.metrics import _worker, read_points
from llamonitor.metrics._registry import REGISTRY
from llamonitor.schema.config import MonitorConfig, StorageConfig


@pytest.fixture
def default_metric(name: str):  # type: ignore[no-untyped-def]
    """A counter in the process's registry, removed afterwards."""
    c = metrics.counter(name, "a test counter", labels=["k"])
    yield c
    REGISTRY.unregister(name)


def _values(storage: StorageConfig, name: str) -> list[float]:
    t = read_points(storage, name=name)
    return t.column("value").to_pylist()


def test_flush_writes_the_instruments_to_the_configured_store(
    any_store: StorageConfig, name: str, default_metric
) -> None:
    """configure(storage=...) then flush(): the counter's points are in the store."""
    metrics.configure(storage=any_store, interval_seconds=3600)
    default_metric.labels(k="x").inc(5)
    assert metrics.flush() > 0
    assert _values(any_store, name) == [0.0, 5.0]


def test_the_worker_follows_the_running_monitor(tmp_path: Path, name: str, default_metric) -> None:
    """Without configure(), points go to initialize_monitoring's storage, on its interval."""
    out = tmp_path / "store"
    llamonitor.initialize_monitoring(
        MonitorConfig(storage=StorageConfig(output_dir=out), metrics_interval_seconds=0.05)
    )
    default_metric.labels(k="y").inc()
    w = _worker.worker()
    w._wake.set()
    storage = StorageConfig(output_dir=out)
    for _ in range(200):
        if read_points(storage, name=name).num_rows:
            break
        w._wake.set()
        import time

        time.sleep(0.05)
    assert 1.0 in _values(storage, name)


def test_a_failing_store_is_retried_and_keeps_the_points(
    tmp_path: Path, name: str, default_metric
) -> None:
    """A store that fails: no exception reaches the caller, the points stay pending,
    and are written (none lost) once the store works again."""
    out = tmp_path / "store"
    out.mkdir()
    (out / "metrics").write_text("a file where the points' directory should be")
    storage = StorageConfig(output_dir=out)
    metrics.configure(storage=storage, interval_seconds=3600, max_retries=1)
    default_metric.labels(k="z").inc(2)
    assert metrics.flush() == 0  # failed, quietly
    h = metrics.health()
    assert h["failed_writes"] >= 1 and h["retried"] >= 1 and h["pending"] > 0
    default_metric.labels(k="z").inc(3)
    (out / "metrics").unlink()
    assert metrics.flush() > 0
    assert _values(storage, name) == [0.0, 2.0, 5.0]
    assert metrics.health()["pending"] == 0


def _child(name: str, out: str, conn) -> None:  # type: ignore[no-untyped-def]
    c = metrics.counter(name, labels=["k"])
    c.labels(k="x").inc(10)
    conn.send((c.labels(k="x").get(), metrics.flush()))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_counts_from_zero_under_its_own_source(
    tmp_path: Path, name: str, default_metric
) -> None:
    """After fork() the child's counter starts at 0 and writes as its own source."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    metrics.configure(storage=storage, interval_seconds=3600)
    default_metric.labels(k="x").inc(7)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(name, str(tmp_path), child))
    p.start()
    value, written = parent.recv()
    p.join(30)
    assert value == 10 and written > 0
    metrics.flush()
    t = read_points(storage, name=name)
    last = {}
    for r in t.to_pylist():
        last[r["source"]] = r["value"]
    assert sorted(last.values()) == [7.0, 10.0]
    assert f"instruments:{os.getpid()}" in last and f"instruments:{p.pid}" in last
    assert pc.count_distinct(t.column("source")).as_py() == 2
