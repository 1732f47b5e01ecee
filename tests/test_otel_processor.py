"""llamonitor.otel.SpanProcessor: an application's own OpenTelemetry SDK spans
into the store, in one tree with ``@monitor_llm`` spans, both ways."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanContext as OTelSpanContext
from opentelemetry.trace import TraceFlags

import llamonitor
from _helpers import rows
from llamonitor import (
    MonitorConfig,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
    monitoring_session,
    propagate_context,
    shutdown_monitoring,
)
from llamonitor.otel import SpanProcessor, _bridge
from llamonitor.testing import capture_spans


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


def _flushed(processor: SpanProcessor, spans: llamonitor.InMemoryBackend) -> dict[str, Any]:
    """Every row written so far, by operation name."""
    assert processor.force_flush(5000)
    return {r["operation_name"]: r for r in rows(spans)}


def test_otel_span_inside_monitor_llm_is_its_child(otel: Any, spans: Any) -> None:
    """An OTel span started inside a @monitor_llm span is stored as its child,
    in its trace and session, with the OTel span's model and tokens."""
    tracer, processor = otel

    @monitor_llm(operation_name="agent")
    def agent() -> str:
        with tracer.start_as_current_span("chat gpt-4o") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("gen_ai.request.model", "gpt-4o")
            s.set_attribute("gen_ai.usage.input_tokens", 12)
            s.set_attribute("gen_ai.usage.output_tokens", 3)
            with tracer.start_as_current_span("http"):
                pass
        return "done"

    with monitoring_session("user-42"):
        agent()
    by = _flushed(processor, spans)
    top, chat, http = by["agent"], by["chat gpt-4o"], by["http"]
    assert chat["parent_span_id"] == top["span_id"]
    assert http["parent_span_id"] == chat["span_id"]
    assert {r["trace_id"] for r in by.values()} == {top["trace_id"]}
    assert {r["session_id"] for r in by.values()} == {"user-42"}
    assert (chat["model"], chat["input_tokens"], chat["output_tokens"]) == ("gpt-4o", 12, 3)
    assert chat["operation_type"] == "llm_call"
    assert chat["process_id"] == os.getpid()


def test_monitor_llm_inside_otel_span_is_its_child(otel: Any, spans: Any) -> None:
    """A @monitor_llm span started inside an OTel span (and no llamonitor span)
    is stored as that span's child, in the OTel trace; its own children follow."""
    tracer, processor = otel

    @monitor_llm(operation_name="tool")
    def tool() -> str:
        return step()

    @monitor_llm(operation_name="step")
    def step() -> str:
        return "ok"

    with tracer.start_as_current_span("request") as root:
        tool()
    by = _flushed(processor, spans)
    ctx = root.get_span_context()
    assert by["request"]["trace_id"] == f"{ctx.trace_id:032x}"
    assert by["tool"]["parent_span_id"] == by["request"]["span_id"]
    assert by["step"]["parent_span_id"] == by["tool"]["span_id"]
    assert {r["trace_id"] for r in by.values()} == {f"{ctx.trace_id:032x}"}
    assert len({r["session_id"] for r in by.values()}) == 1


def test_a_span_of_a_provider_without_llamonitor_is_no_parent(otel: Any, spans: Any) -> None:
    """A @monitor_llm span inside a span of another TracerProvider (one with no
    llamonitor processor, never stored) stays a root: no orphan parent link."""
    _, processor = otel
    web = TracerProvider().get_tracer("web")

    @monitor_llm(operation_name="handler")
    def handler() -> str:
        return "ok"

    with web.start_as_current_span("request"):
        handler()
    by = _flushed(processor, spans)
    assert set(by) == {"handler"}
    assert by["handler"]["parent_span_id"] is None


