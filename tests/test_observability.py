"""Seed 001's event API: a queued, isolated manager, and events as llamonitor spans."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import llamonitor
from llamonitor import ConfigurationError, MonitorConfig
from llamonitor.analysis import analyze
from llamonitor.cli import cli
from llamonitor.observability import (
    SAMPLE_RATE_KEY,
    Command,
    CommandResult,
    CommandResultEvent,
    CommandStartedEvent,
    ConsoleEventHandler,
    Event,
    EventHandlerFailedEvent,
    JSONLFileEventHandler,
    LLMCallEvent,
    LLMResponseEvent,
    ObservabilityConfig,
    ObservabilityHandler,
    ObservabilityManager,
    SessionEndEvent,
    SessionStartEvent,
    SpanHandler,
    ToolExecuteResultEvent,
)


class Recorder(ObservabilityHandler):
    """Keeps what it handled; ``gate`` (when given) holds each call until set."""

    def __init__(self, gate: threading.Event | None = None, ordered: bool = True) -> None:
        self.events: list[Any] = []
        self.gate = gate
        self.entered = threading.Event()
        self.ordered = ordered  # type: ignore[misc]

    def handle(self, event: Any) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.events.append(event)


class Failing(ObservabilityHandler):
    def handle(self, event: Any) -> None:
        raise RuntimeError("handler bug")


@pytest.fixture
def manager() -> Iterator[ObservabilityManager]:
    m = ObservabilityManager(ObservabilityConfig(queue_size=10, block_timeout_seconds=0.05))
    yield m
    m.shutdown(5)


def _sessions(n: int, per: int = 3) -> list[Event]:
    return [
        CommandStartedEvent(session_id=f"s{i}", command_id=f"c{i}-{j}")
        for i in range(n)
        for j in range(per)
    ]


# -- the manager ---------------------------------------------------------------------


def test_observe_event_returns_at_once_under_a_blocked_handler_and_counts_drops(
    manager: ObservabilityManager,
) -> None:
    """A handler stuck on one event never holds the caller: the queue fills, the rest is
    dropped and counted (drop_newest), and the queued ones are handled once it is free."""
    gate = threading.Event()
    stuck = Recorder(gate)
    manager.register_handler(stuck)
    manager.observe_event(Event(event_id="first"))
    assert stuck.entered.wait(5)
    results = [manager.observe_event(Event(event_id=str(i))) for i in range(100)]
    assert results.count(True) == 10 and results.count(False) == 90
    assert manager.health_check()["handlers"]["Recorder"]["dropped"] == {"queue_full": 90}
    gate.set()
    assert manager.flush(5)
    assert [e.event_id for e in stuck.events] == ["first", *map(str, range(10))]


def test_drop_oldest_keeps_the_newest_events() -> None:
    """Under drop_oldest a full queue lets go of its oldest events (counted), keeping the newest."""
    m = ObservabilityManager({"queue_size": 10, "back_pressure_strategy": "drop_oldest"})
    gate = threading.Event()
    stuck = Recorder(gate)
    m.register_handler(stuck)
    try:
        m.observe_event(Event(event_id="first"))
        assert stuck.entered.wait(5)
        assert all(m.observe_event(Event(event_id=str(i))) for i in range(100))
        gate.set()
        assert m.flush(5)
        assert [e.event_id for e in stuck.events] == ["first", *map(str, range(90, 100))]
        assert m.health_check()["handlers"]["Recorder"]["dropped"] == {"drop_oldest": 90}
    finally:
        m.shutdown(5)


def test_block_waits_for_room_then_drops_and_counts() -> None:
    """Under block, a caller facing a full queue waits (up to block_timeout_seconds), then the
    event is dropped and counted; sync and async callers alike."""
    m = ObservabilityManager(
        {"queue_size": 2, "back_pressure_strategy": "block", "block_timeout_seconds": 0.02}
    )
    gate = threading.Event()
    stuck = Recorder(gate)
    m.register_handler(stuck)
    try:
        m.observe_event(Event())
        assert stuck.entered.wait(5)
        assert m.observe_event(Event()) and m.observe_event(Event())
        assert m.observe_event(Event()) is False
        assert asyncio.run(m.aobserve_event(Event())) is False
        assert m.health_check()["handlers"]["Recorder"]["dropped"] == {"block_timeout": 2}
        gate.set()
        assert m.flush(5) and len(stuck.events) == 3
    finally:
        m.shutdown(5)


def test_a_failing_or_stuck_handler_does_not_stall_the_others(
    manager: ObservabilityManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Beside a handler that raises on every event and one that is stuck, a third handles every
    event; the failures are counted, logged once, and reach it as EventHandlerFailedEvents."""
    gate = threading.Event()
    stuck, healthy = Recorder(gate), Recorder()
    manager.register_handler(stuck)
    manager.register_handler(Failing())
    manager.register_handler(healthy)
    with caplog.at_level(logging.WARNING, logger="llamonitor.observability"):
        for i in range(5):
            manager.observe_event(Event(event_id=str(i)))
        assert healthy.entered.wait(5)
        for _ in range(1000):
            if len(healthy.events) >= 10:
                break
            threading.Event().wait(0.01)
    plain = [e for e in healthy.events if not isinstance(e, EventHandlerFailedEvent)]
    failed = [e for e in healthy.events if isinstance(e, EventHandlerFailedEvent)]
    assert [e.event_id for e in plain] == ["0", "1", "2", "3", "4"]
    assert sorted(e.event.event_id for e in failed) == ["0", "1", "2", "3", "4"]
    assert {e.handler for e in failed} == {"Failing"}
    assert isinstance(failed[0].exception, RuntimeError)
    assert manager.health_check()["handlers"]["Failing"]["failed"] == 5
    assert len([r for r in caplog.records if "Failing failed" in r.getMessage()]) == 1
    gate.set()


