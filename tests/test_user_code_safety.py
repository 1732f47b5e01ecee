"""Never break user code: results, exceptions and odd values pass through monitoring untouched."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import llamonitor
from _helpers import TEXT_COLUMNS, one, rows
from llamonitor import TextCollector, current_span, monitor_llm
from llamonitor.testing import capture_spans


def innermost_code(tb: TracebackType | None) -> Any:
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code


class Boom(Exception):
    """The user's exception."""


class Hostile:
    """A result on which every operation monitoring might try raises."""

    def _raise(self, *args: Any) -> Any:
        raise RuntimeError("do not touch")

    __str__ = __repr__ = __len__ = __bool__ = __iter__ = __format__ = _raise  # type: ignore[assignment]
    __eq__ = __hash__ = __getitem__ = __contains__ = _raise  # type: ignore[assignment]


class Message(BaseModel):
    role: str
    content: str


class PydanticResult(BaseModel):
    id: str
    message: Message


class RaisingStr(str):
    """A str subclass whose own methods raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__")

    def __len__(self) -> int:
        raise RuntimeError("__len__")

    def split(self, *args: Any, **kwargs: Any) -> list[str]:  # type: ignore[override]
        raise RuntimeError("split")


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"content": None}
    d["content"] = d
    d["text"] = [d]
    return d


def cyclic_list() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    x.append({"text": x})
    return x


ODD_RESULTS: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "bytes": lambda: b"\x00\xffbinary",
    "bytearray": lambda: bytearray(b"abc"),
    "int": lambda: 7,
    "numpy_array": lambda: np.arange(12).reshape(3, 4),
    "numpy_scalar": lambda: np.float32(1.5),
    "numpy_strings": lambda: np.array(["a", "b"]),
    "pydantic": lambda: PydanticResult(id="x", message=Message(role="ai", content="hi")),
    "hostile": Hostile,
    "cyclic_dict": cyclic_dict,
    "cyclic_list": cyclic_list,
    "deep_dict": lambda: {"content": {"content": {"content": {"content": {"text": {"x": 1}}}}}},
    "raising_str_subclass": lambda: RaisingStr("abc def"),
    "lone_surrogate": lambda: "a\ud800b",
    "generator_object": lambda: (i for i in range(3)),
    "type": lambda: dict,
    "exception_instance": lambda: ValueError("returned, not raised"),
}


# -- results -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ODD_RESULTS))
def test_odd_results_pass_through_the_same_object(
    spans: llamonitor.InMemoryBackend, name: str
) -> None:
    """Whatever the function returns comes back as the same object, and a span is recorded."""
    value = ODD_RESULTS[name]()

    @monitor_llm("sync", measure_text=True, collectors=["text"], custom_attributes={"k": 1})
    def sync() -> Any:
        return value

    @monitor_llm("async", measure_text=True)
    async def asynchronous() -> Any:
        return value

    @monitor_llm("stream", measure_text=True, collectors=[TextCollector()])
    def stream() -> Iterator[Any]:
        yield value
        yield value

    assert sync() is value
    assert asyncio.run(asynchronous()) is value
    assert all(item is value for item in stream())
    got = {r["operation_name"]: r for r in rows(spans)}
    assert set(got) == {"sync", "async", "stream"}
    assert all(r["error"] is None for r in got.values())


def test_text_of_a_str_subclass_with_raising_methods_is_measured(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A str subclass is measured as the plain string it holds, never via its own methods."""

    @monitor_llm(measure_text=True)
    def f() -> str:
        return RaisingStr("abc def")

    f()
    row = one(spans)
    assert [row[c] for c in TEXT_COLUMNS] == [7, 2, 7, 1]


def test_lone_surrogates_are_measured(spans: llamonitor.InMemoryBackend) -> None:
    """Text that is not valid UTF-8 (a lone surrogate) is still measured, not an error."""

    @monitor_llm(measure_text=True)
    def f() -> str:
        return "a\ud800b"

    f()
    assert [one(spans)[c] for c in TEXT_COLUMNS] == [3, 1, 5, 1]


