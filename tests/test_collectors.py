"""Text found in the usual result shapes, and custom collectors (seed 000's extension point)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import llamonitor
from _helpers import TEXT_COLUMNS, one, rows
from llamonitor import (
    CollectorRegistry,
    Deferred,
    ImageCollector,
    MetricCollector,
    TextCollector,
    monitor_llm,
)


def text_of(row: dict[str, Any]) -> list[Any]:
    return [row[c] for c in TEXT_COLUMNS]


def attrs(row: dict[str, Any]) -> Any:
    raw = row["custom_attributes"]
    return None if raw is None else json.loads(raw)


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    # Names added and built-ins replaced (the seed example registers "cost").
    saved = dict(CollectorRegistry._collectors)
    yield
    CollectorRegistry._collectors.clear()
    CollectorRegistry._collectors.update(saved)


# -- OpenAI / Anthropic shaped responses (attribute shapes of their SDK models) -----


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int = 0
    finish_reason: str = "stop"
    message: ChatCompletionMessage


class CompletionUsage(BaseModel):
    prompt_tokens: int = 5
    completion_tokens: int = 7
    total_tokens: int = 12


class ChatCompletion(BaseModel):
    id: str = "chatcmpl-1"
    object: Literal["chat.completion"] = "chat.completion"
    model: str = "gpt-4o"
    choices: list[Choice]
    usage: CompletionUsage = CompletionUsage()


class ChoiceDelta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str = "chatcmpl-1"
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    model: str = "gpt-4o"
    choices: list[ChunkChoice]


class ResponseOutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str


class ResponseOutputMessage(BaseModel):
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ResponseOutputText]


class Response(BaseModel):
    """OpenAI Responses API: ``output_text`` is a property over ``output``."""

    id: str = "resp_1"
    object: Literal["response"] = "response"
    output: list[ResponseOutputMessage]

    @property
    def output_text(self) -> str:
        return "".join(c.text for m in self.output for c in m.content)


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str = "toolu_1"
    name: str = "search"
    input: dict[str, Any] = {}


class Usage(BaseModel):
    input_tokens: int = 3
    output_tokens: int = 4


class Message(BaseModel):
    """Anthropic Messages API response."""

    id: str = "msg_1"
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str = "claude-sonnet"
    content: list[TextBlock | ToolUseBlock]
    stop_reason: str = "end_turn"
    usage: Usage = Usage()


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class RawContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int = 0
    delta: TextDelta


class RawMessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class WithText:
    def __init__(self, text: str) -> None:
        self.text = text


@dataclass
class WithContent:
    content: str
    role: str = "ai"


def chat(*contents: str | None) -> ChatCompletion:
    return ChatCompletion(
        choices=[
            Choice(index=i, message=ChatCompletionMessage(content=c))
            for i, c in enumerate(contents)
        ]
    )


SHAPES: dict[str, tuple[Any, str]] = {
    "str": ("Hello big world", "Hello big world"),
    "dict_text": ({"text": "Generated response...", "id": 1}, "Generated response..."),
    "dict_content": ({"content": "two words"}, "two words"),
    "dict_output": ({"output": "out put", "score": 0.5}, "out put"),
    "dict_openai_dump": (
        {"id": "x", "choices": [{"message": {"role": "assistant", "content": "from dict"}}]},
        "from dict",
    ),
    "dict_anthropic_dump": (
        {"content": [{"type": "text", "text": "block one "}, {"type": "text", "text": "two"}]},
        "block one two",
    ),
    "object_text": (WithText("attribute text"), "attribute text"),
    "object_content": (WithContent("dataclass content"), "dataclass content"),
    "openai_chat_completion": (chat("The answer is 42.\nDone."), "The answer is 42.\nDone."),
    "openai_two_choices": (chat("first", " second"), "first second"),
    "openai_responses": (
        Response(output=[ResponseOutputMessage(content=[ResponseOutputText(text="resp text")])]),
        "resp text",
    ),
    "anthropic_message": (
        Message(content=[TextBlock(text="Hi "), ToolUseBlock(), TextBlock(text="there")]),
        "Hi there",
    ),
    "list_of_str": (["a ", "b ", "c"], "a b c"),
    "unicode": ("naïve café 😀", "naïve café 😀"),
}


def expected(text: str) -> list[int]:
    lines = 0 if not text else text.count("\n") + (0 if text.endswith("\n") else 1)
    return [len(text), len(text.split()), len(text.encode()), lines]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_text_is_found_in_the_usual_result_shapes(
    spans: llamonitor.InMemoryBackend, shape: str
) -> None:
    """measure_text finds the text of str, dict, object, OpenAI and Anthropic results."""
    result, text = SHAPES[shape]

    @monitor_llm("call", measure_text=True)
    async def call() -> Any:
        return result

    assert asyncio.run(call()) is result
    assert text_of(one(spans)) == expected(text)


@pytest.mark.parametrize(
    "result",
    [
        {"id": 1, "score": 0.9},
        chat(None),
        Message(content=[ToolUseBlock()]),
        [1, 2, 3],
        42,
    ],
    ids=["dict_without_text_keys", "tool_call_only", "tool_use_only", "list_of_ints", "int"],
)
def test_results_without_text_leave_text_columns_empty(
    spans: llamonitor.InMemoryBackend, result: Any
) -> None:
    """A result with no text records null text metrics (not zeros)."""

    @monitor_llm(measure_text=True)
    def call() -> Any:
        return result

    call()
    assert text_of(one(spans)) == [None, None, None, None]


def test_empty_string_measures_zero(spans: llamonitor.InMemoryBackend) -> None:
    """An empty string is text: every metric is 0."""

    @monitor_llm(measure_text=True)
    def call() -> str:
        return ""

    call()
    assert text_of(one(spans)) == [0, 0, 0, 0]


def test_openai_stream_chunks_are_joined(spans: llamonitor.InMemoryBackend) -> None:
    """Streamed ChatCompletionChunks are measured as the text of all their deltas."""
    parts = ["The", " quick", None, " fox\n", "jumps"]

    @monitor_llm("openai_stream", measure_text=True)
    async def stream() -> Any:
        for p in parts:
            yield ChatCompletionChunk(choices=[ChunkChoice(delta=ChoiceDelta(content=p))])
        yield ChatCompletionChunk(choices=[])

    async def consume() -> int:
        return len([c async for c in stream()])

    assert asyncio.run(consume()) == 6
    row = one(spans)
    assert text_of(row) == expected("The quick fox\njumps")
    assert row["stream_item_count"] == 6


def test_anthropic_stream_events_are_joined(spans: llamonitor.InMemoryBackend) -> None:
    """Streamed Anthropic content_block_delta events are measured as their joined text."""

    @monitor_llm(measure_text=True)
    def stream() -> Iterator[Any]:
        yield RawContentBlockDeltaEvent(delta=TextDelta(text="Hello"))
        yield RawContentBlockDeltaEvent(delta=TextDelta(text=", world"))
        yield RawMessageStopEvent()

    assert len(list(stream())) == 3
    assert text_of(one(spans)) == expected("Hello, world")


def test_stream_without_text_leaves_text_columns_empty(spans: llamonitor.InMemoryBackend) -> None:
    """A stream none of whose items holds text records null text metrics."""

    @monitor_llm(measure_text=True)
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    list(stream())
    assert text_of(one(spans)) == [None, None, None, None]


# -- TextCollector -----------------------------------------------------------------


def test_text_collector_measures_chars_words_bytes_lines() -> None:
    """TextCollector.collect returns the four text metrics as column values."""
    out = TextCollector().collect("héllo wörld\nline two\n", (), {}, None)
    assert out == {
        "text_char_count": 21,
        "text_word_count": 4,
        "text_byte_size": 23,
        "text_line_count": 2,
    }
    assert TextCollector().metric_type == "text"
    assert TextCollector().collect({"nothing": 1}, (), {}, None) is None


def test_text_collector_metric_subset_and_validation() -> None:
    """TextCollector(metrics) keeps only those metrics and rejects unknown names."""
    out = TextCollector(["word_count", "line_count"]).collect("a b\nc", (), {}, None)
    assert out == {"text_word_count": 3, "text_line_count": 2}
    with pytest.raises(ValueError, match="chars"):
        TextCollector(["chars"])


def test_text_collector_with_an_extractor(spans: llamonitor.InMemoryBackend) -> None:
    """A TextCollector given an extractor measures what the extractor returns."""

    def answer_only(result: Any) -> str | None:
        return result.get("answer")

    @monitor_llm(collectors=[TextCollector(["char_count"], extractor=answer_only)])
    def call() -> dict[str, str]:
        return {"text": "ignored text", "answer": "yes"}

    call()
    assert text_of(one(spans)) == [3, None, None, None]
    assert TextCollector(extractor=answer_only).collect({"answer": "ok"}, (), {}, None) == {
        "text_char_count": 2,
        "text_word_count": 1,
        "text_byte_size": 2,
        "text_line_count": 1,
    }


def test_text_collector_extractor_applies_to_each_stream_item(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """On a stream the extractor is applied to each item and the texts are joined."""

    @monitor_llm(collectors=[TextCollector(extractor=lambda item: item["t"])])
    def stream() -> Iterator[dict[str, str]]:
        yield {"t": "ab "}
        yield {"t": "cd"}

    list(stream())
    assert text_of(one(spans)) == expected("ab cd")


def test_registry_has_builtin_collectors() -> None:
    """The registry knows 'text' and 'image' and makes a new instance per get()."""
    assert {"image", "text"} <= set(CollectorRegistry.names())
    first, second = CollectorRegistry.get("text"), CollectorRegistry.get("text")
    assert isinstance(first, TextCollector) and first is not second
    assert isinstance(CollectorRegistry.create("image"), ImageCollector)


# -- custom collectors ---------------------------------------------------------------


class MyCollector(MetricCollector):
    """Seed 000's extension example."""

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any] | None:
        return {"custom_attributes": {"answer_length": len(result)}}

    @property
    def metric_type(self) -> str:
        return "my_metric"