def test_handlers_come_and_go_and_rates_change_at_run_time(manager: ObservabilityManager) -> None:
    """register_handler/unregister_handler and set_sample_rate (manager-wide and per handler)
    take effect for the next event; what is sampled out is counted."""
    a, b = Recorder(), Recorder()
    manager.register_handler(a)
    manager.observe_event(Event(event_id="1"))
    manager.register_handler(b)
    manager.observe_event(Event(event_id="2"))
    assert manager.unregister_handler(a)
    manager.observe_event(Event(event_id="3"))
    manager.set_sample_rate(0.0)
    manager.observe_event(Event(event_id="4"))
    manager.set_sample_rate(1.0)
    manager.set_sample_rate(0.0, handler=b)
    manager.observe_event(Event(event_id="5"))
    manager.set_sample_rate(1.0, handler=b)
    manager.observe_event(Event(event_id="6"))
    assert manager.flush(5)
    assert [e.event_id for e in a.events] == ["1", "2"]
    assert [e.event_id for e in b.events] == ["2", "3", "6"]
    assert manager.sampled_out == 1
    assert manager.health_check()["handlers"]["Recorder"]["sampled_out"] == 1
    with pytest.raises(ConfigurationError, match="sample_rate"):
        manager.set_sample_rate(1.5)


def test_sampling_keeps_or_drops_whole_sessions() -> None:
    """At a sample rate, a session's events are all kept or all dropped, and the sessions a
    handler keeps at a lower rate are among those kept at a higher one."""
    quarter, half = Recorder(), Recorder()
    m = ObservabilityManager({"queue_size": 1000})
    m.register_handler(quarter, sample_rate=0.25)
    m.register_handler(half, sample_rate=0.5)
    try:
        for event in _sessions(200):
            m.observe_event(event)
        assert m.flush(5)
    finally:
        m.shutdown(5)
    kept_quarter = [e.session_id for e in quarter.events]
    kept_half = [e.session_id for e in half.events]
    assert all(kept_quarter.count(s) == 3 for s in kept_quarter)
    assert all(kept_half.count(s) == 3 for s in kept_half)
    assert set(kept_quarter) < set(kept_half)
    assert 20 < len(set(kept_quarter)) < 80 and 60 < len(set(kept_half)) < 140


def test_event_type_filters_by_class_and_by_name(manager: ObservabilityManager) -> None:
    """event_types= takes classes (and their subclasses) or class names, so a framework's own
    class of the same name (LLMgine's) matches too."""

    @dataclass
    class CommandResultEvent_:  # stands for another package's class
        session_id: str = "x"

    theirs = type("CommandResultEvent", (CommandResultEvent_,), {})
    by_class, by_name = Recorder(), Recorder()
    manager.register_handler(by_class, event_types=[CommandStartedEvent])
    manager.register_handler(by_name, event_types="CommandResultEvent")
    manager.observe_event(CommandStartedEvent())
    manager.observe_event(CommandResultEvent())
    manager.observe_event(theirs())
    manager.observe_event(SessionStartEvent())
    assert manager.flush(5)
    assert [type(e) for e in by_class.events] == [CommandStartedEvent]
    assert [type(e) for e in by_name.events] == [CommandResultEvent, theirs]


