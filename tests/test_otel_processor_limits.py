"""``llamonitor.otel.SpanProcessor`` against a pipeline that cannot keep up, and
its content policy before any cut:

- under the ``block`` queue policy with a long ``block_timeout_seconds``,
  ``force_flush(timeout_millis)`` and ``shutdown(timeout_millis)`` return by
  their deadline (False / ``shutdown_ok`` False), keep or count every span, and
  once the store is back the kept spans all land, each once;
- with capture on, a secret that straddles ``content_max_chars`` is redacted
  before the text is cut (no fragment of it is stored).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import llamonitor
from llamonitor import MonitorConfig, StorageConfig
from llamonitor.llm import _settings as llm_settings
from llamonitor.otel import SpanProcessor, _bridge

SPANS = 400  # more than the queue, the worker and the store's backlog hold
JOIN_SECONDS = 60.0  # far under what the old hand-over took (30 s a row), far over the deadline


class GatedBackend:
    """A store that keeps rows, each write waiting until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.ids: list[str] = []

    def initialize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write_table(self, table: Any) -> None:
        self.gate.wait(120)
        self.ids.extend(table.column("span_id").to_pylist())


@pytest.fixture
def blocked() -> Iterator[tuple[Any, SpanProcessor, GatedBackend]]:
    """Monitoring into a gated store with a 20-row queue under ``block`` (30 s),
    a TracerProvider feeding it, and ``SPANS`` spans ended."""
    _bridge.reset()
    backend = GatedBackend()
    llamonitor.initialize_monitoring(MonitorConfig(
        storage=StorageConfig(backend=backend, batch_size=5, flush_interval_seconds=0.05),
        max_queue_size=20, queue_full_policy="block", block_timeout_seconds=30.0,
        spool_enabled=False,
    ))
    provider = TracerProvider()
    processor = SpanProcessor(interval_seconds=0.05, batch_size=50)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    for i in range(SPANS):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    yield provider, processor, backend
    backend.gate.set()
    processor.shutdown()
    _bridge.reset()


def _in_thread(call: Any) -> list[Any]:
    """Run ``call`` on a thread; its result once it returns (it must, in time)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(JOIN_SECONDS)
    assert not thread.is_alive(), "the call did not return by its deadline"
    return out


def _wait_for(condition: Any) -> bool:
    deadline = time.monotonic() + JOIN_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_force_flush_returns_false_at_its_deadline_and_keeps_the_spans(
    blocked: tuple[Any, SpanProcessor, GatedBackend],
) -> None:
    """The store hangs and the queue is full: a 300 ms force_flush returns False
    (it does not wait out 30 s a row); nothing is dropped, and once the store
    is back a flush hands everything over and every span lands once."""
    _, processor, backend = blocked
    (ok,) = _in_thread(lambda: processor.force_flush(300))
    assert ok is False
    stats = processor.stats()
    assert sum(stats["dropped"].values()) == 0
    assert stats["queued"] + stats["handed"] == SPANS

    backend.gate.set()
    assert processor.force_flush(60_000)
    assert llamonitor.flush(60)
    assert processor.stats()["handed"] == SPANS
    assert len(backend.ids) == len(set(backend.ids)) == SPANS


def test_shutdown_returns_by_its_deadline_and_counts_what_it_could_not_hand_over(
    blocked: tuple[Any, SpanProcessor, GatedBackend],
) -> None:
    """The store hangs: shutdown(500 ms) returns by then; the spans it could not
    hand over are counted (``shutdown``), none is lost from the accounting."""
    _, processor, backend = blocked
    _in_thread(lambda: processor.shutdown(timeout_millis=500))
    assert processor.shutdown_ok is False
    # The processor's thread, if it was waiting for room, lets go of its rows soon.
    assert _wait_for(lambda: processor.stats()["queued"] == 0)
    stats = processor.stats()
    assert stats["dropped"]["shutdown"] > 0
    assert stats["handed"] + sum(stats["dropped"].values()) == SPANS
    backend.gate.set()
    assert llamonitor.flush(60)
    assert len(backend.ids) == len(set(backend.ids)) == stats["handed"]


def test_shutdown_with_room_hands_everything_over(
    blocked: tuple[Any, SpanProcessor, GatedBackend],
) -> None:
    """With the store writing, shutdown hands every span over in time."""
    _, processor, backend = blocked
    backend.gate.set()
    processor.shutdown(timeout_millis=60_000)
    assert processor.shutdown_ok is True
    assert llamonitor.flush(60)
    assert len(set(backend.ids)) == SPANS


def test_capture_on_redacts_the_whole_text_before_the_cut() -> None:
    """capture_content on with content_max_chars=100: an e-mail address and a
    key that start just before the cut are redacted first, so the stored prompt
    ends in a cut replacement, never in the start of the address or the key
    (which a pattern can no longer recognize)."""
    _bridge.reset()
    before = llm_settings.SETTINGS  # the content cut is process-wide: put it back after
    memory = llamonitor.InMemoryBackend()
    llamonitor.initialize_monitoring(MonitorConfig(
        storage=StorageConfig(backend=memory, flush_interval_seconds=0.05),
        capture_content=True, content_max_chars=100,
    ))
    provider = TracerProvider()
    processor = SpanProcessor(interval_seconds=0.05)
    provider.add_span_processor(processor)
    try:
        with provider.get_tracer("t").start_as_current_span("chat") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("input.value", "a" * 95 + " bob@example.com")
            s.set_attribute("output.value", "b" * 95 + " sk-abcdefghijklmnopqrstuvwx")
        assert processor.force_flush(10_000)
        assert llamonitor.flush(10)
        (row,) = memory.rows()
        assert row["prompt_content"] == "a" * 95 + " [EMA"
        assert row["completion_content"] == "b" * 95 + " [SEC"
        text = json.dumps(dict(row), default=str)
        assert "bob@" not in text and "sk-abc" not in text
        assert json.loads(row["custom_attributes"])["content_truncated"]["prompt_content"] > 100
    finally:
        provider.shutdown()
        _bridge.reset()
        llamonitor.shutdown_monitoring(10)
        llm_settings.SETTINGS = before