class CostCollector(MetricCollector):
    """Seed 004's custom-metrics example."""

    def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any] | None:
        return {"custom_attributes": {"cost_usd": 0.002}}

    @property
    def metric_type(self) -> str:
        return "cost"


def test_seed_extension_example(spans: llamonitor.InMemoryBackend) -> None:
    """Subclass MetricCollector, register it by name, use it in @monitor_llm(collectors=[...])."""
    CollectorRegistry.register("my_metric", MyCollector)
    CollectorRegistry.register("cost", CostCollector)
    assert {"my_metric", "cost"} <= set(CollectorRegistry.names())

    @monitor_llm(collectors=["my_metric", "cost"], custom_attributes={"model": "gpt-4"})
    async def my_func() -> str:
        return "forty-two"

    assert asyncio.run(my_func()) == "forty-two"
    assert attrs(one(spans)) == {"model": "gpt-4", "answer_length": 9, "cost_usd": 0.002}


def test_collector_sees_result_arguments_and_span(spans: llamonitor.InMemoryBackend) -> None:
    """collect() gets the live result, the call's args and kwargs, and the span."""
    seen: list[tuple[Any, ...]] = []

    class Spy(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> None:
            seen.append((result, args, kwargs, context))

        @property
        def metric_type(self) -> str:
            return "spy"

    result = object()

    @monitor_llm(collectors=[Spy()], session_id_from="user")
    def call(prompt: str, user: str, *, temperature: float = 1.0) -> object:
        return result

    call("hi", "u1", temperature=0.5)
    row = one(spans)
    ((got, args, kwargs, span),) = seen
    assert got is result
    assert args == ("hi", "u1")
    assert kwargs == {"temperature": 0.5}
    assert span.span_id == row["span_id"]
    assert span.session_id == "u1" == row["session_id"]
    assert row["custom_attributes"] is None


def test_collector_keys_set_columns_or_custom_attributes(spans: llamonitor.InMemoryBackend) -> None:
    """Keys naming a column set it; other keys land in custom_attributes; 'text' is measured."""

    class Mixed(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {
                "image_count": 2,
                "image_format": "PNG",
                "text": "measured by key",
                "relevance": 0.75,
                "custom_attributes": {"judge": "v1"},
            }

        @property
        def metric_type(self) -> str:
            return "mixed"

    @monitor_llm(collectors=[Mixed()])
    def call() -> None:
        pass

    call()
    row = one(spans)
    assert row["image_count"] == 2
    assert row["image_format"] == "PNG"
    assert text_of(row) == expected("measured by key")
    assert attrs(row) == {"relevance": 0.75, "judge": "v1"}


def test_custom_attributes_of_several_collectors_merge_without_mutating_them(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """custom_attributes of collectors merge (later wins); a collector's own dict is not changed."""
    shared = {"a": 1}

    class Constant(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"custom_attributes": shared}

        @property
        def metric_type(self) -> str:
            return "constant"

    class Other(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"custom_attributes": {"a": 2, "b": 3}}

        @property
        def metric_type(self) -> str:
            return "other"

    @monitor_llm(collectors=[Constant(), Other()], custom_attributes={"z": 0})
    def call() -> None:
        pass

    call()
    call()
    assert shared == {"a": 1}
    assert [attrs(r) for r in rows(spans)] == [{"z": 0, "a": 2, "b": 3}] * 2


def test_deferred_work_runs_on_the_worker_thread(spans: llamonitor.InMemoryBackend) -> None:
    """A collector's Deferred runs off the application thread and its dict is stored."""
    threads: list[str] = []

    def expensive(text: str) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"custom_attributes": {"vowels": sum(c in "aeiou" for c in text)}}

    class Vowels(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"vowels": Deferred(expensive, result)}

        @property
        def metric_type(self) -> str:
            return "vowels"

    @monitor_llm(collectors=[Vowels()])
    def call() -> str:
        return "education"

    call()
    assert attrs(one(spans)) == {"vowels": 5}
    assert threads and threads[0] != threading.current_thread().name


def test_collector_returning_none_or_empty_adds_nothing(spans: llamonitor.InMemoryBackend) -> None:
    """A collector that returns None or {} leaves the row as without it."""

    class Quiet(MetricCollector):
        def __init__(self, value: Any) -> None:
            self.value = value

        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> Any:
            return self.value

        @property
        def metric_type(self) -> str:
            return "quiet"

    @monitor_llm(collectors=[Quiet(None), Quiet({})])
    def call() -> str:
        return "x"

    call()
    row = one(spans)
    assert row["custom_attributes"] is None and text_of(row) == [None] * 4


def test_collector_returning_a_non_dict_is_a_reported_error(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    """A collector returning something other than a dict is reported; the span is still kept."""

    class Wrong(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> Any:
            return ["not", "a", "dict"]

        @property
        def metric_type(self) -> str:
            return "wrong"

    @monitor_llm(collectors=[Wrong(), MyCollector()])
    def call() -> str:
        return "abc"

    assert call() == "abc"
    assert attrs(one(spans)) == {"answer_length": 3}
    ((kind, exc),) = internal_errors
    assert kind == "collector:wrong" and isinstance(exc, TypeError)
    internal_errors.clear()


def test_a_wrong_typed_column_value_does_not_lose_the_span(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    """A collector value that does not fit its column still leaves the span recorded."""

    class Sloppy(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"image_count": "two"}

        @property
        def metric_type(self) -> str:
            return "sloppy"

    @monitor_llm("call", collectors=[Sloppy()])
    def call() -> str:
        return "x"

    call()
    got = rows(spans)
    internal_errors.clear()
    assert [r["operation_name"] for r in got] == ["call"]


def test_registered_factory_and_unregister() -> None:
    """register() takes any zero-argument factory; unregister() removes the name."""

    class Prefix(MetricCollector):
        def __init__(self, n: int) -> None:
            self.n = n

        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"prefix": str(result)[: self.n]}

        @property
        def metric_type(self) -> str:
            return "prefix"

    CollectorRegistry.register("prefix3", lambda: Prefix(3))
    made = CollectorRegistry.get("prefix3")
    assert isinstance(made, Prefix) and made.n == 3
    CollectorRegistry.unregister("prefix3")
    assert CollectorRegistry.get("prefix3") is None  # seed 000: get() of an unknown name
    with pytest.raises(KeyError, match=r"registered: .*text"):
        CollectorRegistry.create("prefix3")
    CollectorRegistry.unregister("prefix3")  # twice is fine


def test_metric_collector_is_abstract() -> None:
    """A subclass must implement collect and metric_type before it can be instantiated."""

    class Incomplete(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> None:
            return None

    with pytest.raises(TypeError):
        MetricCollector()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_collectors_on_a_stream_get_the_list_of_items(spans: llamonitor.InMemoryBackend) -> None:
    """On a stream, collectors run once at its end with the list of yielded items."""
    seen: list[Any] = []

    class Items(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            seen.append(result)
            return {"custom_attributes": {"items": len(result)}}

        @property
        def metric_type(self) -> str:
            return "items"

    @monitor_llm("full", collectors=[Items()])
    def stream() -> Iterator[str]:
        yield "a"
        yield "b"
        yield "c"

    assert list(stream()) == ["a", "b", "c"]
    it = stream()
    next(it)
    it.close()
    assert seen == [["a", "b", "c"], ["a"]]
    full, early = sorted(rows(spans), key=lambda r: -r["stream_item_count"])
    assert attrs(full) == {"items": 3}
    assert attrs(early) == {"items": 1, "stream_closed_early": True}


def test_computed_attributes_are_not_read_on_user_objects(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """A `.text` property (a streaming HTTP body) is never read; SDK properties are."""

    class StreamingResponse:
        consumed = False

        @property
        def text(self) -> str:
            StreamingResponse.consumed = True
            return "the whole body"

    class SDKResponse:
        @property
        def output_text(self) -> str:
            return "from the SDK"

    SDKResponse.__module__ = "openai.types.responses.response"

    @monitor_llm("http", measure_text=True)
    def http() -> StreamingResponse:
        return StreamingResponse()

    @monitor_llm("sdk", measure_text=True)
    def sdk() -> SDKResponse:
        return SDKResponse()

    http()
    sdk()
    by_op = {r["operation_name"]: r for r in rows(spans)}
    assert not StreamingResponse.consumed
    assert by_op["http"]["text_char_count"] is None
    assert by_op["sdk"]["text_char_count"] == len("from the SDK")


def test_deferred_work_runs_once_when_its_batch_is_converted_again(
    spans: llamonitor.InMemoryBackend,
    internal_errors: list[tuple[str, BaseException]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record the worker cannot convert (a fault injected into one value) makes
    it convert its batch's records one by one: the others' Deferred work is not
    done twice, and they are all stored."""
    from llamonitor.transport import _convert_rows as _convert

    real = _convert.column_value

    def faulty(column: str, value: Any) -> Any:
        if value == "boom":
            raise RuntimeError("injected")
        return real(column, value)

    monkeypatch.setattr(_convert, "column_value", faulty)
    calls: list[str] = []

    def work(text: str) -> dict[str, Any]:
        calls.append(text)
        return {"model": "boom"} if text == "bad" else {"custom_attributes": {"n": len(text)}}

    class Once(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"once": Deferred(work, result)}

        @property
        def metric_type(self) -> str:
            return "once"

    @monitor_llm(collectors=[Once()])
    def call(text: str) -> str:
        return text

    writer = llamonitor.get_writer()
    assert writer is not None
    for text in ("one", "bad", "three"):
        call(text)
    assert llamonitor.flush(10)
    assert sorted(calls) == ["bad", "one", "three"]
    assert sorted(attrs(r)["n"] for r in rows(spans)) == [3, 5]
    assert writer.health_check()["dropped"]["invalid"] == 1
    assert [kind for kind, _ in internal_errors] == ["invalid_event"]
    internal_errors.clear()


def test_deferred_work_that_returns_no_dict_loses_its_value_not_the_span(
    spans: llamonitor.InMemoryBackend, internal_errors: list[tuple[str, BaseException]]
) -> None:
    class Odd(MetricCollector):
        def collect(self, result: Any, args: Any, kwargs: Any, context: Any) -> dict[str, Any]:
            return {"odd": Deferred(lambda: [1, 2])}

        @property
        def metric_type(self) -> str:
            return "odd"

    @monitor_llm(collectors=[Odd()])
    def call() -> str:
        return "x"

    call()
    assert one(spans)["operation_name"].endswith(".call")
    assert [kind for kind, _ in internal_errors] == ["collector:odd"]
    internal_errors.clear()