def test_async_handlers_run_on_one_private_loop() -> None:
    """An ahandle handler runs on a loop of its own (one for all its events, not the caller's),
    and aobserve_event queues from async code."""

    class AsyncRecorder(ObservabilityHandler):
        ordered = True

        def __init__(self) -> None:
            self.loops: list[int] = []
            self.ids: list[str] = []

        async def ahandle(self, event: Any) -> None:
            await asyncio.sleep(0)
            self.loops.append(id(asyncio.get_running_loop()))
            self.ids.append(event.event_id)

    handler = AsyncRecorder()
    m = ObservabilityManager()
    m.register_handler(handler)

    async def publish() -> int:
        for i in range(20):
            assert await m.aobserve_event(Event(event_id=str(i)))
        return id(asyncio.get_running_loop())

    try:
        caller_loop = asyncio.run(publish())
        assert m.flush(5)
    finally:
        m.shutdown(5)
    assert handler.ids == [str(i) for i in range(20)]
    assert len(set(handler.loops)) == 1 and caller_loop not in handler.loops


def test_settings_come_from_llmops_variables_and_llmgine_ones_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LLMOPS_OBSERVABILITY_* set the config; LLMgine's LLMGINE_OBSERVABILITY_* are read below
    them with a DeprecationWarning; a bad value is a ConfigurationError naming the setting
    and its variable."""
    monkeypatch.setenv("LLMOPS_OBSERVABILITY_QUEUE_SIZE", "123")
    monkeypatch.setenv("LLMOPS_OBSERVABILITY_WORKERS", "3")
    monkeypatch.setenv("LLMOPS_OBSERVABILITY_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("LLMOPS_OBSERVABILITY_ENABLED", "false")
    monkeypatch.setenv("LLMGINE_OBSERVABILITY_BACK_PRESSURE_STRATEGY", "drop_oldest")
    monkeypatch.setenv("LLMGINE_OBSERVABILITY_QUEUE_SIZE", "999")
    with pytest.warns(DeprecationWarning) as caught:
        config = ObservabilityConfig()
        assert ObservabilityConfig(queue_size=7).queue_size == 7
    assert "LLMOPS_OBSERVABILITY_BACK_PRESSURE_STRATEGY" in str(caught[0].message) + str(
        caught[1].message
    )
    assert (config.queue_size, config.num_workers, config.sample_rate) == (123, 3, 0.25)
    assert config.enabled is False and config.back_pressure_strategy == "drop_oldest"
    monkeypatch.delenv("LLMGINE_OBSERVABILITY_QUEUE_SIZE")
    monkeypatch.delenv("LLMGINE_OBSERVABILITY_BACK_PRESSURE_STRATEGY")
    monkeypatch.setenv("LLMOPS_OBSERVABILITY_SAMPLE_RATE", "2")
    with pytest.raises(ConfigurationError) as info:
        ObservabilityManager()
    assert info.value.setting == "observability.sample_rate"
    assert "LLMOPS_OBSERVABILITY_SAMPLE_RATE" in str(info.value)
    with pytest.raises(ConfigurationError, match=r"observability\.back_pressure_strategy"):
        ObservabilityConfig(back_pressure_strategy="wait", sample_rate=1)


def test_a_disabled_manager_observes_nothing() -> None:
    """enabled=False (and set_enabled(False) at run time) makes observe_event a no-op."""
    handler = Recorder()
    m = ObservabilityManager({"enabled": False})
    m.register_handler(handler)
    try:
        m.observe_event(Event())
        m.set_enabled(True)
        m.observe_event(Event(event_id="on"))
        assert m.flush(5)
    finally:
        m.shutdown(5)
    assert [e.event_id for e in handler.events] == ["on"]


def test_the_built_in_console_and_jsonl_handlers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The console handler logs a line per event to llamonitor.console (WARNING for a failure);
    the JSONL handler writes every event's fields and type, one JSON object a line."""
    m = ObservabilityManager()
    jsonl = JSONLFileEventHandler(tmp_path, "events.jsonl")
    m.register_handler(ConsoleEventHandler())
    m.register_handler(jsonl)
    events = [
        SessionStartEvent(session_id="s1"),
        LLMCallEvent(session_id="s1", model="gpt-4o", input_tokens=3, output_tokens=4),
        CommandResultEvent(session_id="s1", command_id="c", success=False, error="KeyError: k"),
    ]
    with caplog.at_level(logging.INFO, logger="llamonitor.console"):
        for event in events:
            m.observe_event(event)
        assert m.flush(5)
    m.shutdown(5)
    lines = [r for r in caplog.records if r.name == "llamonitor.console"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO, logging.WARNING]
    assert "gpt-4o" in lines[1].getMessage() and "3→4 tok" in lines[1].getMessage()
    assert "ERROR KeyError: k" in lines[2].getMessage()
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [w["event_type"] for w in written] == [type(e).__name__ for e in events]
    assert written[1]["model"] == "gpt-4o" and written[2]["error"] == "KeyError: k"
    assert written[0]["event_id"] == events[0].event_id


