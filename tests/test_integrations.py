"""OpenAI and Anthropic integrations, driving the real SDKs against a local server.

Every recorded number is compared with what the server sent (``_llm_server``
builds the wire bodies and events). No network, no API keys.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import llamonitor
from _helpers import one, rows
from _llm_server import (
    LLMServer,
    Reply,
    anthropic_error,
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    message_body,
    message_events,
    openai_error,
    response_body,
    response_events,
    responses_usage,
)
from llamonitor import _handoff, monitor_llm, monitoring_session
from llamonitor._internal import suppressed
from llamonitor._records import error_facts
from llamonitor.integrations import (
    instrument_anthropic,
    instrument_openai,
    uninstrument_anthropic,
    uninstrument_openai,
)
from llamonitor.llm import agent
from llamonitor.llm.content import prompt_hash
from llamonitor.testing import capture_spans

TEXT = "Héllo wörld,\nthis is the answer ✓"
PIECES = ["Héllo ", "wörld,", "\nthis ", "is the ", "answer ✓"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
PROMPT_CHARS = len("Be brief.") + len("Say hello")


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


@pytest.fixture(autouse=True)
def clean(server: LLMServer) -> Iterator[None]:
    server.reset()
    yield
    uninstrument_openai()
    uninstrument_anthropic()


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrument_openai()
    instrument_anthropic()
    yield
    uninstrument_openai()
    uninstrument_anthropic()


def oai(server: LLMServer, **kw: Any) -> openai.OpenAI:
    kw.setdefault("timeout", 10.0)
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0, **kw)


def aoai(server: LLMServer, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("timeout", 10.0)
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0, **kw)


def anth(server: LLMServer, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("timeout", 10.0)
    return anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0, **kw)


def aanth(server: LLMServer, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("timeout", 10.0)
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0, **kw)


def check_text(row: dict[str, Any], text: str) -> None:
    assert row["text_char_count"] == len(text)
    assert row["text_word_count"] == len(text.split())
    assert row["text_byte_size"] == len(text.encode())
    assert row["text_line_count"] == text.count("\n") + (not text.endswith("\n"))


def check_span(row: dict[str, Any], operation: str, provider: str, model: str) -> None:
    assert row["operation_name"] == operation
    assert row["operation_type"] == "llm_call"
    assert row["provider"] == provider
    assert row["model"] == model
    assert row["duration_ms"] > 0


def check_stream(row: dict[str, Any], items: int, first_delay_ms: float = 0.0) -> None:
    assert row["stream_item_count"] == items
    assert first_delay_ms <= row["time_to_first_token_ms"] <= row["duration_ms"]


def attrs(row: dict[str, Any]) -> dict[str, Any]:
    raw = row["custom_attributes"]
    return {} if raw is None else dict(json.loads(raw))


def estimate(chars: int) -> int:
    return math.ceil(chars / 4)


def data_events(events: list[tuple[str | None, Any]]) -> int:
    """Events the SDK yields: not ``[DONE]``, not Anthropic pings."""
    return sum(1 for name, d in events if d != "[DONE]" and name != "ping")


# -- OpenAI Chat Completions --------------------------------------------------------------


def test_chat_sync(server: LLMServer, spans: Any, instrumented: None) -> None:
    """A call: the same ChatCompletion comes back; every column matches what was sent."""
    server.push(
        Reply(
            body=chat_completion(
                TEXT,
                id="chatcmpl-A",
                model="gpt-4o-mini-2024-07-18",
                usage=chat_usage(42, 9, cached=32, reasoning=4),
            )
        )
    )
    with oai(server) as client:
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.25, max_tokens=64
        )
    assert type(result) is openai.types.chat.ChatCompletion
    assert result.choices[0].message.content == TEXT and result.usage is not None
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4o-mini")
    assert row["response_model"] == "gpt-4o-mini-2024-07-18"
    assert row["response_id"] == "chatcmpl-A"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (42, 9, 51)
    assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (32, 4)
    assert row["token_source"] == "provider"
    assert row["finish_reason"] == "stop"
    assert (row["temperature"], row["max_tokens"]) == (0.25, 64)
    assert row["prompt_hash"] == prompt_hash({"messages": MESSAGES})
    assert row["error"] is None and row["stream_item_count"] is None
    check_text(row, TEXT)


def test_chat_async(server: LLMServer, spans: Any, instrumented: None) -> None:
    """The async client: same facts, the awaited result unchanged."""
    server.push(Reply(body=chat_completion(TEXT, usage=chat_usage(10, 5))))

    async def main() -> Any:
        async with aoai(server) as client:
            return await client.chat.completions.create(
                model="gpt-4.1", messages=MESSAGES, max_completion_tokens=99
            )

    result = asyncio.run(main())
    assert type(result) is openai.types.chat.ChatCompletion
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4.1")
    assert (row["input_tokens"], row["output_tokens"], row["max_tokens"]) == (10, 5, 99)
    check_text(row, TEXT)


@pytest.mark.parametrize("usage", [None, "absent"])
def test_chat_null_or_missing_usage_is_estimated(
    server: LLMServer, spans: Any, instrumented: None, usage: Any
) -> None:
    """No usage in the response: tokens estimated (chars/4) and said to be."""
    body = chat_completion(TEXT) if usage == "absent" else chat_completion(TEXT, usage=None)
    server.push(Reply(body=body))
    with oai(server) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    row = one(spans)
    assert row["token_source"] == "estimate:chars/4"
    assert row["output_tokens"] == estimate(len(TEXT))
    assert row["input_tokens"] == estimate(PROMPT_CHARS)
    assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]


def test_chat_stream_consumed(server: LLMServer, spans: Any, instrumented: None) -> None:
    """A stream read to its end: the Stream object is the SDK's, with its usage chunk
    counted, the time to first token measured, the text measured."""
    events = chat_chunks(PIECES, id="chatcmpl-S", usage=chat_usage(30, 11, cached=0))
    server.push(Reply(events=events, first_delay=0.05))
    with oai(server) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert type(stream) is openai.Stream
        assert isinstance(stream.response, httpx2.Response)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == TEXT
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4o-mini")
    check_stream(row, data_events(events), 50.0)
    assert row["response_id"] == "chatcmpl-S"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (30, 11, 41)
    assert row["cache_read_tokens"] == 0 and row["token_source"] == "provider"
    assert row["finish_reason"] == "stop" and row["error"] is None
    assert "stream_closed_early" not in attrs(row)
    check_text(row, TEXT)


def test_chat_stream_without_usage(server: LLMServer, spans: Any, instrumented: None) -> None:
    """A stream without include_usage: tokens estimated from the text and the prompt."""
    events = chat_chunks(PIECES)
    server.push(Reply(events=events))
    with (
        oai(server) as client,
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream,
    ):
        assert sum(1 for _ in stream) == data_events(events)
    row = one(spans)
    assert row["token_source"] == "estimate:chars/4"
    assert row["output_tokens"] == estimate(len(TEXT))
    assert row["input_tokens"] == estimate(PROMPT_CHARS)
    check_text(row, TEXT)


def test_chat_stream_closed_early(server: LLMServer, spans: Any, instrumented: None) -> None:
    """break + close(): recorded at the close, once, flagged closed early, with the items read."""
    server.push(Reply(events=chat_chunks(PIECES, usage=chat_usage(1, 1)), delay=0.01))
    with oai(server) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        assert rows(spans) == []  # not ended yet: nothing recorded
        stream.close()
        row = one(spans)  # recorded at the close, while the stream is still referenced
        assert attrs(row)["stream_closed_early"] is True
        check_stream(row, 3)
        assert row["error"] is None
        check_text(row, PIECES[0] + PIECES[1])  # the role chunk has no text
        assert row["token_source"] == "estimate:chars/4"  # the usage chunk never came
        del stream
        gc.collect()
    assert len(rows(spans)) == 1


def test_chat_stream_abandoned_without_close(
    server: LLMServer, spans: Any, instrumented: None
) -> None:
    """A stream dropped halfway without close() is recorded when collected, closed early."""
    server.push(Reply(events=chat_chunks(PIECES)))
    with oai(server) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        next(iter(stream))
        del stream
        gc.collect()
    row = one(spans)
    assert attrs(row)["stream_closed_early"] is True and row["stream_item_count"] == 1


def test_chat_stream_never_read(server: LLMServer, spans: Any, instrumented: None) -> None:
    """A stream closed (or dropped) before its first item: one span, zero items."""
    server.push(Reply(events=chat_chunks(PIECES)), Reply(events=chat_chunks(PIECES)))
    with oai(server) as client:
        with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            pass
        dropped = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        del dropped
        gc.collect()
    for row in rows(spans):
        assert row["stream_item_count"] == 0 and row["time_to_first_token_ms"] is None
        assert attrs(row)["stream_closed_early"] is True


def test_chat_stream_connection_cut(server: LLMServer, spans: Any, instrumented: None) -> None:
    """The server drops the connection mid-stream: the SDK's exception reaches the caller
    untouched, and the span records it with the items read before."""
    server.push(Reply(events=chat_chunks(PIECES), cut_after=3))
    got = []
    with oai(server) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError) as raised:
            for chunk in stream:
                got.append(chunk)
    assert len(got) == 3
    row = one(spans)
    assert row["error"] is True
    assert (row["error_type"], row["error_message"]) == error_facts(raised.value)
    check_stream(row, 3)
    assert "stream_closed_early" not in attrs(row)


def test_chat_stream_error_event(server: LLMServer, spans: Any, instrumented: None) -> None:
    """An error sent inside the stream raises the SDK's APIError; the span has it."""
    events = chat_chunks(PIECES, done=False)[:3]
    events.append((None, {"error": {"message": "server overloaded", "type": "server_error"}}))
    server.push(Reply(events=events))
    with oai(server) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as raised:
            list(stream)
    row = one(spans)
    assert row["error_type"] == "openai.APIError" == error_facts(raised.value)[0]
    assert row["error_message"] == "server overloaded"
    check_stream(row, 3)


