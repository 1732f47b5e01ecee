#!/usr/bin/env python
"""Seed 001's event API: what ``observe_event`` costs the publisher, and events to
durable spans per second.

Usage::

    python benchmarks/bench_events.py            # about 30 seconds
    python benchmarks/bench_events.py --quick    # about 5 seconds

* **caller** -- time per ``observe_event`` on the publishing thread, beside, in the
  same run: the floor (appending the event to a list) and seed 001's original
  synchronous design (the manager calls the handler inline: here llamonitor's
  span handler, mapping each event to a row on the caller's thread). Events are
  a session's: start, then commands each with an LLM call, then end. Median over
  trials of the per-event time.
  ``enqueue only``: the same, with the handler parked (its thread waits), so
  the figure is the enqueue path alone; ``observe_event`` runs while the span
  handler's thread works, and on CPython includes sharing the GIL with it.
* **end to end** -- the same events from ``observe_event`` until their spans are in
  the Parquet store (``manager.flush`` then ``llamonitor.flush``): spans/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from typing import Any

import llamonitor
from llamonitor.observability import (
    CommandResultEvent,
    CommandStartedEvent,
    LLMCallEvent,
    ObservabilityConfig,
    ObservabilityHandler,
    ObservabilityManager,
    SessionEndEvent,
    SessionStartEvent,
    SpanHandler,
)


def session_events(i: int, commands: int) -> list[Any]:
    sid = f"session-{i}"
    out: list[Any] = [SessionStartEvent(session_id=sid)]
    for j in range(commands):
        cid = f"{sid}-c{j}"
        out += [
            CommandStartedEvent(session_id=sid, command_id=cid, command_type="Ask"),
            LLMCallEvent(
                session_id=sid,
                model="gpt-4o-mini",
                provider="openai",
                input_tokens=100,
                output_tokens=20,
                duration_ms=5.0,
            ),
            CommandResultEvent(session_id=sid, command_id=cid, success=True),
        ]
    return [*out, SessionEndEvent(session_id=sid)]


class Gate(ObservabilityHandler):
    """A handler parked on a gate while the enqueue path is timed alone."""

    ordered = True

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self.open.clear()
        self.entered.clear()

    def release(self) -> None:
        self.open.set()

    def handle(self, event: Any) -> None:
        self.entered.set()
        self.open.wait()


def per_event_ns(publish: Any, events: list[Any]) -> float:
    t0 = time.perf_counter_ns()
    for event in events:
        publish(event)
    return (time.perf_counter_ns() - t0) / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sessions, trials = (200, 3) if args.quick else (2000, 7)
    with tempfile.TemporaryDirectory() as tmp:
        llamonitor.initialize_monitoring(
            llamonitor.MonitorConfig.for_local_dev(tmp, max_queue_size=1_000_000)
        )
        inline = SpanHandler()
        manager = ObservabilityManager(ObservabilityConfig(queue_size=1_000_000))
        manager.register_handler(SpanHandler())
        parked = ObservabilityManager(ObservabilityConfig(queue_size=1_000_000))
        gate = Gate()
        parked.register_handler(gate)
        floor: list[Any] = []
        results: dict[str, list[float]] = {
            "floor": [],
            "inline": [],
            "observe_event": [],
            "enqueue only": [],
        }
        for trial in range(trials):
            batches = [
                [
                    e
                    for i in range(sessions)
                    for e in session_events(trial * 10**6 + k * sessions + i, 5)
                ]
                for k in range(3)
            ]
            results["floor"].append(per_event_ns(floor.append, batches[0]))
            results["inline"].append(per_event_ns(inline.handle, batches[1]))
            results["observe_event"].append(per_event_ns(manager.observe_event, batches[2]))
            manager.flush(60)
            llamonitor.flush(60)
            gate.hold()
            results["enqueue only"].append(per_event_ns(parked.observe_event, batches[2]))
            gate.release()
            floor.clear()
            manager.flush(60)
            llamonitor.flush(60)
        print(f"caller's time per event ({sessions} sessions x 17 events, {trials} trials):")
        for name, values in results.items():
            print(f"  {name:14s} {statistics.median(values):9.0f} ns")
        events = [e for i in range(sessions) for e in session_events(10**9 + i, 5)]
        spans = sessions * 11
        t0 = time.perf_counter()
        for event in events:
            manager.observe_event(event)
        manager.flush(120)
        llamonitor.flush(120)
        elapsed = time.perf_counter() - t0
        print(f"end to end: {spans:,} spans from {len(events):,} events durable in "
              f"{elapsed:.2f} s = {spans / elapsed:,.0f} spans/s")  # fmt: skip
        manager.shutdown(10)
        parked.shutdown(10)
        llamonitor.shutdown_monitoring()


if __name__ == "__main__":
    main()
