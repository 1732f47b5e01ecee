"""``@monitor_llm``: every parameter, every kind of callable, streams, lifecycle, sampling."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import llamonitor
from _helpers import TEXT_COLUMNS, one, rows
from llamonitor import (
    CollectorRegistry,
    MetricCollector,
    SpanContext,
    TextCollector,
    current_span,
    monitor_llm,
    monitoring_session,
)
from llamonitor.testing import capture_spans


def attrs(row: dict[str, Any]) -> Any:
    raw = row["custom_attributes"]
    return None if raw is None else json.loads(raw)


class Boom(Exception):
    """An exception of the user's."""


class Faulty(MetricCollector):
    """A collector that always raises."""

    error = RuntimeError("collector bug")

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any] | None:
        raise self.error

    @property
    def metric_type(self) -> str:
        return "faulty"


class Length(MetricCollector):
    """A collector that stores len(result)."""

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any] | None:
        return {"custom_attributes": {"length": len(result)}}

    @property
    def metric_type(self) -> str:
        return "length"


# -- parameters ------------------------------------------------------------------------


def test_defaults_name_the_span_by_qualname_and_type_llm_call(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Bare @monitor_llm records one span named by the function's qualname, type llm_call."""

    @monitor_llm
    def plain() -> str:
        return "x"

    assert plain() == "x"
    row = one(spans)
    assert row["operation_name"] == plain.__qualname__
    assert row["operation_type"] == "llm_call"
    assert row["error"] is None and row["error_type"] is None
    assert all(row[c] is None for c in TEXT_COLUMNS)
    assert row["custom_attributes"] is None
    assert row["stream_item_count"] is None


def test_operation_name_positional_or_keyword_and_operation_type(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """operation_name (positional or keyword) and operation_type are stored as given."""

    @monitor_llm("by_position")
    def a() -> None:
        pass

    @monitor_llm(operation_name="by_keyword", operation_type="tool")
    def b() -> None:
        pass

    a()
    b()
    got = {r["operation_name"]: r["operation_type"] for r in rows(spans)}
    assert got == {"by_position": "llm_call", "by_keyword": "tool"}


def test_measure_text_true_records_all_four_metrics(spans: llamonitor.InMemoryBackend) -> None:
    """measure_text=True measures chars, words, UTF-8 bytes and lines of the result."""

    @monitor_llm(measure_text=True)
    def gen() -> str:
        return "héllo world\nsecond line"

    gen()
    row = one(spans)
    assert row["text_char_count"] == 23
    assert row["text_word_count"] == 4
    assert row["text_byte_size"] == 24
    assert row["text_line_count"] == 2


def test_measure_text_list_records_only_the_named_metrics(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """measure_text=[...] fills only the chosen columns; a single name works too."""

    @monitor_llm("two", measure_text=["word_count", "line_count"])
    def two() -> str:
        return "a b c\nd"

    @monitor_llm("one", measure_text="byte_size")  # type: ignore[call-overload]
    def single() -> str:
        return "ab"

    two()
    single()
    got = {r["operation_name"]: r for r in rows(spans)}
    assert [got["two"][c] for c in TEXT_COLUMNS] == [None, 4, None, 2]
    assert [got["one"][c] for c in TEXT_COLUMNS] == [None, None, 2, None]


def test_unknown_measure_text_metric_fails_at_decoration() -> None:
    """An unknown text metric name raises ValueError naming it, when decorating."""
    with pytest.raises(ValueError, match="tokens"):
        monitor_llm(measure_text=["char_count", "tokens"])


def test_measure_images_adds_image_metrics(spans: llamonitor.InMemoryBackend) -> None:
    """measure_images=True records image_count (0 for a result without images)."""
    pytest.importorskip("llamonitor.instrument._images")

    @monitor_llm(measure_images=True)
    def no_images() -> str:
        return "just text"

    no_images()
    assert one(spans)["image_count"] == 0


def test_collectors_by_registry_name_and_by_instance(spans: llamonitor.InMemoryBackend) -> None:
    """collectors= accepts registered names and instances; each one's output is stored."""
    CollectorRegistry.register("length_for_test", Length)
    try:

        @monitor_llm("named", collectors=["length_for_test"])
        def named() -> str:
            return "abcd"

        @monitor_llm("instance", collectors=[Length(), TextCollector(["char_count"])])
        def instance() -> str:
            return "abc"

        named()
        instance()
    finally:
        CollectorRegistry.unregister("length_for_test")
    got = {r["operation_name"]: r for r in rows(spans)}
    assert attrs(got["named"]) == {"length": 4}
    assert attrs(got["instance"]) == {"length": 3}
    assert got["instance"]["text_char_count"] == 3
    assert got["instance"]["text_word_count"] is None


def test_a_single_collector_name_or_instance_is_accepted(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """collectors= may be one name or one instance instead of a list."""

    @monitor_llm("by_name", collectors="text")  # type: ignore[call-overload]
    def by_name() -> str:
        return "ab"

    @monitor_llm("by_instance", collectors=Length())
    def by_instance() -> str:
        return "abc"

    by_name()
    by_instance()
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["by_name"]["text_char_count"] == 2
    assert attrs(got["by_instance"]) == {"length": 3}


def test_bad_collectors_fail_at_decoration() -> None:
    """An unknown collector name raises KeyError listing the names; a non-collector TypeError."""
    with pytest.raises(KeyError, match="text"):
        monitor_llm(collectors=["no_such_collector"])(lambda: None)
    with pytest.raises(TypeError, match="collector"):
        monitor_llm(collectors=[42])(lambda: None)  # type: ignore[list-item]


def test_session_and_trace_ids_from_arguments(spans: llamonitor.InMemoryBackend) -> None:
    """session_id_from/trace_id_from read the ids from positional or keyword arguments."""

    @monitor_llm("chat", session_id_from="session_id", trace_id_from="request_id")
    def chat(prompt: str, session_id: str, request_id: str | None = None) -> str:
        return prompt

    chat("hi", "s-pos", "t-pos")
    chat("hi", session_id="s-kw", request_id="t-kw")
    got = sorted((r["session_id"], r["trace_id"], r["parent_span_id"]) for r in rows(spans))
    assert got == [("s-kw", "t-kw", None), ("s-pos", "t-pos", None)]


def test_ids_from_arguments_are_inherited_by_children(spans: llamonitor.InMemoryBackend) -> None:
    """Children of a span whose ids came from its arguments share those ids."""

    @monitor_llm("child")
    async def child() -> None:
        pass

    @monitor_llm("agent", session_id_from="user", trace_id_from="conversation")
    async def agent(user: int, *, conversation: str) -> None:
        await child()

    asyncio.run(agent(42, conversation="c-1"))
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["agent"]["session_id"] == got["child"]["session_id"] == "42"
    assert got["agent"]["trace_id"] == got["child"]["trace_id"] == "c-1"
    assert got["child"]["parent_span_id"] == got["agent"]["span_id"]


def test_ids_from_missing_or_none_arguments_fall_back(spans: llamonitor.InMemoryBackend) -> None:
    """A None id argument falls back to the enclosing scope; an omitted one to its default."""

    @monitor_llm("chat", session_id_from="session_id")
    def chat(prompt: str, session_id: str | None = "anonymous") -> None:
        pass

    with monitoring_session("outer"):
        chat("a", None)
    chat("b")
    first, second = rows(spans)
    assert first["session_id"] == "outer"
    assert second["session_id"] == "anonymous"


def test_ids_from_arguments_of_methods_and_kwargs(spans: llamonitor.InMemoryBackend) -> None:
    """session_id_from works on methods (self counted) and on functions taking **kwargs."""

    class Bot:
        @monitor_llm("method", session_id_from="sid")
        def reply(self, sid: str) -> str:
            return sid

    @monitor_llm("kwargs", session_id_from="sid")
    def anything(**kwargs: Any) -> None:
        pass

    Bot().reply("s-method")
    anything(sid="s-kwargs")
    got = {r["operation_name"]: r["session_id"] for r in rows(spans)}
    assert got == {"method": "s-method", "kwargs": "s-kwargs"}


def test_ids_from_an_unknown_parameter_fail_at_decoration() -> None:
    """session_id_from/trace_id_from naming no parameter raise ValueError at decoration."""
    with pytest.raises(ValueError, match="session_id_from='sid'"):
        monitor_llm(session_id_from="sid")(lambda prompt: prompt)
    with pytest.raises(ValueError, match="trace_id_from='tid'"):
        monitor_llm(trace_id_from="tid")(lambda prompt: prompt)


def test_custom_attributes_are_stored_as_json(spans: llamonitor.InMemoryBackend) -> None:
    """custom_attributes are stored as a JSON object; the dict is copied at decoration."""
    given = {"model": "gpt-4", "temperature": 0.2, "tags": ["a", "b"], "nested": {"k": None}}

    @monitor_llm(custom_attributes=given)
    def f() -> None:
        pass

    given["model"] = "changed later"
    f()
    assert attrs(one(spans)) == {
        "model": "gpt-4",
        "temperature": 0.2,
        "tags": ["a", "b"],
        "nested": {"k": None},
    }


def test_enabled_false_returns_the_function_itself(spans: llamonitor.InMemoryBackend) -> None:
    """enabled=False returns the very function object, and calling it records nothing."""

    async def a() -> None:
        pass

    def s() -> None:
        pass

    def g() -> Iterator[int]:
        yield 1

    for fn in (a, s, g):
        assert monitor_llm(enabled=False)(fn) is fn
    s()
    assert rows(spans) == []


# -- kinds of callables ----------------------------------------------------------------


def test_async_function_is_recorded_and_stays_a_coroutine_function(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """An async function stays a coroutine function and records one span per await."""

    @monitor_llm("a")
    async def a(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert inspect.iscoroutinefunction(a)
    assert asyncio.run(a(21)) == 42
    assert one(spans)["operation_name"] == "a"


def test_sync_function_called_inside_a_running_loop(spans: llamonitor.InMemoryBackend) -> None:
    """A sync function called from async code (a running loop) records a linked child span."""

    @monitor_llm("sync_child")
    def sync_child() -> str:
        asyncio.get_running_loop()  # really inside the loop
        return "ok"

    @monitor_llm("async_parent")
    async def async_parent() -> str:
        return sync_child()

    assert not inspect.iscoroutinefunction(sync_child)
    assert asyncio.run(async_parent()) == "ok"
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["sync_child"]["parent_span_id"] == got["async_parent"]["span_id"]


def test_methods_classmethods_and_staticmethods(spans: llamonitor.InMemoryBackend) -> None:
    """Instance, async, class and static methods bind normally and are named Class.method."""

    class Agent:
        factor = 3

        def __init__(self) -> None:
            self.base = 10

        @monitor_llm
        def run(self, x: int) -> int:
            return self.base + x

        @monitor_llm
        async def arun(self, x: int) -> int:
            return self.base - x

        @monitor_llm
        @classmethod
        def build(cls, x: int) -> int:
            return cls.factor * x

        @monitor_llm
        @staticmethod
        def helper(x: int) -> int:
            return -x

    agent = Agent()
    assert agent.run(1) == 11
    assert asyncio.run(agent.arun(1)) == 9
    assert Agent.build(2) == 6
    assert agent.build(2) == 6
    assert Agent.helper(5) == -5
    names = sorted(r["operation_name"].rsplit(".", 2)[-2:][1] for r in rows(spans))
    assert names == ["arun", "build", "build", "helper", "run"]
    assert all(".Agent." in r["operation_name"] for r in spans.rows())


def test_partial_callables_sync_and_async(spans: llamonitor.InMemoryBackend) -> None:
    """functools.partial of sync and async functions work, named after the wrapped function."""

    async def ask(model: str, prompt: str) -> str:
        return f"{model}:{prompt}"

    def tell(model: str, prompt: str) -> str:
        return f"{model}!{prompt}"

    ask_gpt = monitor_llm(functools.partial(ask, "gpt"))
    tell_gpt = monitor_llm(measure_text=True)(functools.partial(tell, "gpt"))
    assert inspect.iscoroutinefunction(ask_gpt)
    assert asyncio.run(ask_gpt("hi")) == "gpt:hi"
    assert tell_gpt("yo") == "gpt!yo"
    got = {r["operation_name"].rsplit(".", 1)[-1]: r for r in rows(spans)}
    assert set(got) == {"ask", "tell"}
    assert got["tell"]["text_char_count"] == len("gpt!yo")


def test_callable_objects_with_async_call(spans: llamonitor.InMemoryBackend) -> None:
    """An instance whose __call__ is async is awaited and recorded."""

    class Model:
        async def __call__(self, prompt: str) -> str:
            await asyncio.sleep(0)
            return prompt.upper()

    wrapped = monitor_llm("model")(Model())
    assert asyncio.run(wrapped("hi")) == "HI"
    assert one(spans)["operation_name"] == "model"


def test_wraps_metadata_is_kept() -> None:
    """Name, qualname, module, doc, annotations, signature and __wrapped__ are kept."""

    def original(prompt: str, *, n: int = 1) -> str:
        """Docstring of the original."""
        return prompt

    wrapped = monitor_llm("x")(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__qualname__ == original.__qualname__
    assert wrapped.__module__ == original.__module__
    assert wrapped.__doc__ == "Docstring of the original."
    assert wrapped.__annotations__ == original.__annotations__
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(original)


# -- streams ---------------------------------------------------------------------


def test_sync_generator_span_ends_with_the_stream(spans: llamonitor.InMemoryBackend) -> None:
    """A sync generator is one span covering the whole stream, with item count and text."""

    @monitor_llm("stream", measure_text=True)
    def stream() -> Iterator[str]:
        yield "Hello"
        yield " streamed"
        yield " world"

    assert inspect.isgeneratorfunction(stream)
    it = stream()
    assert next(it) == "Hello"
    assert llamonitor.flush(5)
    assert spans.rows() == []  # not ended yet
    assert list(it) == [" streamed", " world"]
    row = one(spans)
    assert row["stream_item_count"] == 3
    assert row["text_char_count"] == len("Hello streamed world")
    assert row["text_word_count"] == 3
    assert row["error"] is None
    assert attrs(row) is None


def test_async_generator_span_ends_with_the_stream(spans: llamonitor.InMemoryBackend) -> None:
    """An async generator is one span covering the whole stream, with item count and text."""

    @monitor_llm("astream", measure_text=["char_count"])
    async def astream() -> AsyncIterator[str]:
        for part in ("a", "bc", "def"):
            await asyncio.sleep(0)
            yield part

    async def main() -> list[str]:
        return [x async for x in astream()]

    assert inspect.isasyncgenfunction(astream)
    assert asyncio.run(main()) == ["a", "bc", "def"]
    row = one(spans)
    assert row["stream_item_count"] == 3
    assert row["text_char_count"] == 6
    assert row["text_word_count"] is None


def test_time_to_first_item_of_sync_and_async_streams(spans: llamonitor.InMemoryBackend) -> None:
    """time_to_first_token_ms is at least the 30 ms the first item took; duration covers all."""

    @monitor_llm("sync")
    def slow_first() -> Iterator[int]:
        time.sleep(0.03)
        yield 1
        time.sleep(0.01)
        yield 2

    @monitor_llm("async")
    async def aslow_first() -> AsyncIterator[int]:
        await asyncio.sleep(0.03)
        yield 1
        await asyncio.sleep(0.01)
        yield 2

    async def consume() -> list[int]:
        return [x async for x in aslow_first()]

    assert list(slow_first()) == [1, 2]
    assert asyncio.run(consume()) == [1, 2]
    for row in rows(spans):
        assert 30 <= row["time_to_first_token_ms"] < 2000, row["operation_name"]
        assert row["duration_ms"] >= 40
        assert row["duration_ms"] >= row["time_to_first_token_ms"]


def test_generator_send_throw_and_return_value_pass_through(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """send() and throw() reach the inner generator; its return value survives yield from."""
    thrown: list[BaseException] = []

    @monitor_llm("echo")
    def echo() -> Any:
        received = []
        value = yield "ready"
        while value is not None:
            received.append(value)
            try:
                value = yield f"got {value}"
            except KeyError as exc:
                thrown.append(exc)
                value = yield "recovered"
        return received

    def outer() -> Any:
        return (yield from echo())

    gen = outer()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    error = KeyError("k")
    assert gen.throw(error) == "recovered"
    assert thrown == [error] and thrown[0] is error
    assert gen.send("b") == "got b"
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == ["a", "b"]
    row = one(spans)
    assert row["stream_item_count"] == 4
    assert row["error"] is None


def test_async_generator_asend_and_athrow_pass_through(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """asend() and athrow() reach the inner async generator."""

    @monitor_llm("aecho")
    async def aecho() -> AsyncIterator[str]:
        value = yield "ready"
        try:
            value = yield f"got {value}"
        except KeyError:
            yield "recovered"

    async def main() -> list[str]:
        gen = aecho()
        out = [await gen.asend(None), await gen.asend("x")]
        out.append(await gen.athrow(KeyError("k")))
        with pytest.raises(StopAsyncIteration):
            await gen.asend(None)
        return out

    assert asyncio.run(main()) == ["ready", "got x", "recovered"]
    row = one(spans)
    assert row["stream_item_count"] == 3
    assert row["error"] is None


def test_closing_a_sync_stream_early_records_stream_closed_early(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """close() (or dropping the generator after a break) ends the span, marked closed early."""
    finalized: list[str] = []

    @monitor_llm("tokens", custom_attributes={"model": "m"})
    def tokens(tag: str) -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            finalized.append(tag)

    it = tokens("closed")
    assert [next(it), next(it)] == [0, 1]
    it.close()
    for i in tokens("broken"):
        if i == 4:
            break
    gc.collect()
    assert finalized == ["closed", "broken"]
    got = sorted(rows(spans), key=lambda r: r["stream_item_count"])
    assert [r["stream_item_count"] for r in got] == [2, 5]
    for row in got:
        assert row["error"] is None
        assert attrs(row) == {"model": "m", "stream_closed_early": True}


def test_closing_an_async_stream_early_records_stream_closed_early(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """aclose() before the end closes the inner stream and records stream_closed_early."""
    finalized: list[bool] = []

    @monitor_llm("atokens")
    async def atokens() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            finalized.append(True)

    async def main() -> None:
        gen = atokens()
        assert await gen.__anext__() == 0
        await gen.aclose()

    asyncio.run(main())
    assert finalized == [True]
    row = one(spans)
    assert row["stream_item_count"] == 1
    assert attrs(row) == {"stream_closed_early": True}


def test_stream_that_raises_halfway_records_the_error_and_reraises_it(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A stream raising after some items records error_type; the same exception propagates."""
    error = Boom("lost connection")

    @monitor_llm("sync")
    def broken() -> Iterator[str]:
        yield "a"
        raise error

    @monitor_llm("async")
    async def abroken() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        raise error

    caught = []
    try:
        list(broken())
    except Boom as exc:
        caught.append(exc)

    async def main() -> None:
        try:
            [x async for x in abroken()]
        except Boom as exc:
            caught.append(exc)

    asyncio.run(main())
    assert caught == [error, error] and all(c is error for c in caught)
    got = {r["operation_name"]: r for r in rows(spans)}
    for name, items in (("sync", 1), ("async", 2)):
        assert got[name]["error"] is True
        assert got[name]["error_type"].endswith("Boom")
        assert got[name]["error_message"] == "lost connection"
        assert got[name]["stream_item_count"] == items
        assert attrs(got[name]) is None


def test_stream_context_is_active_only_inside_the_generator_body(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Calls made by the stream body are its children; calls made by the consumer are not."""

    @monitor_llm("from_body")
    def from_body() -> None:
        pass

    @monitor_llm("from_consumer")
    def from_consumer() -> None:
        pass

    inside: list[Any] = []

    @monitor_llm("stream")
    def stream() -> Iterator[int]:
        for i in range(2):
            inside.append(current_span())
            from_body()
            yield i

    with SpanContext() as consumer:
        for _ in stream():
            assert current_span() is consumer
            from_consumer()
    got = rows(spans)
    (s,) = [r for r in got if r["operation_name"] == "stream"]
    assert s["parent_span_id"] == consumer.span_id
    assert {sp.span_id for sp in inside} == {s["span_id"]}
    assert {r["parent_span_id"] for r in got if r["operation_name"] == "from_body"} == {
        s["span_id"]
    }
    assert {r["parent_span_id"] for r in got if r["operation_name"] == "from_consumer"} == {
        consumer.span_id
    }


def test_async_stream_context_is_active_only_inside_the_generator_body(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """The async stream's span is current in its body, never in the consumer between items."""
    inside: list[Any] = []
    outside: list[Any] = []

    @monitor_llm("astream")
    async def astream() -> AsyncIterator[int]:
        for i in range(3):
            inside.append(current_span())
            await asyncio.sleep(0)
            inside.append(current_span())
            yield i

    async def main() -> None:
        async for _ in astream():
            outside.append(current_span())

    asyncio.run(main())
    row = one(spans)
    assert {s.span_id for s in inside} == {row["span_id"]}
    assert outside == [None, None, None]


def test_breaking_out_of_async_for_records_stream_closed_early(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """An async stream abandoned by break is finalized by the loop and marked closed early."""

    @monitor_llm("atokens")
    async def atokens() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    async def main() -> None:
        async for i in atokens():
            if i == 2:
                break
        # The loop's finalizer closes the abandoned generator in a task of its
        # own; let it run (asyncio.run would cancel it at shutdown).
        await asyncio.sleep(0.01)

    asyncio.run(main())
    row = one(spans)
    assert row["stream_item_count"] == 3
    assert attrs(row) == {"stream_closed_early": True}


def test_empty_stream_has_zero_items_and_no_first_item_time(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A stream that yields nothing records 0 items and a null time_to_first_token_ms."""

    @monitor_llm(measure_text=True)
    def empty() -> Iterator[str]:
        yield from ()

    assert list(empty()) == []
    row = one(spans)
    assert row["stream_item_count"] == 0
    assert row["time_to_first_token_ms"] is None
    assert row["text_char_count"] is None


def test_unmonitored_streams_still_pass_send_throw_and_close_through() -> None:
    """Before monitoring starts, send/throw/close (and their async forms) reach the stream."""
    events: list[Any] = []

    @monitor_llm
    def gen() -> Any:
        try:
            value = yield "ready"
            events.append(value)
            try:
                yield "waiting"
            except KeyError:
                events.append("caught")
                yield "recovered"
            yield "more"
        finally:
            events.append("closed")

    @monitor_llm
    async def agen() -> AsyncIterator[str]:
        try:
            value = yield "ready"
            events.append(value)
            try:
                yield "waiting"
            except KeyError:
                events.append("caught")
                yield "recovered"
            yield "more"
        finally:
            events.append("aclosed")

    g = gen()
    assert [next(g), g.send("sent"), g.throw(KeyError("k"))] == ["ready", "waiting", "recovered"]
    g.close()

    async def main() -> list[str]:
        a = agen()
        out = [await a.asend(None), await a.asend("asent"), await a.athrow(KeyError("k"))]
        await a.aclose()
        return out

    assert asyncio.run(main()) == ["ready", "waiting", "recovered"]
    assert events == ["sent", "caught", "closed", "asent", "caught", "aclosed"]


# -- lifecycle ------------------------------------------------------------------------


def test_decorating_before_initialization_and_after_shutdown_records_nothing() -> None:
    """A function decorated before monitoring starts works always, recorded only while on."""

    @monitor_llm("early", measure_text=True)
    def early(x: str) -> str:
        return x

    @monitor_llm("early_stream")
    def early_stream() -> Iterator[int]:
        yield 1

    assert early("before") == "before"
    assert list(early_stream()) == [1]
    with capture_spans() as spans:
        assert early("during") == "during"
        assert list(early_stream()) == [1]
    assert early("after") == "after"
    assert list(early_stream()) == [1]
    assert sorted(r["operation_name"] for r in spans.rows()) == ["early", "early_stream"]
    assert [r["text_char_count"] for r in spans.rows() if r["operation_name"] == "early"] == [6]


def test_monitoring_disabled_in_config_records_nothing() -> None:
    """MonitorConfig(enabled=False) leaves decorated functions working and unrecorded."""

    @monitor_llm
    def f() -> int:
        return 1

    with capture_spans(enabled=False) as spans:
        assert f() == 1
    assert spans.rows() == []


# -- sampling ---------------------------------------------------------------------------


def test_sample_rate_zero_records_nothing_and_counts_sampled_out() -> None:
    """sample_rate=0.0 records no span and counts every span (children too) as sampled out."""

    @monitor_llm("child")
    def child() -> str:
        return "c"

    @monitor_llm("parent", measure_text=True)
    def parent() -> str:
        return child()

    with capture_spans(sample_rate=0.0) as spans:
        for _ in range(5):
            assert parent() == "c"
        assert llamonitor.flush(5)
        writer = llamonitor.get_writer()
        assert writer is not None
        health = writer.health_check()
    assert spans.rows() == []
    assert health["events_sampled_out"] == 10
    assert health["events_written"] == 0


def test_children_follow_the_root_sampling_decision() -> None:
    """With sample_rate=0.5 every trace is kept or dropped whole, never in part."""

    @monitor_llm("child")
    async def child() -> None:
        pass

    @monitor_llm("root")
    async def root() -> None:
        await asyncio.gather(child(), child())

    async def main() -> None:
        for _ in range(100):
            await root()

    with capture_spans(sample_rate=0.5) as spans:
        asyncio.run(main())
        assert llamonitor.flush(5)
        writer = llamonitor.get_writer()
        assert writer is not None
        sampled_out = writer.health_check()["events_sampled_out"]
    per_trace: dict[str, list[str]] = {}
    for row in spans.rows():
        per_trace.setdefault(row["trace_id"], []).append(row["operation_name"])
    assert all(sorted(names) == ["child", "child", "root"] for names in per_trace.values())
    assert 0 < len(per_trace) < 100
    assert sampled_out == 3 * (100 - len(per_trace))


# -- monitoring errors ------------------------------------------------------------------


def test_faulty_collector_is_swallowed_when_fail_silently(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    """A collector that raises is counted; the call returns and its span is still recorded."""

    @monitor_llm("call", measure_text=True, collectors=[Faulty(), Length()])
    def call() -> str:
        return "four"

    assert call() == "four"
    row = one(spans)
    assert row["text_char_count"] == 4
    assert attrs(row) == {"length": 4}
    assert internal_errors == [("collector:faulty", Faulty.error)]
    internal_errors.clear()


def test_fail_silently_false_raises_monitoring_errors(
    internal_errors: list[tuple[str, BaseException]],
) -> None:
    """With fail_silently=False a faulty collector's exception is raised into the caller."""

    @monitor_llm("call", collectors=[Faulty()])
    def call() -> str:
        return "x"

    @monitor_llm("acall", collectors=[Faulty()])
    async def acall() -> str:
        return "x"

    with capture_spans(fail_silently=False):
        with pytest.raises(RuntimeError) as sync_info:
            call()
        with pytest.raises(RuntimeError) as async_info:
            asyncio.run(acall())
    assert sync_info.value is Faulty.error
    assert async_info.value is Faulty.error
    assert internal_errors and {kind for kind, _ in internal_errors} >= {"collector:faulty"}
    internal_errors.clear()


# -- timing and errors ------------------------------------------------------------------


def test_duration_and_timestamp_of_sync_and_async_calls(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A 50 ms call has 50 <= duration_ms < 2000; timestamp is its UTC start time."""

    @monitor_llm("sync")
    def slow() -> None:
        time.sleep(0.05)

    @monitor_llm("async")
    async def aslow() -> None:
        await asyncio.sleep(0.05)

    before = datetime.now(timezone.utc)
    slow()
    asyncio.run(aslow())
    after = datetime.now(timezone.utc)
    for row in rows(spans):
        assert 50 <= row["duration_ms"] < 2000, row["operation_name"]
        ts = row["timestamp"]
        assert ts.tzinfo is not None
        assert before - timedelta(milliseconds=50) <= ts <= after


def test_exceptions_are_recorded_with_type_and_message(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A raising call records error, error_type (qualified for non-builtins), error_message."""

    @monitor_llm("builtin")
    def builtin() -> None:
        raise ValueError("bad value")

    @monitor_llm("custom")
    async def custom() -> None:
        raise Boom("custom failure")

    with pytest.raises(ValueError):
        builtin()
    with pytest.raises(Boom):
        asyncio.run(custom())
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["builtin"]["error"] is True
    assert got["builtin"]["error_type"] == "ValueError"
    assert got["builtin"]["error_message"] == "bad value"
    assert got["custom"]["error_type"] == f"{Boom.__module__}.Boom"
    assert got["custom"]["error_message"] == "custom failure"
