"""Exporters (``MonitorConfig.exporters``) are sinks like the storage backends:
fed every batch, isolated, retried, and spooled when their receiver is down."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pyarrow as pa
import pytest

import llamonitor
from llamonitor import ConfigurationError, ExporterConfig, MonitorConfig, monitor_llm


class _Receiver:
    """What a remote receiver got; ``down`` makes every write fail."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.down = threading.Event()

    def rows(self) -> list[dict[str, Any]]:
        return [r for t in self.tables for r in t.to_pylist()]


class _Backend:
    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver

    def write_table(self, table: pa.Table) -> None:
        if self.receiver.down.is_set():
            raise ConnectionRefusedError("receiver down")
        self.receiver.tables.append(table)


class RecordingExporter(ExporterConfig):
    kind: ClassVar[str] = "recording"
    receiver: Any = None
    target: str = "here"

    def create_backend(self) -> Any:
        return _Backend(self.receiver)

    def spool_identity(self) -> dict[str, Any]:
        return {"target": self.target}


@monitor_llm("exported")
def _work(i: int) -> int:
    return i


def test_every_span_reaches_the_exporter_beside_storage(tmp_path: Any) -> None:
    receiver = _Receiver()
    config = MonitorConfig.for_local_dev(tmp_path, exporters=[RecordingExporter(receiver=receiver)])
    writer = llamonitor.initialize_monitoring(config)
    try:
        for i in range(50):
            _work(i)
        assert writer.flush(10)
        health = writer.health_check()
    finally:
        llamonitor.shutdown_monitoring()
    assert len(receiver.rows()) == 50
    assert {r["operation_name"] for r in receiver.rows()} == {"exported"}
    assert "recording" in health["sinks"]


def test_a_receiver_that_is_down_loses_nothing(tmp_path: Any) -> None:
    receiver = _Receiver()
    receiver.down.set()
    config = MonitorConfig.for_local_dev(
        tmp_path, exporters=[RecordingExporter(receiver=receiver)], max_retries=0
    )
    llamonitor.initialize_monitoring(config)
    try:
        for i in range(20):
            _work(i)
        llamonitor.flush(10)
        assert receiver.rows() == []
        receiver.down.clear()
        for i in range(20, 30):
            _work(i)
        deadline = threading.Event()
        for _ in range(100):
            llamonitor.flush(10)
            if len(receiver.rows()) >= 30:
                break
            deadline.wait(0.1)
    finally:
        llamonitor.shutdown_monitoring()
    seen = sorted(r["event_id"] for r in receiver.rows())
    assert len(seen) == 30 and len(set(seen)) == 30


def test_an_exporter_without_a_backend_is_named_in_the_error(tmp_path: Any) -> None:
    class Broken(ExporterConfig):
        kind: ClassVar[str] = "broken"

        def create_backend(self) -> Any:
            return object()

    config = MonitorConfig.for_local_dev(tmp_path, exporters=[Broken()])
    with pytest.raises(ConfigurationError, match=r"exporters\[0\]"):
        llamonitor.initialize_monitoring(config)


class _SlowBackend(_Backend):
    def write_table(self, table: pa.Table) -> None:
        threading.Event().wait(0.2)
        super().write_table(table)


class SlowExporter(RecordingExporter):
    kind: ClassVar[str] = "slow"

    def create_backend(self) -> Any:
        return _SlowBackend(self.receiver)


def test_a_burst_faster_than_the_receiver_is_spilled_not_dropped(tmp_path: Any) -> None:
    receiver = _Receiver()
    config = MonitorConfig.for_local_dev(
        tmp_path, exporters=[SlowExporter(receiver=receiver)], max_queue_size=100_000
    )
    config.storage.batch_size = 200
    config.storage.flush_interval_seconds = 0.01
    writer = llamonitor.initialize_monitoring(config)
    try:
        for i in range(6_000):
            _work(i)
            if i % 200 == 199:
                threading.Event().wait(0.01)  # one batch at a time reaches the sinks
        assert writer.flush(60)
        sink = writer.health_check()["sinks"]["slow"]
    finally:
        llamonitor.shutdown_monitoring()
    assert sink["dropped"] == 0, sink
    assert len({r["event_id"] for r in receiver.rows()}) == 6_000