# -- events as spans -----------------------------------------------------------------


class FakeBus:
    """A message bus in LLMgine's shape: commands to one handler each, events to every
    subscriber, and every event observed by the observability manager first."""

    def __init__(self, observability: ObservabilityManager) -> None:
        self.observability = observability
        self.commands: dict[type, Callable[[Any], Awaitable[CommandResult]]] = {}
        self.subscribers: list[Callable[[Any], Awaitable[None]]] = []

    async def publish(self, event: Event) -> None:
        self.observability.observe_event(event)
        for subscriber in self.subscribers:
            try:
                await subscriber(event)
            except Exception as exc:
                await self.publish(
                    EventHandlerFailedEvent(
                        event=event,
                        handler=subscriber.__qualname__,
                        exception=exc,
                        session_id=event.session_id,
                    )
                )

    async def execute(self, command: Command) -> CommandResult:
        await self.publish(CommandStartedEvent(command=command, session_id=command.session_id))
        try:
            result = await self.commands[type(command)](command)
        except Exception as e:
            result = CommandResult(
                success=False, command_id=command.command_id, error=f"{type(e).__name__}: {e}"
            )
        await self.publish(CommandResultEvent(command_result=result, session_id=command.session_id))
        return result


@dataclass(kw_only=True)
class AskCommand(Command):
    question: str = ""


@dataclass(kw_only=True)
class BrokenCommand(Command):
    pass


_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
}


async def _run_session(bus: FakeBus, sid: str) -> None:
    async def ask(command: AskCommand) -> CommandResult:
        await bus.publish(
            LLMCallEvent(
                session_id=sid, model="gpt-4o-mini", provider="openai",
                input_tokens=100, output_tokens=20, duration_ms=12.5,
            )
        )  # fmt: skip
        await bus.publish(
            ToolExecuteResultEvent(session_id=sid, tool_name="search", execution_succeed=True)
        )
        call = LLMCallEvent(session_id=sid, model="gpt-4o-mini", provider="openai", payload={})
        await bus.publish(call)
        await bus.publish(
            LLMResponseEvent(session_id=sid, call_id=call.call_id, raw_response=_RESPONSE)
        )
        return CommandResult(success=True, command_id=command.command_id, result="4")

    async def broken(command: BrokenCommand) -> CommandResult:
        raise ValueError("no such thing")

    async def flaky_subscriber(event: Any) -> None:
        if isinstance(event, ToolExecuteResultEvent):
            raise KeyError("subscriber bug")

    bus.commands = {AskCommand: ask, BrokenCommand: broken}
    bus.subscribers = [flaky_subscriber]
    await bus.publish(SessionStartEvent(session_id=sid))
    await bus.execute(AskCommand(session_id=sid, question="2+2?"))
    await bus.execute(BrokenCommand(session_id=sid))
    await bus.publish(SessionEndEvent(session_id=sid))


def _cli(*args: Any) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _shape(node: dict[str, Any]) -> tuple[Any, ...]:
    return (
        node["operation_type"],
        node["operation_name"],
        bool(node.get("error")),
        tuple(_shape(c) for c in node["children"]),
    )