def test_chat_stream_async(server: LLMServer, spans: Any, instrumented: None) -> None:
    """Async streams: consumed with async for, under async with, and closed early."""
    events = chat_chunks(PIECES, usage=chat_usage(8, 6))
    server.push(Reply(events=events, first_delay=0.03), Reply(events=events, delay=0.01))

    async def main() -> None:
        async with aoai(server) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            assert type(stream) is openai.AsyncStream
            async with stream:
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            assert text == TEXT
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
            async for _ in stream:
                break
            await stream.close()

    asyncio.run(main())
    full, early = rows(spans)
    check_stream(full, data_events(events), 30.0)
    assert (full["input_tokens"], full["output_tokens"]) == (8, 6)
    check_text(full, TEXT)
    assert attrs(early)["stream_closed_early"] is True and early["stream_item_count"] == 1


def test_async_streams_abandoned(server: LLMServer, spans: Any, instrumented: None) -> None:
    """Async streams left halfway without close(), and an async messages.stream() block
    left early: each recorded once, closed early."""
    server.push(
        Reply(events=chat_chunks(PIECES), delay=0.01),
        Reply(events=message_events(PIECES), delay=0.01),
    )

    async def main() -> None:
        async with aoai(server) as oc, aanth(server) as ac:
            stream = await oc.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
            async for _ in stream:
                break
            del stream  # finalized by the event loop (or at its shutdown)
            async with ac.messages.stream(
                model="claude-x", max_tokens=5, messages=MESSAGES[1:]
            ) as helper:
                async for _ in helper.text_stream:
                    break

    asyncio.run(main())
    gc.collect()
    found = rows(spans)
    assert sorted(r["operation_name"] for r in found) == [
        "anthropic.messages",
        "openai.chat.completions",
    ]
    for row in found:
        assert attrs(row)["stream_closed_early"] is True and row["error"] is None