def test_huge_string_is_measured_exactly(spans: llamonitor.InMemoryBackend) -> None:
    """A 3 MB result is returned as is and measured exactly (across internal slices)."""
    text = ("wörd " * 600_000) + "end\n"

    @monitor_llm(measure_text=True)
    def f() -> str:
        return text

    assert f() is text
    row = one(spans)
    assert row["text_char_count"] == len(text)
    assert row["text_word_count"] == 600_001
    assert row["text_byte_size"] == len(text.encode())
    assert row["text_line_count"] == 1


def test_a_huge_stream_is_measured_exactly(spans: llamonitor.InMemoryBackend) -> None:
    """A stream of many chunks adding up to more than the kept-text limit is measured exactly."""

    @monitor_llm(measure_text=True)
    def f() -> Iterator[str]:
        for _ in range(20_000):
            yield "token "

    assert sum(1 for _ in f()) == 20_000
    row = one(spans)
    assert row["text_char_count"] == 120_000
    assert row["text_word_count"] == 20_000
    assert row["stream_item_count"] == 20_000


def test_a_result_whose_attributes_raise_is_not_an_error(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A result whose attribute access raises is simply a result without text."""

    class Proxy:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"lazy attribute {name} failed")

    value = Proxy()

    @monitor_llm(measure_text=True)
    def f() -> Any:
        return value

    assert f() is value
    row = one(spans)
    assert row["text_char_count"] is None and row["error"] is None


def test_extractor_returning_a_non_str_is_converted(spans: llamonitor.InMemoryBackend) -> None:
    """An extractor returning a non-str value has that value's str() measured."""

    @monitor_llm(collectors=[TextCollector(extractor=lambda r: r["n"])])
    def f() -> dict[str, int]:
        return {"n": 12345}

    f()
    assert one(spans)["text_char_count"] == 5


def test_extractor_that_raises_is_swallowed(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    """An extractor that raises is counted as a monitoring error; the result still returns."""
    error = KeyError("answer")

    def extractor(result: Any) -> str:
        raise error

    @monitor_llm(collectors=[TextCollector(extractor=extractor)])
    def f() -> str:
        return "x"

    @monitor_llm(collectors=[TextCollector(extractor=extractor)])
    def g() -> Iterator[str]:
        yield "x"

    assert f() == "x"
    assert list(g()) == ["x"]
    assert [r["text_char_count"] for r in rows(spans)] == [None, None]
    assert [kind for kind, _ in internal_errors] == ["measure_text", "measure_text"]
    assert all(exc is error for _, exc in internal_errors)
    internal_errors.clear()


# -- exceptions --------------------------------------------------------------------


def test_sync_exception_is_the_same_object_with_the_users_frame_innermost(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A sync call's exception is re-raised as the same object; its traceback ends in user code."""
    error = Boom("x")

    def user_fn() -> None:
        raise error

    wrapped = monitor_llm(measure_text=True, collectors=["text"])(user_fn)
    with pytest.raises(Boom) as info:
        wrapped()
    assert info.value is error
    assert innermost_code(info.value.__traceback__) is user_fn.__code__
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert one(spans)["error_type"].endswith("Boom")


def test_async_exception_is_the_same_object_with_the_users_frame_innermost(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """An async call's exception is re-raised as the same object, traceback ending in user code."""
    error = Boom("x")

    async def user_fn() -> None:
        await asyncio.sleep(0)
        raise error

    wrapped = monitor_llm(user_fn)
    with pytest.raises(Boom) as info:
        asyncio.run(wrapped())
    assert info.value is error
    assert innermost_code(info.value.__traceback__) is user_fn.__code__
    assert info.value.__context__ is None
    assert one(spans)["error"] is True


def test_stream_exceptions_are_the_same_object_with_the_users_frame_innermost(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Sync and async streams re-raise the user's exception object with its traceback."""
    error = Boom("x")

    def user_gen() -> Iterator[int]:
        yield 1
        raise error

    async def user_agen() -> AsyncIterator[int]:
        yield 1
        raise error

    with pytest.raises(Boom) as info:
        list(monitor_llm(measure_text=True)(user_gen)())
    assert info.value is error
    assert innermost_code(info.value.__traceback__) is user_gen.__code__
    assert info.value.__context__ is None

    async def consume() -> None:
        async for _ in monitor_llm(user_agen)():
            pass

    error.__traceback__ = None
    with pytest.raises(Boom) as ainfo:
        asyncio.run(consume())
    assert ainfo.value is error
    assert innermost_code(ainfo.value.__traceback__) is user_agen.__code__
    assert [r["error"] for r in rows(spans)] == [True, True]


def test_exceptions_pass_through_unmonitored_calls_too() -> None:
    """Before monitoring starts, the same exception object and innermost frame come through."""
    error = Boom("x")

    def user_fn() -> None:
        raise error

    with pytest.raises(Boom) as info:
        monitor_llm(user_fn)()
    assert info.value is error
    assert innermost_code(info.value.__traceback__) is user_fn.__code__


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_pass_through_and_are_recorded(
    spans: llamonitor.InMemoryBackend, exc_type: type[BaseException]
) -> None:
    """BaseExceptions (KeyboardInterrupt, SystemExit...) propagate unchanged and are recorded."""
    error = exc_type()

    @monitor_llm("f")
    def f() -> None:
        raise error

    with pytest.raises(exc_type) as info:
        f()
    assert info.value is error
    row = one(spans)
    assert row["error"] is True
    assert row["error_type"] == exc_type.__name__


def test_cancellation_propagates_and_is_recorded(spans: llamonitor.InMemoryBackend) -> None:
    """Cancelling a task running a decorated call cancels it normally; the span says so."""
    started = asyncio.Event

    @monitor_llm("slow")
    async def slow(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(10)

    async def main() -> None:
        ready = started()
        task = asyncio.create_task(slow(ready))
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())
    row = one(spans)
    assert row["error"] is True
    assert row["error_type"].endswith("CancelledError")
    assert row["duration_ms"] < 5000


def test_exception_with_raising_str_is_recorded(spans: llamonitor.InMemoryBackend) -> None:
    """An exception whose __str__ raises still propagates unchanged and is recorded."""

    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    error = Weird()

    @monitor_llm("f")
    def f() -> None:
        raise error

    with pytest.raises(Weird) as info:
        f()
    assert info.value is error
    row = one(spans)
    assert row["error_type"].endswith("Weird")
    assert "Weird" in row["error_message"]


# -- custom attributes ---------------------------------------------------------------


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_non_json_custom_attributes_are_stored_as_repr(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """custom_attributes values JSON cannot hold are stored as their repr, never dropped."""
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    given: dict[str, Any] = {
        "model": "gpt-4",
        "when": when,
        "tags": {"b"},
        "raw": b"\x00",
        "array": np.array([1, 2]),
        "count": np.int64(3),
        "pair": (1, "two"),
        "unprintable": Unprintable(),
        "cyclic": cyclic,
    }

    @monitor_llm(custom_attributes=given)
    def f() -> None:
        pass

    f()
    stored = json.loads(one(spans)["custom_attributes"])
    assert set(stored) == set(given)
    assert stored["model"] == "gpt-4"
    assert stored["when"] == repr(when)
    assert stored["tags"] == repr({"b"})
    assert stored["raw"] == repr(b"\x00")
    assert stored["array"] == repr(np.array([1, 2]))
    assert stored["count"] == repr(np.int64(3))
    assert stored["pair"] == [1, "two"]
    assert stored["unprintable"].startswith("<unrepresentable Unprintable")
    assert stored["cyclic"]["name"] == "loop"


def test_non_string_keys_and_attributes_set_at_runtime_are_kept(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """Non-str keys become strings; attributes set via current_span() keep odd values as repr."""

    @monitor_llm(custom_attributes={("a", 1): "tuple key", 2: "int key"})
    def f() -> None:
        span = current_span()
        assert span is not None
        span.set_attribute("result_shape", np.zeros((2, 3)).shape)
        span.set_attribute("obj", Unprintable())
        span.set_attribute("hostile", Hostile())

    f()
    stored = json.loads(one(spans)["custom_attributes"])
    assert stored["('a', 1)"] == "tuple key"
    assert stored["2"] == "int key"
    assert stored["result_shape"] == [2, 3]
    assert stored["obj"].startswith("<unrepresentable Unprintable")
    assert stored["hostile"].startswith("<unrepresentable Hostile")


def test_custom_attributes_are_strict_json_even_with_nan(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A NaN or infinite float attribute still yields valid (strict) JSON."""

    @monitor_llm(custom_attributes={"score": math.nan, "limit": math.inf})
    def f() -> None:
        pass

    f()

    def reject(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    json.loads(one(spans)["custom_attributes"], parse_constant=reject)


def test_fail_silently_never_raises_for_odd_values_even_when_strict_elsewhere() -> None:
    """With default settings, a run over every odd result records one span each, no error."""

    @monitor_llm(measure_text=True, collectors=["text"])
    def f(make: Callable[[], Any]) -> Any:
        return make()

    with capture_spans() as spans:
        for make in ODD_RESULTS.values():
            f(make)
    assert len(spans.rows()) == len(ODD_RESULTS)


class UnprintableId:
    """An id argument whose ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_an_id_argument_whose_str_and_repr_raise_still_records_the_span(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    """session_id_from / trace_id_from on an unprintable value: the call is recorded
    (with the session it would have had without the argument) and counted."""

    @monitor_llm("lookup", session_id_from="user", trace_id_from="request")
    def lookup(user: Any, request: Any = None) -> str:
        return "ok"

    with llamonitor.monitoring_session("outer"):
        assert lookup(UnprintableId(), request=UnprintableId()) == "ok"
    row = one(spans)
    assert row["operation_name"] == "lookup"
    assert row["session_id"] == "outer"
    assert len(row["trace_id"]) == 32
    health = llamonitor.get_writer().health_check()  # type: ignore[union-attr]
    assert health["events_received"] == health["events_written"] == 1
    assert [kind for kind, _ in internal_errors] == ["id_argument", "id_argument"]
    internal_errors.clear()


@pytest.mark.parametrize(
    ("how", "column", "value"),
    [
        ("set_attribute", "input_tokens", 2**63),
        ("custom_attributes", "max_tokens", 2**64),
        ("collector", "output_tokens", -(2**63) - 1),
        ("set_attribute", "temperature", 10**400),
    ],
    ids=["attribute-2**63", "custom-attribute-2**64", "collector-below-int64", "float-10**400"],
)
def test_a_value_too_large_for_its_column_keeps_the_span_and_the_value(
    spans: llamonitor.InMemoryBackend,
    internal_errors: list[tuple[str, BaseException]],
    how: str,
    column: str,
    value: int,
) -> None:
    """An int outside int64 leaves its column null and stays in custom_attributes
    as given; the span (and the rest of its batch) is stored."""
    key = {"input_tokens": "gen_ai.usage.input_tokens"}.get(column, column)

    class Huge(llamonitor.MetricCollector):
        metric_type = "huge"

        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {key: value} if how == "collector" else {}

    @monitor_llm(
        "big",
        custom_attributes={key: value} if how == "custom_attributes" else None,
        collectors=[Huge()],
    )
    def big() -> str:
        if how == "set_attribute":
            current_span().set_attribute(key, value)  # type: ignore[union-attr]
        return "done"

    @monitor_llm("small")
    def small() -> str:
        return "fine"

    big()
    small()
    got = {r["operation_name"]: r for r in rows(spans)}
    assert set(got) == {"big", "small"}
    assert got["big"][column] is None
    assert json.loads(got["big"]["custom_attributes"])[key] == value
    health = llamonitor.get_writer().health_check()  # type: ignore[union-attr]
    assert health["dropped"]["invalid"] == 0
    # A collector that returns a value its column cannot hold is told so, once.
    expected = [f"collector_value:{column}"] if how == "collector" else []
    assert [kind for kind, _ in internal_errors] == expected
    internal_errors.clear()


def test_a_metric_event_with_an_int_past_int64_is_stored(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """writer.record(MetricEvent(...)) with input_tokens=2**63: stored, column null."""
    event = llamonitor.MetricEvent(
        event_id="e1",
        session_id="s",
        trace_id="t",
        span_id="0" * 16,
        operation_name="ready-made",
        timestamp=dt.datetime.now(dt.timezone.utc),
        duration_ms=1.0,
        input_tokens=2**63,
    )
    assert llamonitor.get_writer().record(event)  # type: ignore[union-attr]
    row = one(spans)
    assert row["input_tokens"] is None
    assert json.loads(row["custom_attributes"]) == {"input_tokens": 2**63}