def test_a_message_bus_session_becomes_a_trace_in_the_store(store: Path) -> None:
    """A framework's session published as events (commands, LLM calls, a tool, a failed command,
    a failed subscriber) lands in the Parquet store as one trace whose tree, ids, errors,
    tokens and cost are right, and llamonitor stats / analyze count it like decorated code."""
    llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(store))
    manager = ObservabilityManager()
    spans = SpanHandler()
    manager.register_handler(spans)
    asyncio.run(_run_session(FakeBus(manager), "session-1"))
    assert manager.flush(5)
    assert llamonitor.flush(10)
    llamonitor.shutdown_monitoring()
    manager.shutdown(5)
    assert (spans.submitted, spans.dropped, spans.unmatched) == (7, 0, 0)

    listed = json.loads(_cli("events", "--dir", store, "--json").output)
    rows = listed if isinstance(listed, list) else listed["events"]
    (trace_id,) = {r["trace_id"] for r in rows}
    tree = json.loads(_cli("trace", trace_id, "--dir", store, "--json").output)
    assert tree["span_count"] == 7
    (root,) = tree["spans"]
    assert _shape(root) == (
        "session", "session", False, (
            ("command", "AskCommand", False, (
                ("llm_call", "chat", False, ()),
                ("tool", "search", False, ()),
                ("event_handler", "_run_session.<locals>.flaky_subscriber", True, ()),
                ("llm_call", "chat", False, ()),
            )),
            ("command", "BrokenCommand", True, ()),
        ),
    )  # fmt: skip
    ask, broken = root["children"]
    first_call, _tool, failed, second_call = ask["children"]
    assert broken["error_type"] == "ValueError" and broken["error_message"] == "no such thing"
    assert failed["error_type"] == "KeyError"
    assert (first_call["input_tokens"], first_call["output_tokens"]) == (100, 20)
    assert first_call["duration_ms"] == 12.5 and first_call["cost_usd"] > 0
    assert (second_call["input_tokens"], second_call["output_tokens"]) == (30, 2)
    assert second_call["response_model"] == "gpt-4o-mini-2024-07-18"
    assert second_call["cost_usd"] > 0
    assert len(root["span_id"]) == 16 and len(trace_id) == 32
    assert all(r["session_id"] == "session-1" for r in rows)
    assert root["duration_ms"] >= ask["duration_ms"]

    total = json.loads(_cli("stats", "--dir", store, "--json").output)["total"]
    assert (total["count"], total["errors"], total["llm_calls"]) == (7, 2, 2)
    report = analyze(store)
    assert (report.overview.spans, report.overview.errors, report.overview.llm_calls) == (7, 2, 2)
    assert report.overview.traces == 1 and report.overview.sessions == 1


def test_without_monitoring_the_span_handler_counts_its_drops() -> None:
    """With no initialize_monitoring, the span handler drops its rows and counts them; nothing
    raises into the publisher."""
    manager = ObservabilityManager()
    spans = SpanHandler()
    manager.register_handler(spans)
    manager.observe_event(SessionStartEvent(session_id="s"))
    manager.observe_event(SessionEndEvent(session_id="s"))
    assert manager.flush(5)
    manager.shutdown(5)
    assert (spans.submitted, spans.dropped) == (0, 1)


def test_unfinished_and_unmatched_events_are_kept_and_marked(spans: Any) -> None:
    """A command still open when its session ends is closed then (marked unfinished), and a
    result whose start was never seen becomes a span of its own (marked unmatched)."""
    manager = ObservabilityManager()
    manager.register_handler(SpanHandler())
    manager.observe_event(SessionStartEvent(session_id="s"))
    manager.observe_event(CommandStartedEvent(session_id="s", command_id="never-ends"))
    manager.observe_event(SessionEndEvent(session_id="s", error=TimeoutError("gave up")))
    manager.observe_event(CommandResultEvent(session_id="t", command_id="lost", success=True))
    assert manager.flush(5)
    manager.shutdown(5)
    llamonitor.flush(5)
    rows = {r["operation_type"]: r for r in spans.rows()}
    attrs = {k: json.loads(r["custom_attributes"] or "{}") for k, r in rows.items()}
    assert attrs["session"] == {} and rows["session"]["error_type"] == "TimeoutError"
    open_cmd = [r for r in spans.rows() if "never-ends" in (r["custom_attributes"] or "")]
    assert json.loads(open_cmd[0]["custom_attributes"])["llamonitor.unfinished"] is True
    lost = [r for r in spans.rows() if "lost" in (r["custom_attributes"] or "")]
    assert json.loads(lost[0]["custom_attributes"])["llamonitor.unmatched"] is True
    assert lost[0]["parent_span_id"] is None and lost[0]["session_id"] == "t"