def test_chat_stream_async_connection_cut(
    server: LLMServer, spans: Any, instrumented: None
) -> None:
    """Async: a stream failing halfway raises through async for and is recorded as an error."""
    server.push(Reply(events=chat_chunks(PIECES), cut_after=2))

    async def main() -> BaseException:
        async with aoai(server) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
            try:
                async for _ in stream:
                    pass
            except openai.APIConnectionError as exc:
                return exc
        raise AssertionError("no error")

    exc = asyncio.run(main())
    row = one(spans)
    assert row["error_type"] == error_facts(exc)[0]
    check_stream(row, 2)


def test_chat_stream_helper(server: LLMServer, spans: Any, instrumented: None) -> None:
    """chat.completions.stream(): one span per call, read to the end or left early."""
    events = chat_chunks(PIECES, usage=chat_usage(5, 7))
    server.push(Reply(events=events), Reply(events=events, delay=0.01))
    with oai(server) as client:
        with client.chat.completions.stream(
            model="gpt-4o", messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream:
            deltas = [e.delta for e in stream if e.type == "content.delta"]
            final = stream.get_final_completion()
        assert "".join(deltas) == TEXT == final.choices[0].message.content
        with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
            for event in stream:
                if event.type == "content.delta":
                    break
        full, early = rows(spans)
    check_stream(full, data_events(events))
    assert (full["input_tokens"], full["output_tokens"]) == (5, 7)
    check_text(full, TEXT)
    assert attrs(early)["stream_closed_early"] is True


def test_chat_parse(server: LLMServer, spans: Any, instrumented: None) -> None:
    """chat.completions.parse() is recorded like create()."""
    import pydantic

    class Answer(pydantic.BaseModel):
        greeting: str

    content = '{"greeting": "hi"}'
    server.push(Reply(body=chat_completion(content, usage=chat_usage(3, 4))))
    with oai(server) as client:
        parsed = client.chat.completions.parse(
            model="gpt-4o", messages=MESSAGES, response_format=Answer
        )
    assert parsed.choices[0].message.parsed == Answer(greeting="hi")
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4o")
    assert (row["input_tokens"], row["output_tokens"]) == (3, 4)
    check_text(row, content)


def test_with_raw_response(server: LLMServer, spans: Any, instrumented: None) -> None:
    """with_raw_response still returns the raw response (parsed on demand); the call is
    recorded without usage (the body is the user's to parse)."""
    server.push(
        Reply(body=chat_completion(TEXT, usage=chat_usage(3, 4)), headers={"x-request-id": "req_1"})
    )
    with oai(server) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.headers["x-request-id"] == "req_1"
        assert raw.parse().choices[0].message.content == TEXT
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4o")
    assert row["input_tokens"] is None and row["token_source"] is None


def test_with_streaming_response(server: LLMServer, spans: Any, instrumented: None) -> None:
    """with_streaming_response still hands over the unread response; the call is recorded."""
    server.push(Reply(body=chat_completion(TEXT, usage=chat_usage(3, 4))))
    with (
        oai(server) as client,
        client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MESSAGES
        ) as response,
    ):
        assert json.loads(response.read())["choices"][0]["message"]["content"] == TEXT
    row = one(spans)
    check_span(row, "openai.chat.completions", "openai", "gpt-4o")
    assert row["error"] is None


