"""One tree both ways: ``@monitor_llm`` -> an OTel span -> ``@monitor_llm``
stores the inner span under the OTel span (not under the outer decorated one),
and OTel -> ``@monitor_llm`` -> OTel keeps each span under the one around it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import llamonitor
from _helpers import rows
from llamonitor import monitor_llm, monitoring_session, monitoring_trace
from llamonitor.otel import SpanProcessor, _bridge


@pytest.fixture
def otel() -> Iterator[tuple[Any, SpanProcessor]]:
    """A tracer of a fresh TracerProvider fed to a llamonitor SpanProcessor."""
    _bridge.reset()
    provider = TracerProvider()
    processor = SpanProcessor(interval_seconds=0.05)
    provider.add_span_processor(processor)
    yield provider.get_tracer("tests"), processor
    provider.shutdown()
    _bridge.reset()


def _by_name(processor: SpanProcessor, spans: llamonitor.InMemoryBackend) -> dict[str, Any]:
    assert processor.force_flush(5000)
    assert llamonitor.flush(10)
    return {r["operation_name"]: r for r in rows(spans)}


def test_monitor_llm_inside_an_otel_span_inside_monitor_llm_is_the_otel_spans_child(
    otel: Any, spans: Any
) -> None:
    """outer (decorated) -> chat (OTel, e.g. an instrumented SDK call) -> tool
    (decorated, called from inside it): tool's parent is chat, chat's is outer."""
    tracer, processor = otel

    @monitor_llm(operation_name="tool")
    def tool() -> str:
        return "ok"

    @monitor_llm(operation_name="outer")
    def outer() -> str:
        with tracer.start_as_current_span("chat"):
            return tool()

    with monitoring_session("s-nest"):
        outer()
    by = _by_name(processor, spans)
    assert by["chat"]["parent_span_id"] == by["outer"]["span_id"]
    assert by["tool"]["parent_span_id"] == by["chat"]["span_id"]
    assert {r["trace_id"] for r in by.values()} == {by["outer"]["trace_id"]}
    assert {r["session_id"] for r in by.values()} == {"s-nest"}


def test_five_levels_alternating_from_either_side(otel: Any, spans: Any) -> None:
    """m0 -> o1 -> m2 -> o3 -> m4 and o0 -> m1 -> o2 -> m3 -> o4: every span's
    stored parent is the one directly around it, one trace per tree."""
    tracer, processor = otel

    def level(i: int, start_otel: bool, top: int) -> None:
        if i > top:
            return
        name = f"{'ab'[start_otel]}{i}"
        if (i % 2 == 0) == start_otel:
            with tracer.start_as_current_span(name):
                level(i + 1, start_otel, top)
        else:
            monitor_llm(operation_name=name)(lambda: level(i + 1, start_otel, top))()

    level(0, False, 4)  # a0 decorated, a1 OTel, ...
    level(0, True, 4)  # b0 OTel, b1 decorated, ...
    by = _by_name(processor, spans)
    for tree in "ab":
        assert by[f"{tree}0"]["parent_span_id"] is None
        for i in range(1, 5):
            assert by[f"{tree}{i}"]["parent_span_id"] == by[f"{tree}{i - 1}"]["span_id"], (tree, i)
        assert len({by[f"{tree}{i}"]["trace_id"] for i in range(5)}) == 1
    assert by["a0"]["trace_id"] != by["b0"]["trace_id"]


def test_an_otel_span_that_began_outside_the_llamonitor_parent_is_not_nearer(
    otel: Any, spans: Any
) -> None:
    """request (OTel) -> handler (decorated) -> step (decorated): the OTel span
    is current around step, but began outside handler: step stays handler's child."""
    tracer, processor = otel

    @monitor_llm(operation_name="step")
    def step() -> None:
        pass

    @monitor_llm(operation_name="handler")
    def handler() -> None:
        step()

    with tracer.start_as_current_span("request"):
        handler()
    by = _by_name(processor, spans)
    assert by["handler"]["parent_span_id"] == by["request"]["span_id"]
    assert by["step"]["parent_span_id"] == by["handler"]["span_id"]


def test_an_ended_otel_span_is_no_parent_of_a_later_sibling(otel: Any, spans: Any) -> None:
    """outer -> (OTel chat, ended) then tool: tool is outer's child, not chat's."""
    tracer, processor = otel

    @monitor_llm(operation_name="tool")
    def tool() -> None:
        pass

    @monitor_llm(operation_name="outer")
    def outer() -> None:
        with tracer.start_as_current_span("chat"):
            pass
        tool()

    outer()
    by = _by_name(processor, spans)
    assert by["tool"]["parent_span_id"] == by["outer"]["span_id"]
    assert by["chat"]["parent_span_id"] == by["outer"]["span_id"]


def test_a_trace_scope_around_an_otel_span_nests_decorated_code_under_it(
    otel: Any, spans: Any
) -> None:
    """monitoring_trace -> OTel span -> decorated: the decorated span is the
    OTel span's child, in the scope's trace."""
    tracer, processor = otel

    @monitor_llm(operation_name="tool")
    def tool() -> None:
        pass

    with monitoring_trace("7" * 32), tracer.start_as_current_span("chat"):
        tool()
    by = _by_name(processor, spans)
    assert by["tool"]["parent_span_id"] == by["chat"]["span_id"]
    assert by["tool"]["trace_id"] == by["chat"]["trace_id"] == "7" * 32