def test_nested_both_ways_stay_one_tree(otel: Any, spans: Any) -> None:
    """OTel -> monitor_llm -> OTel -> monitor_llm -> OTel: each span's parent
    is the one around it, whichever tracer made it, all in one trace."""
    tracer, processor = otel

    @monitor_llm(operation_name="m1")
    def m1() -> None:
        with tracer.start_as_current_span("o2"):
            m3()

    @monitor_llm(operation_name="m3")
    def m3() -> None:
        with tracer.start_as_current_span("o4"):
            pass

    with tracer.start_as_current_span("o0"):
        m1()
    by = _flushed(processor, spans)
    assert by["m1"]["parent_span_id"] == by["o0"]["span_id"]
    assert by["o2"]["parent_span_id"] == by["m1"]["span_id"]
    assert by["o4"]["parent_span_id"] == by["m3"]["span_id"]
    # m3's llamonitor parent is m1, but o2 began inside m1: o2 is nearer.
    assert by["m3"]["parent_span_id"] == by["o2"]["span_id"]
    assert len({r["trace_id"] for r in by.values()}) == 1
    assert len({r["session_id"] for r in by.values()}) == 1


def test_session_scope_around_otel_spans_gives_the_tree_its_session(otel: Any, spans: Any) -> None:
    """Under monitoring_session, an OTel root takes the session, and a
    @monitor_llm span inside that OTel span is its child in the same session."""
    tracer, processor = otel

    @monitor_llm(operation_name="tool")
    def tool() -> None:
        pass

    with monitoring_session("s-1"), tracer.start_as_current_span("otel_root") as root:
        tool()
    by = _flushed(processor, spans)
    assert by["tool"]["parent_span_id"] == by["otel_root"]["span_id"]
    assert by["otel_root"]["trace_id"] == f"{root.get_span_context().trace_id:032x}"
    assert by["tool"]["trace_id"] == by["otel_root"]["trace_id"]
    assert {r["session_id"] for r in by.values()} == {"s-1"}


def test_remote_parent_continues_the_callers_trace(otel: Any, spans: Any) -> None:
    """A @monitor_llm span under a W3C traceparent extracted from a request
    joins the caller's trace, as the child of the caller's span."""
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _, processor = otel
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{trace_id}-{span_id}-01"}
    )

    @monitor_llm(operation_name="handler")
    def handler() -> None:
        pass

    token = context.attach(incoming)
    try:
        handler()
    finally:
        context.detach(token)
    row = _flushed(processor, spans)["handler"]
    assert (row["trace_id"], row["parent_span_id"]) == (trace_id, span_id)


def test_otel_children_of_an_ended_parent_keep_its_trace(otel: Any, spans: Any) -> None:
    """An OTel span that starts after its OTel parent ended still lands in the
    llamonitor trace the parent was moved to."""
    tracer, processor = otel
    from opentelemetry import trace

    @monitor_llm(operation_name="outer")
    def outer() -> Any:
        parent = tracer.start_span("parent")
        parent.end()
        return trace.set_span_in_context(parent)

    late_ctx = outer()
    with tracer.start_as_current_span("late", context=late_ctx):
        pass
    by = _flushed(processor, spans)
    assert by["late"]["trace_id"] == by["outer"]["trace_id"]
    assert by["late"]["parent_span_id"] == by["parent"]["span_id"]
    assert by["parent"]["parent_span_id"] == by["outer"]["span_id"]


def test_threads_with_propagated_context_keep_the_tree(otel: Any, spans: Any) -> None:
    """OTel spans in a thread started with llamonitor's propagate_context are
    children of the span that started the thread."""
    tracer, processor = otel

    def work() -> None:
        with tracer.start_as_current_span("in_thread"):
            pass

    @monitor_llm(operation_name="fan_out")
    def fan_out() -> None:
        t = threading.Thread(target=propagate_context(work))
        t.start()
        t.join()

    fan_out()
    by = _flushed(processor, spans)
    assert by["in_thread"]["parent_span_id"] == by["fan_out"]["span_id"]
    assert by["in_thread"]["trace_id"] == by["fan_out"]["trace_id"]


def test_sampled_out_llamonitor_trace_drops_its_otel_children(otel: Any) -> None:
    """OTel spans under a sampled-out llamonitor trace are not stored, and
    counted as sampled out, like the trace's own spans."""
    tracer, processor = otel

    @monitor_llm(operation_name="rare")
    def rare() -> None:
        with tracer.start_as_current_span("child"):
            pass

    with capture_spans(sample_rate=0.0) as spans:
        rare()
        assert processor.force_flush(5000)
        assert llamonitor.flush(5)
        health = llamonitor.get_writer().health_check()  # type: ignore[union-attr]
        assert spans.rows() == []
        assert health["events_sampled_out"] == 2