# -- OpenAI Responses ---------------------------------------------------------------


def test_responses_sync(server: LLMServer, spans: Any, instrumented: None) -> None:
    """responses.create(): usage details, status, output text."""
    server.push(
        Reply(
            body=response_body(
                TEXT,
                id="resp_A",
                model="o4-mini-2025",
                usage=responses_usage(80, 20, cached=64, reasoning=16),
            )
        )
    )
    with oai(server) as client:
        result = client.responses.create(
            model="o4-mini", input="Say hello", instructions="Be brief.", max_output_tokens=500
        )
    assert type(result) is openai.types.responses.Response and result.output_text == TEXT
    row = one(spans)
    check_span(row, "openai.responses", "openai", "o4-mini")
    assert (row["response_id"], row["response_model"]) == ("resp_A", "o4-mini-2025")
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (80, 20, 100)
    assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (64, 16)
    assert row["finish_reason"] == "completed" and row["max_tokens"] == 500
    assert row["prompt_hash"] == prompt_hash({"instructions": "Be brief.", "input": "Say hello"})
    check_text(row, TEXT)


def test_responses_stream(server: LLMServer, spans: Any, instrumented: None) -> None:
    """A Responses stream: usage from response.completed, text from the deltas."""
    events = response_events(PIECES, id="resp_S", usage=responses_usage(12, 8))
    server.push(Reply(events=events, first_delay=0.02))
    with oai(server) as client:
        stream = client.responses.create(model="gpt-4.1", input="Say hello", stream=True)
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.completed"
    row = one(spans)
    check_span(row, "openai.responses", "openai", "gpt-4.1")
    check_stream(row, len(events), 20.0)
    assert row["response_id"] == "resp_S"
    assert (row["input_tokens"], row["output_tokens"]) == (12, 8)
    check_text(row, TEXT)


def test_responses_stream_helper_async(server: LLMServer, spans: Any, instrumented: None) -> None:
    """The async responses.stream() helper is recorded through create()."""
    events = response_events(PIECES, usage=responses_usage(4, 9))
    server.push(Reply(events=events))

    async def main() -> str:
        async with (
            aoai(server) as client,
            client.responses.stream(model="gpt-4.1", input="Say hello") as stream,
        ):
            final = await stream.get_final_response()
            return final.output_text

    assert asyncio.run(main()) == TEXT
    row = one(spans)
    check_stream(row, len(events))
    assert (row["input_tokens"], row["output_tokens"]) == (4, 9)


# -- Anthropic Messages -------------------------------------------------------------


def test_anthropic_sync(server: LLMServer, spans: Any, instrumented: None) -> None:
    """messages.create(): input includes cache reads and writes; stop reason; system prompt."""
    server.push(
        Reply(
            body=message_body(
                TEXT,
                id="msg_A",
                model="claude-sonnet-4-5-20250929",
                usage=anthropic_usage(15, 25, cache_read=900, cache_write=100),
            )
        )
    )
    with anth(server) as client:
        result = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=300,
            system="Be brief.",
            messages=MESSAGES[1:],
            extra_body={"temperature": 0.7},
        )
    assert type(result) is anthropic.types.Message and result.content[0].text == TEXT  # type: ignore[union-attr]
    row = one(spans)
    check_span(row, "anthropic.messages", "anthropic", "claude-sonnet-4-6")
    assert (row["response_id"], row["response_model"]) == ("msg_A", "claude-sonnet-4-5-20250929")
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (1015, 25, 1040)
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (900, 100)
    assert (row["temperature"], row["max_tokens"]) == (0.7, 300)
    assert row["finish_reason"] == "end_turn" and row["token_source"] == "provider"
    assert row["prompt_hash"] == prompt_hash({"system": "Be brief.", "messages": MESSAGES[1:]})
    check_text(row, TEXT)