def test_sampled_spans_record_their_rate_and_stats_scale_counts_back_up(store: Path) -> None:
    """Spans of sessions kept at a sample rate carry it (llamonitor.sample_rate), and llamonitor
    stats, analyze and the report show the count scaled back up next to the stored one."""
    llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(store))
    manager = ObservabilityManager({"sample_rate": 0.25})
    manager.register_handler(SpanHandler())
    for i in range(200):
        manager.observe_event(CommandStartedEvent(session_id=f"s{i}", command_id=f"c{i}"))
        manager.observe_event(CommandResultEvent(session_id=f"s{i}", command_id=f"c{i}"))
    assert manager.flush(5) and llamonitor.flush(10)
    llamonitor.shutdown_monitoring()
    manager.shutdown(5)
    kept = 200 - manager.sampled_out // 2
    assert 20 < kept < 80
    total = json.loads(_cli("stats", "--dir", store, "--json").output)["total"]
    assert total["count"] == kept and total["sampled"] == kept
    assert total["estimated_count"] == pytest.approx(4 * kept)
    rows = json.loads(_cli("events", "--dir", store, "--json").output)
    rows = rows if isinstance(rows, list) else rows["events"]
    assert {r["custom_attributes"][SAMPLE_RATE_KEY] for r in rows} == {0.25}
    text = _cli("stats", "--dir", store).output
    assert "≈ count" in text and f"{4 * kept:,}" in text
    overview = analyze(store).overview
    assert (overview.spans, overview.sampled_spans) == (kept, kept)
    assert overview.estimated_spans == pytest.approx(4 * kept)
    assert f"≈ {4 * kept:,} spans" in _cli("report", "--dir", store).output


def test_llmgine_style_events_with_their_own_classes_map_too(spans: Any) -> None:
    """Events of another package's classes with LLMgine's names and fields (a Command inside
    CommandStartedEvent, a CommandResult inside CommandResultEvent) map by name."""

    @dataclass
    class TheirCommand:
        command_id: str = "cmd-1"
        session_id: str = "sess"

    @dataclass
    class TheirResult:
        success: bool = False
        command_id: str = "cmd-1"
        error: str | None = "RuntimeError: nope"

    started = type("CommandStartedEvent", (), {})()
    started.command, started.session_id = TheirCommand(), "sess"
    done = type("CommandResultEvent", (), {})()
    done.command_result, done.session_id = TheirResult(), "sess"
    manager = ObservabilityManager()
    manager.register_handler(SpanHandler())
    manager.observe_event(started)
    manager.observe_event(done)
    assert manager.flush(5)
    manager.shutdown(5)
    llamonitor.flush(5)
    (row,) = spans.rows()
    assert row["operation_name"] == "TheirCommand" and row["error_type"] == "RuntimeError"
    assert row["duration_ms"] is not None and row["duration_ms"] >= 0


_AT_EXIT = """
import sys
from llamonitor.observability import ObservabilityManager, SpanHandler, SessionStartEvent
from llamonitor.observability import SessionEndEvent, CommandStartedEvent, CommandResultEvent
import llamonitor

manager = ObservabilityManager()
manager.register_handler(SpanHandler())
manager.observe_event(SessionStartEvent(session_id="warm"))   # the handler sees no pipeline yet
llamonitor.initialize_monitoring(llamonitor.MonitorConfig.for_local_dev(sys.argv[1]))
manager.observe_event(SessionEndEvent(session_id="warm"))
for i in range(50):
    manager.observe_event(CommandStartedEvent(session_id="s", command_id=str(i)))
    manager.observe_event(CommandResultEvent(session_id="s", command_id=str(i)))
"""