def test_otel_sampler_decides_for_otel_spans(spans: Any) -> None:
    """An OTel span its own sampler drops is not stored, and a @monitor_llm
    span inside it is a root of its own."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    processor = SpanProcessor()
    provider.add_span_processor(processor)
    try:

        @monitor_llm(operation_name="inside")
        def inside() -> None:
            pass

        with provider.get_tracer("t").start_as_current_span("unsampled"):
            inside()
        by = _flushed(processor, spans)
        assert list(by) == ["inside"]
        assert by["inside"]["parent_span_id"] is None
    finally:
        provider.shutdown()


def test_spans_before_monitoring_starts_are_kept_until_it_does(tmp_path: Path) -> None:
    """Spans that end before initialize_monitoring are held (bounded), handed
    over once monitoring runs; past the bound, or still held at shutdown, they
    are dropped and counted."""
    provider = TracerProvider()
    processor = SpanProcessor(max_queue_size=3, interval_seconds=0.05)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        for i in range(5):
            with tracer.start_as_current_span(f"early{i}"):
                pass
        assert processor.force_flush(1000) is False  # nowhere to hand them yet
        assert processor.stats()["queued"] == 3
        assert processor.stats()["dropped"]["queue_full"] == 2
        with capture_spans() as spans:
            assert processor.force_flush(5000)
            names = sorted(r["operation_name"] for r in rows(spans))
        assert names == ["early0", "early1", "early2"]
        assert processor.stats()["handed"] == 3
        with tracer.start_as_current_span("never_handed"):
            pass  # monitoring has stopped again
    finally:
        provider.shutdown()
    assert processor.stats()["dropped"]["shutdown"] == 1


def test_llamonitor_flush_and_shutdown_cover_what_the_processor_holds(tmp_path: Path) -> None:
    """llamonitor.flush() hands over the processor's spans before waiting for
    storage, and shutdown_monitoring() does before it stops: no force_flush needed."""
    provider = TracerProvider()
    processor = SpanProcessor(interval_seconds=3600)  # its thread never wakes by itself
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        with capture_spans() as spans:
            with tracer.start_as_current_span("flushed"):
                pass
            assert [r["operation_name"] for r in rows(spans)] == ["flushed"]
            with tracer.start_as_current_span("at_shutdown"):
                pass
        assert sorted(r["operation_name"] for r in spans.rows()) == ["at_shutdown", "flushed"]
    finally:
        provider.shutdown()


def test_script_that_exits_without_flushing_keeps_its_spans(tmp_path: Path) -> None:
    """A process that ends right after its last span, with no flush or shutdown
    call, still has every OTel span in the store (the exit flush hands them over)."""
    code = f"""
        from opentelemetry.sdk.trace import TracerProvider
        import llamonitor, llamonitor.otel
        provider = TracerProvider()
        provider.add_span_processor(llamonitor.otel.SpanProcessor())
        llamonitor.initialize_monitoring(llamonitor.MonitorConfig.for_local_dev({str(tmp_path)!r}))
        tracer = provider.get_tracer("script")
        for i in range(50):
            with tracer.start_as_current_span("step"):
                pass
        """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)
    import duckdb

    (count,) = duckdb.execute(
        f"select count(*) from read_parquet('{tmp_path}/**/*.parquet') "
        "where operation_name = 'step'"
    ).fetchone()  # type: ignore[misc]
    assert count == 50


def test_writer_argument_feeds_that_writer(tmp_path: Path) -> None:
    """SpanProcessor(writer=...) hands its rows to that writer."""
    writer = initialize_monitoring(
        MonitorConfig(storage=StorageConfig(backend="jsonl", output_dir=tmp_path))
    )
    provider = TracerProvider()
    processor = SpanProcessor(writer=writer)
    provider.add_span_processor(processor)
    try:
        with provider.get_tracer("t").start_as_current_span("to_writer"):
            pass
        assert processor.force_flush(5000)
        assert writer.flush(5)
    finally:
        provider.shutdown()
        shutdown_monitoring(5)
    lines = [json.loads(x) for f in tmp_path.rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert [r["operation_name"] for r in lines] == ["to_writer"]


def test_shutdown_is_idempotent_and_removes_the_bridge(spans: Any) -> None:
    """After shutdown (twice is fine) spans are dropped and counted, and
    @monitor_llm inside an OTel span is a root again."""
    provider = TracerProvider()
    processor = SpanProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("before"):
        pass
    processor.shutdown()
    processor.shutdown()
    assert processor.force_flush(100) is False

    @monitor_llm(operation_name="after")
    def after() -> None:
        pass

    with tracer.start_as_current_span("dropped"):
        after()
    by = {r["operation_name"]: r for r in rows(spans)}
    assert set(by) == {"before", "after"}
    assert by["after"]["parent_span_id"] is None
    assert processor.stats()["dropped"]["shutdown"] == 1
    assert llamonitor._handoff.external_parent is None


def test_bad_span_is_counted_never_raised(otel: Any, spans: Any) -> None:
    """A span that cannot be stored (no start time) is dropped and counted,
    without raising and without losing the spans of its batch."""
    tracer, processor = otel
    ctx = OTelSpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    processor.on_end(ReadableSpan(name="broken", context=ctx, start_time=None, end_time=None))
    with tracer.start_as_current_span("fine"):
        pass
    assert processor.force_flush(5000)
    assert [r["operation_name"] for r in rows(spans)] == ["fine"]
    assert processor.stats()["dropped"]["invalid"] == 1


def test_span_the_encoder_refuses_loses_only_itself(
    otel: Any, spans: Any, internal_errors: Any
) -> None:
    """A span the OTLP encoder raises on is dropped, counted and reported once;
    the spans of its batch are stored."""
    tracer, processor = otel
    ctx = OTelSpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span("before"):
        pass
    processor.on_end(ReadableSpan(name="broken", context=ctx, start_time=1, kind="?"))  # type: ignore[arg-type]
    with tracer.start_as_current_span("after"):
        pass
    assert processor.force_flush(5000)
    assert sorted(r["operation_name"] for r in rows(spans)) == ["after", "before"]
    assert processor.stats()["dropped"]["conversion"] == 1
    assert [kind for kind, _ in internal_errors] == ["otel_convert"]
    internal_errors.clear()


def test_open_span_table_is_bounded(otel: Any, spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTel spans that never end do not grow the bridge's tables past their bound."""
    tracer, _ = otel
    monkeypatch.setattr(_bridge, "MAX_OPEN_SPANS", 50)
    before = _bridge.stats["evicted_spans"]

    @monitor_llm(operation_name="leaky")
    def leaky() -> None:
        for _ in range(200):
            tracer.start_span("never_ended")

    leaky()
    assert len(_bridge._spans) <= 50
    assert _bridge.stats["evicted_spans"] - before == 150


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the OpenTelemetry SDK, the import error names the extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    monkeypatch.delitem(sys.modules, "llamonitor.otel._processor")
    with pytest.raises(ImportError, match=r"pip install 'llamonitor\[otlp\]'"):
        importlib.import_module("llamonitor.otel._processor")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_writes_its_own_spans_once(tmp_path: Path) -> None:
    """Spans queued before fork are handed over once (by the parent); the
    child's own spans by the child."""
    initialize_monitoring(MonitorConfig.for_local_dev(tmp_path))
    provider = TracerProvider()
    processor = SpanProcessor(interval_seconds=60, batch_size=10_000)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        for _ in range(20):
            with tracer.start_as_current_span("parent_span"):
                pass
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for _ in range(5):
                    with tracer.start_as_current_span("child_span"):
                        pass
                ok = processor.force_flush(10_000) and shutdown_monitoring(20)
                code = 0 if ok else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert processor.force_flush(10_000)
    finally:
        provider.shutdown()
        assert shutdown_monitoring(20)
    import duckdb

    found = duckdb.execute(
        f"select operation_name, process_id, count(*) from read_parquet('{tmp_path}/**/*.parquet') "
        "group by all order by 1"
    ).fetchall()
    assert found == [("child_span", pid, 5), ("parent_span", os.getpid(), 20)]