def test_anthropic_create_stream(server: LLMServer, spans: Any, instrumented: None) -> None:
    """messages.create(stream=True): events counted, usage from message_start/message_delta."""
    events = message_events(PIECES, id="msg_S", input=40, output=17, cache_read=10)
    server.push(Reply(events=events, first_delay=0.02))
    with anth(server) as client:
        stream = client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES[1:], stream=True
        )
        assert type(stream) is anthropic.Stream
        with stream:
            kinds = [e.type for e in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    row = one(spans)
    check_span(row, "anthropic.messages", "anthropic", "claude-haiku-4-5")
    check_stream(row, data_events(events), 20.0)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (50, 17, 10)
    assert row["response_id"] == "msg_S" and row["finish_reason"] == "end_turn"
    check_text(row, TEXT)


def test_anthropic_stream_helper(server: LLMServer, spans: Any, instrumented: None) -> None:
    """messages.stream(): text_stream and get_final_message work; one span per call;
    leaving the block early is recorded as closed early."""
    events = message_events(PIECES, input=21, output=13)
    server.push(Reply(events=events), Reply(events=events, delay=0.01))
    with anth(server) as client:
        with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES[1:]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == TEXT and final.usage.output_tokens == 13
        with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES[1:]
        ) as stream:
            for _ in stream.text_stream:
                break
        full, early = rows(spans)
    check_span(full, "anthropic.messages", "anthropic", "claude-sonnet-4-6")
    check_stream(full, data_events(events))
    assert (full["input_tokens"], full["output_tokens"], full["max_tokens"]) == (21, 13, 64)
    check_text(full, TEXT)
    assert attrs(early)["stream_closed_early"] is True
    assert early["input_tokens"] == 21  # from message_start
    assert early["token_source"] == "estimate:chars/4"  # the output count never came


def test_anthropic_async(server: LLMServer, spans: Any, instrumented: None) -> None:
    """Async: create, create(stream=True) and messages.stream() under async with."""
    events = message_events(PIECES, input=5, output=6)
    server.push(
        Reply(body=message_body(TEXT, usage=anthropic_usage(3, 4))),
        Reply(events=events),
        Reply(events=events),
    )

    async def main() -> None:
        async with aanth(server) as client:
            msg = await client.messages.create(
                model="claude-x", max_tokens=10, messages=MESSAGES[1:]
            )
            assert type(msg) is anthropic.types.Message
            stream = await client.messages.create(
                model="claude-x", max_tokens=10, messages=MESSAGES[1:], stream=True
            )
            assert type(stream) is anthropic.AsyncStream
            assert len([e async for e in stream]) == data_events(events)
            async with client.messages.stream(
                model="claude-x", max_tokens=10, messages=MESSAGES[1:]
            ) as helper:
                assert "".join([t async for t in helper.text_stream]) == TEXT
                assert (await helper.get_final_message()).usage.output_tokens == 6

    asyncio.run(main())
    call, raw, helper = rows(spans)
    assert (call["input_tokens"], call["output_tokens"]) == (3, 4)
    for row in (raw, helper):
        check_stream(row, data_events(events))
        assert (row["input_tokens"], row["output_tokens"]) == (5, 6)
        check_text(row, TEXT)