def test_events_still_queued_at_exit_reach_the_store(store: Path) -> None:
    """A program that publishes events and exits without flushing loses none of their spans:
    the managers' exit flush runs before the monitoring writer's, whatever the import order."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, str(store)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert analyze(store).overview.spans == 51


def test_shutdown_closes_what_never_ended(spans: Any) -> None:
    """Spans of a session that never ended are written, marked unfinished, when the manager
    shuts down (at interpreter exit too)."""
    manager = ObservabilityManager()
    manager.register_handler(SpanHandler())
    manager.observe_event(SessionStartEvent(session_id="s"))
    manager.observe_event(CommandStartedEvent(session_id="s", command_id="c"))
    assert manager.shutdown(5)
    llamonitor.flush(5)
    rows = spans.rows()
    assert sorted(r["operation_type"] for r in rows) == ["command", "session"]
    assert all(json.loads(r["custom_attributes"])["llamonitor.unfinished"] for r in rows)
    (root,) = [r for r in rows if r["parent_span_id"] is None]
    assert all(r["trace_id"] == root["trace_id"] for r in rows)


def test_prompt_and_completion_are_stored_only_with_capture_on_and_redacted() -> None:
    """An LLM call's prompt (from payload messages) and completion are stored, redacted like the
    decorator's, only with capture_content=True; the prompt's hash is kept either way."""
    from llamonitor.testing import capture_spans

    payload = {"messages": [{"role": "user", "content": "mail me at ann@example.com"}]}

    def one_call(**config: Any) -> dict[str, Any]:
        with capture_spans(**config) as backend:
            manager = ObservabilityManager()
            manager.register_handler(SpanHandler())
            manager.observe_event(
                LLMCallEvent(model="gpt-4o", payload=payload, completion="sure", output_tokens=1)
            )
            assert manager.shutdown(5)
        (row,) = backend.rows()
        return row

    off, on = one_call(), one_call(capture_content=True)
    assert off["prompt_content"] is None and off["completion_content"] is None
    assert off["prompt_hash"] == on["prompt_hash"] is not None
    assert "ann@example.com" not in on["prompt_content"] and "mail me" in on["prompt_content"]
    assert on["completion_content"] == "sure"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_maps_its_own_events_and_never_rewrites_the_parents(store: Path) -> None:
    """After fork, the child's handlers run on fresh threads and map the child's events, and the
    session the parent had open is closed once, by the parent."""
    import os

    llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(store))
    manager = ObservabilityManager()
    manager.register_handler(SpanHandler())
    manager.observe_event(SessionStartEvent(session_id="parent"))
    assert manager.flush(5)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            manager.observe_event(CommandStartedEvent(session_id="child", command_id="k"))
            manager.observe_event(CommandResultEvent(session_id="child", command_id="k"))
            ok = manager.shutdown(10) and llamonitor.shutdown_monitoring(20)
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    manager.observe_event(SessionEndEvent(session_id="parent"))
    assert manager.shutdown(5) and llamonitor.shutdown_monitoring(20)
    rows = json.loads(_cli("events", "--dir", store, "--json").output)
    rows = rows if isinstance(rows, list) else rows["events"]
    assert sorted((r["session_id"], r["operation_type"], r["process_id"]) for r in rows) == [
        ("child", "command", pid),
        ("parent", "session", os.getpid()),
    ]


def test_events_published_inside_a_decorated_function_nest_under_its_span(spans: Any) -> None:
    """A session published from inside a @monitor_llm function lands in that function's trace,
    under its span: decorated code and the event spans make one tree."""

    @llamonitor.monitor_llm("handle_request", operation_type="agent_workflow")
    def handle_request(manager: ObservabilityManager) -> None:
        manager.observe_event(SessionStartEvent(session_id="s"))
        manager.observe_event(CommandStartedEvent(session_id="s", command_id="c"))
        manager.observe_event(CommandResultEvent(session_id="s", command_id="c"))
        manager.observe_event(SessionEndEvent(session_id="s"))

    manager = ObservabilityManager()
    manager.register_handler(SpanHandler())
    handle_request(manager)
    manager.observe_event(CommandStartedEvent(session_id="t", command_id="outside"))
    manager.observe_event(CommandResultEvent(session_id="t", command_id="outside"))
    assert manager.shutdown(5)
    llamonitor.flush(5)
    by_name = {r["operation_name"]: r for r in spans.rows()}
    request, session = by_name["handle_request"], by_name["session"]
    command = [
        r for r in spans.rows() if r["session_id"] == "s" and r["operation_type"] == "command"
    ]
    assert session["parent_span_id"] == request["span_id"]
    assert command[0]["parent_span_id"] == session["span_id"]
    assert session["trace_id"] == command[0]["trace_id"] == request["trace_id"]
    outside = [r for r in spans.rows() if r["session_id"] == "t"]
    assert outside[0]["parent_span_id"] is None and outside[0]["trace_id"] != request["trace_id"]