def test_anthropic_stream_error_event(server: LLMServer, spans: Any, instrumented: None) -> None:
    """An error event mid-stream raises the SDK's error; the span records it."""
    events = message_events(PIECES)[:4]
    events.append(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    server.push(Reply(events=events))
    with anth(server) as client:
        stream = client.messages.create(
            model="claude-x", max_tokens=10, messages=MESSAGES[1:], stream=True
        )
        with pytest.raises(anthropic.APIStatusError) as raised:
            list(stream)
    row = one(spans)
    assert row["error"] is True
    assert (row["error_type"], row["error_message"]) == error_facts(raised.value)
    check_stream(row, 3)  # message_start, content_block_start, one delta (the ping is skipped)


def test_anthropic_connection_cut(server: LLMServer, spans: Any, instrumented: None) -> None:
    """The connection drops mid-stream under messages.stream(): the error propagates."""
    server.push(Reply(events=message_events(PIECES), cut_after=4))
    with (
        anth(server) as client,
        pytest.raises(Exception) as raised,
        client.messages.stream(model="claude-x", max_tokens=10, messages=MESSAGES[1:]) as stream,
    ):
        stream.until_done()
    row = one(spans)
    assert row["error_type"] == error_facts(raised.value)[0]
    check_stream(row, 3)


# -- errors -------------------------------------------------------------------------------


OPENAI_ERRORS = [
    (openai_error(429, "Rate limit reached", "rate_limit_error"), openai.RateLimitError),
    (openai_error(400, "Invalid 'messages'", "invalid_request_error"), openai.BadRequestError),
    (openai_error(500, "The server had an error", "server_error"), openai.InternalServerError),
]
ANTHROPIC_ERRORS = [
    (anthropic_error(429, "Rate limited", "rate_limit_error"), anthropic.RateLimitError),
    (
        anthropic_error(400, "max_tokens: too large", "invalid_request_error"),
        anthropic.BadRequestError,
    ),
    (anthropic_error(500, "Internal error", "api_error"), anthropic.InternalServerError),
]


@pytest.mark.parametrize(("reply", "error"), OPENAI_ERRORS)
def test_openai_error_statuses(
    server: LLMServer, spans: Any, instrumented: None, reply: Reply, error: type
) -> None:
    """HTTP errors raise the SDK's own exception, untouched; the span has its type and message."""
    server.push(reply, reply)
    with oai(server) as client:
        with pytest.raises(error) as raised:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0)
        with pytest.raises(error):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert type(raised.value) is error
    for row in rows(spans):
        check_span(row, "openai.chat.completions", "openai", "gpt-4o")
        assert row["error"] is True
        assert (row["error_type"], row["error_message"]) == error_facts(raised.value)
        assert row["input_tokens"] is None and row["stream_item_count"] is None


@pytest.mark.parametrize(("reply", "error"), ANTHROPIC_ERRORS)
def test_anthropic_error_statuses(
    server: LLMServer, spans: Any, instrumented: None, reply: Reply, error: type
) -> None:
    """Anthropic HTTP errors, from create() and from entering messages.stream()."""
    server.push(reply, reply)
    with anth(server) as client:
        with pytest.raises(error) as raised:
            client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES[1:])
        with (
            pytest.raises(error),
            client.messages.stream(model="claude-x", max_tokens=5, messages=MESSAGES[1:]),
        ):
            pass
    for row in rows(spans):
        check_span(row, "anthropic.messages", "anthropic", "claude-x")
        assert (row["error_type"], row["error_message"]) == error_facts(raised.value)


def test_timeouts_and_connection_errors(server: LLMServer, spans: Any, instrumented: None) -> None:
    """APITimeoutError and APIConnectionError (nothing listening) of both SDKs are recorded."""
    server.push(Reply(hang=2.0, body={}), Reply(hang=2.0, body={}))
    seen: list[BaseException] = []
    with oai(server, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError) as raised:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        seen.append(raised.value)
    with anth(server, timeout=0.2) as aclient:
        with pytest.raises(anthropic.APITimeoutError) as raised:
            aclient.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES[1:])
        seen.append(raised.value)
    with openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test", max_retries=0) as dead:
        with pytest.raises(openai.APIConnectionError) as raised:
            dead.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        seen.append(raised.value)
    assert [r["error_type"] for r in rows(spans)] == [error_facts(e)[0] for e in seen]
    assert [r["error_type"] for r in rows(spans)] == [
        "openai.APITimeoutError",
        "anthropic.APITimeoutError",
        "openai.APIConnectionError",
    ]


# -- hierarchy, agent, content ------------------------------------------------------------


def test_spans_nest_under_session_and_parent(
    server: LLMServer, spans: Any, instrumented: None
) -> None:
    """Calls (and streams) inside a decorated function are its children, in its session."""
    server.push(
        Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))),
        Reply(events=message_events(PIECES)),
    )

    @monitor_llm("agent.step", operation_type="agent")
    def step(oc: openai.OpenAI, ac: anthropic.Anthropic) -> str:
        oc.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = ac.messages.create(
            model="claude-x", max_tokens=5, messages=MESSAGES[1:], stream=True
        )
        return "".join(e.delta.text for e in stream if e.type == "content_block_delta")  # type: ignore[union-attr]

    with oai(server) as oc, anth(server) as ac, monitoring_session("session-7"):
        assert step(oc, ac) == TEXT
    by_name = {r["operation_name"]: r for r in rows(spans)}
    parent = by_name["agent.step"]
    for name in ("openai.chat.completions", "anthropic.messages"):
        child = by_name[name]
        assert child["parent_span_id"] == parent["span_id"]
        assert child["trace_id"] == parent["trace_id"]
        assert child["session_id"] == parent["session_id"] == "session-7"


def test_async_spans_nest(server: LLMServer, spans: Any, instrumented: None) -> None:
    """Async calls made under a decorated coroutine are its children."""
    server.push(Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))))

    @monitor_llm("agent.async_step")
    async def step() -> None:
        async with aoai(server) as client:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    asyncio.run(step())
    child, parent = rows(spans)
    assert child["parent_span_id"] == parent["span_id"]


def test_agent_name_and_content_capture(server: LLMServer, instrumented: None) -> None:
    """The current agent's name is stored; with capture on, prompt and completion too."""
    server.push(
        Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))), Reply(events=chat_chunks(PIECES))
    )
    with capture_spans(capture_content=True) as spans, oai(server) as client, agent("researcher"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    for row in spans.rows():
        assert row["agent_name"] == "researcher"
        assert row["completion_content"] == TEXT
        assert "Say hello" in row["prompt_content"] and "Be brief." in row["prompt_content"]


# -- patching ---------------------------------------------------------------------------


def _classes() -> list[tuple[type, str]]:
    from anthropic.resources.messages import AsyncMessages, Messages
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.responses import AsyncResponses, Responses

    return [
        (c, m)
        for c in (Completions, AsyncCompletions, Responses, AsyncResponses)
        for m in ("create", "parse")
    ] + [(c, m) for c in (Messages, AsyncMessages) for m in ("create", "parse", "stream")]


def test_global_patch_and_uninstrument_restore_originals(server: LLMServer, spans: Any) -> None:
    """Class patching covers clients made before and after; uninstrument puts back the very
    same function objects, and calls are then not recorded."""
    originals = {(c, m): c.__dict__[m] for c, m in _classes()}
    server.push(*[Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))) for _ in range(3)])
    with oai(server) as before:
        instrument_openai()
        instrument_anthropic()
        assert all(c.__dict__[m] is not originals[c, m] for c, m in _classes())
        with oai(server) as after:
            before.chat.completions.create(model="a", messages=MESSAGES)
            after.chat.completions.create(model="b", messages=MESSAGES)
            uninstrument_openai()
            uninstrument_anthropic()
            assert all(c.__dict__[m] is originals[c, m] for c, m in _classes())
            after.chat.completions.create(model="c", messages=MESSAGES)
    assert [r["model"] for r in rows(spans)] == ["a", "b"]


def test_client_patch(server: LLMServer, spans: Any) -> None:
    """Patching one client records its calls only; uninstrumenting it removes the instance
    attributes, so its methods are the class's again."""
    from openai.resources.chat.completions import Completions

    server.push(*[Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))) for _ in range(3)])
    with oai(server) as mine, oai(server) as other:
        instrument_openai(mine)
        assert "create" in mine.chat.completions.__dict__
        assert "create" not in other.chat.completions.__dict__
        mine.chat.completions.create(model="mine", messages=MESSAGES)
        other.chat.completions.create(model="other", messages=MESSAGES)
        uninstrument_openai(mine)
        assert "create" not in mine.chat.completions.__dict__
        assert mine.chat.completions.create.__func__ is Completions.__dict__["create"]  # type: ignore[attr-defined]
        mine.chat.completions.create(model="again", messages=MESSAGES)
    assert [r["model"] for r in rows(spans)] == ["mine"]


def test_async_client_patch(server: LLMServer, spans: Any) -> None:
    """An async client can be patched alone (Anthropic here, stream helper included)."""
    server.push(
        Reply(body=message_body(TEXT, usage=anthropic_usage(1, 2))),
        Reply(events=message_events(PIECES)),
    )

    async def main() -> None:
        async with aanth(server) as client:
            instrument_anthropic(client)
            await client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES[1:])
            async with client.messages.stream(
                model="claude-x", max_tokens=5, messages=MESSAGES[1:]
            ) as stream:
                await stream.until_done()
            uninstrument_anthropic(client)
            assert not {"create", "parse", "stream"} & set(client.messages.__dict__)

    asyncio.run(main())
    assert len(rows(spans)) == 2


def test_idempotent(server: LLMServer, spans: Any) -> None:
    """Instrumenting twice, or a client and globally, records each call once; one
    uninstrument per scope restores the originals."""
    from openai.resources.chat.completions import Completions

    original = Completions.__dict__["create"]
    server.push(*[Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))) for _ in range(2)])
    with oai(server) as client:
        instrument_openai()
        instrument_openai()
        client.chat.completions.create(model="twice", messages=MESSAGES)
        instrument_openai(client)
        instrument_openai(client)
        client.chat.completions.create(model="both", messages=MESSAGES)
        uninstrument_openai(client)
        uninstrument_openai()
        assert Completions.__dict__["create"] is original
        assert "create" not in client.chat.completions.__dict__
    assert [r["model"] for r in rows(spans)] == ["twice", "both"]


def test_kept_raw_wrapper_stops_recording(server: LLMServer, spans: Any) -> None:
    """A with_raw_response made while instrumented keeps working, unrecorded, after
    uninstrument (its create was bound when it was made)."""
    server.push(*[Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))) for _ in range(2)])
    with oai(server) as client:
        instrument_openai(client)
        raw = client.chat.completions.with_raw_response
        raw.create(model="on", messages=MESSAGES)
        uninstrument_openai(client)
        assert raw.create(model="off", messages=MESSAGES).parse().choices[0].message.content
    assert [r["model"] for r in rows(spans)] == ["on"]


def test_wrapper_keeps_metadata(instrumented: None) -> None:
    """The wrapper looks like the SDK's method: name, docstring, signature."""
    import inspect

    from openai.resources.chat.completions import Completions

    wrapper = Completions.__dict__["create"]
    original = wrapper.__llamonitor_original__
    assert wrapper.__name__ == "create" and wrapper.__doc__ == original.__doc__
    assert inspect.signature(wrapper) == inspect.signature(original)


def test_wrapped_by_another_library(server: LLMServer, spans: Any) -> None:
    """Another library's functools.wraps wrapper around ours stays in place when
    uninstrumenting; ours is switched off inside it (and instrumenting again wraps theirs)."""
    import functools

    from openai.resources.chat.completions import Completions

    original = Completions.__dict__["create"]
    server.push(*[Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))) for _ in range(3)])
    instrument_openai()
    ours = Completions.__dict__["create"]

    @functools.wraps(ours)
    def theirs(*args: Any, **kwargs: Any) -> Any:
        return ours(*args, **kwargs)

    Completions.create = theirs  # type: ignore[method-assign]
    try:
        with oai(server) as client:
            client.chat.completions.create(model="on", messages=MESSAGES)
            uninstrument_openai()
            assert Completions.__dict__["create"] is theirs
            client.chat.completions.create(model="off", messages=MESSAGES)
            instrument_openai()
            client.chat.completions.create(model="again", messages=MESSAGES)
            uninstrument_openai()
            assert Completions.__dict__["create"] is theirs
    finally:
        Completions.create = original  # type: ignore[method-assign]
    assert [r["model"] for r in rows(spans)] == ["on", "again"]


def test_wrong_client_type() -> None:
    """Passing something that is not a client of the SDK is a TypeError."""
    with pytest.raises(TypeError, match="OpenAI"):
        instrument_openai(object())
    with pytest.raises(TypeError, match="Anthropic"):
        instrument_anthropic(openai.OpenAI(api_key="test"))


# -- calling straight through, never breaking the app -------------------------------


def test_not_recorded_without_monitoring_or_when_suppressed(
    server: LLMServer, spans: Any, instrumented: None
) -> None:
    """Inside llamonitor's own work (suppressed) or with sampling at 0: nothing recorded,
    results unchanged."""
    server.push(Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))))
    with oai(server) as client, suppressed():
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert rows(spans) == []


def test_not_initialized(server: LLMServer, instrumented: None) -> None:
    """Before initialize_monitoring the wrapper calls straight through."""
    llamonitor.shutdown_monitoring(5.0)
    assert _handoff.ACTIVE is None
    server.push(Reply(events=chat_chunks(PIECES)))
    with oai(server) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert sum(1 for _ in stream) == data_events(chat_chunks(PIECES))


def test_sampled_out(server: LLMServer, instrumented: None) -> None:
    """A call sampled out is counted as such; its stream is not wrapped."""
    server.push(Reply(events=chat_chunks(PIECES)))
    with capture_spans(sample_rate=0.0) as spans, oai(server) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert stream._iterator.__name__ == "__stream__"  # the SDK's own generator
        assert len(list(stream)) == data_events(chat_chunks(PIECES))
        health = llamonitor.get_writer().health_check()  # type: ignore[union-attr]
    assert spans.rows() == []
    assert health["dropped"]["sampled_out"] == 1


def test_monitoring_failure_never_reaches_the_app(
    server: LLMServer,
    spans: Any,
    instrumented: None,
    internal_errors: list[tuple[str, BaseException]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the usage reading or the chunk accumulator is reported, not raised; the
    result and every chunk still reach the caller, and the stream's span is still recorded."""
    from llamonitor.integrations import _core
    from llamonitor.llm import _usage

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in usage")

    monkeypatch.setattr(_core, "facts_and_text", broken)
    monkeypatch.setattr(_usage.ChatStreamUsage, "feed", broken)
    server.push(
        Reply(body=chat_completion(TEXT, usage=chat_usage(1, 2))), Reply(events=chat_chunks(PIECES))
    )
    with oai(server) as client:
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert len(chunks) == data_events(chat_chunks(PIECES))
    (stream_row,) = rows(spans)
    assert stream_row["stream_item_count"] == 0  # the accumulator counts; it was broken
    kinds = sorted(kind for kind, _ in internal_errors)
    assert kinds == ["integration:openai", "integration:openai:chunk"]
    internal_errors.clear()
