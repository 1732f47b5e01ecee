"""``llamonitor.llm._usage``: response facts, request facts, stream accumulators, estimates."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion
from openai.types.responses import Response, ResponseStreamEvent

from _llm_server import (
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    message_body,
    message_events,
    response_body,
    response_events,
    responses_usage,
)
from llamonitor.llm import _usage
from llamonitor.llm._usage import (
    TOKEN_SOURCE_ESTIMATE,
    ChatStreamUsage,
    MessagesStreamUsage,
    ResponsesStreamUsage,
    add_estimates,
    estimate_tokens,
    prompt_chars,
    request_facts,
    response_facts,
    response_text,
)

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "token_source",
)


def chunks(events: list[tuple[str | None, Any]]) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate(d) for _, d in events if d != "[DONE]"]


def response_stream(events: list[tuple[str | None, Any]]) -> list[Any]:
    adapter: Any = pydantic.TypeAdapter(ResponseStreamEvent)
    return [adapter.validate_python(d) for _, d in events]


def message_stream(events: list[tuple[str | None, Any]]) -> list[Any]:
    adapter: Any = pydantic.TypeAdapter(RawMessageStreamEvent)
    return [adapter.validate_python(d) for name, d in events if name != "ping"]


# -- response_facts: SDK objects ----------------------------------------------------


def test_chat_completion_facts() -> None:
    """A ChatCompletion gives every column, cached and reasoning tokens included."""
    body = chat_completion(
        "Hi",
        id="c-9",
        model="gpt-4o-2024",
        finish_reason="length",
        usage=chat_usage(120, 30, cached=100, reasoning=12),
    )
    body["usage"]["prompt_tokens_details"]["cache_write_tokens"] = 7
    assert response_facts(ChatCompletion.model_validate(body)) == {
        "provider": "openai",
        "response_model": "gpt-4o-2024",
        "response_id": "c-9",
        "finish_reason": "length",
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "cache_read_tokens": 100,
        "cache_write_tokens": 7,
        "reasoning_tokens": 12,
        "token_source": "provider",
    }


@pytest.mark.parametrize("usage", [None, "absent"])
def test_chat_completion_without_usage(usage: Any) -> None:
    """A null or missing usage leaves the token columns out, nothing else."""
    body = chat_completion("Hi") if usage == "absent" else chat_completion("Hi", usage=None)
    facts = response_facts(ChatCompletion.model_validate(body))
    assert facts is not None
    assert not set(TOKEN_KEYS) & set(facts)
    assert facts["response_id"] == "chatcmpl-1"
    assert facts["finish_reason"] == "stop"


def test_parsed_chat_completion_is_a_chat_completion() -> None:
    """Subclasses of the SDK classes (ParsedChatCompletion) are recognized."""
    body = chat_completion("{}", usage=chat_usage(5, 6))
    facts = response_facts(ParsedChatCompletion[Any].model_validate(body))
    assert facts is not None and facts["input_tokens"] == 5 and facts["output_tokens"] == 6


def test_responses_facts() -> None:
    """A Responses API Response: cached and reasoning details, status as finish reason."""
    body = response_body(
        "Hello",
        id="resp_7",
        model="o4-mini",
        usage=responses_usage(300, 40, cached=256, reasoning=32),
    )
    assert response_facts(Response.model_validate(body)) == {
        "provider": "openai",
        "response_model": "o4-mini",
        "response_id": "resp_7",
        "finish_reason": "completed",
        "input_tokens": 300,
        "output_tokens": 40,
        "total_tokens": 340,
        "cache_read_tokens": 256,
        "cache_write_tokens": 0,
        "reasoning_tokens": 32,
        "token_source": "provider",
    }
    assert response_text(Response.model_validate(body)) == "Hello"


def test_incomplete_response_reason() -> None:
    """An incomplete response's finish reason is why it stopped."""
    body = response_body("Hel", status="incomplete", usage=responses_usage(3, 4))
    body["incomplete_details"] = {"reason": "max_output_tokens"}
    facts = response_facts(Response.model_validate(body))
    assert facts is not None and facts["finish_reason"] == "max_output_tokens"


def test_anthropic_message_adds_cache_tokens_to_input() -> None:
    """Anthropic input_tokens exclude cache reads/writes: the column includes them."""
    body = message_body(
        "Hi",
        id="msg_5",
        model="claude-opus-4-1",
        stop_reason="max_tokens",
        usage=anthropic_usage(10, 20, cache_read=1000, cache_write=200),
    )
    body["usage"]["output_tokens_details"] = {"thinking_tokens": 15}
    assert response_facts(Message.model_validate(body)) == {
        "provider": "anthropic",
        "response_model": "claude-opus-4-1",
        "response_id": "msg_5",
        "finish_reason": "max_tokens",
        "input_tokens": 1210,
        "output_tokens": 20,
        "total_tokens": 1230,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 200,
        "reasoning_tokens": 15,
        "token_source": "provider",
    }


def test_anthropic_message_without_cache() -> None:
    """Null cache counts add nothing and leave the cache columns out."""
    facts = response_facts(Message.model_validate(message_body("Hi", usage=anthropic_usage(9, 4))))
    assert facts is not None
    assert (facts["input_tokens"], facts["output_tokens"], facts["total_tokens"]) == (9, 4, 13)
    assert "cache_read_tokens" not in facts and "cache_write_tokens" not in facts


# -- response_facts: dicts and other objects ---------------------------------------------


def test_dict_shapes_infer_the_provider() -> None:
    """Plain dicts of each API's shape give the same facts as the SDK objects."""
    chat = chat_completion("Hi", usage=chat_usage(12, 7, cached=5))
    resp = response_body("Hi", usage=responses_usage(8, 2, cached=4))
    msg = message_body("Hi", usage=anthropic_usage(3, 4, cache_read=10))
    assert response_facts(chat) == response_facts(ChatCompletion.model_validate(chat))
    assert response_facts(resp) == response_facts(Response.model_validate(resp))
    assert response_facts(msg) == response_facts(Message.model_validate(msg))
    assert response_facts(msg)["provider"] == "anthropic"  # type: ignore[index]
    assert response_text(chat) == response_text(resp) == response_text(msg) == "Hi"


def test_dict_with_only_usage() -> None:
    """A dict with a usage and no other sign of its API: counts, no provider."""
    assert response_facts({"usage": {"input_tokens": 3, "output_tokens": 4}, "model": "m"}) == {
        "response_model": "m",
        "input_tokens": 3,
        "output_tokens": 4,
        "token_source": "provider",
    }


def test_values_of_the_wrong_type_are_left_out() -> None:
    """Counts that are not ints (strings, bools, floats) never reach a column."""
    facts = response_facts(
        {
            "object": "chat.completion",
            "model": 5,
            "choices": [],
            "usage": {"prompt_tokens": "12", "completion_tokens": True, "total_tokens": 1.5},
        }
    )
    assert facts == {"provider": "openai"}


class WithUsage:
    """A user's response object with an OpenAI-style usage."""

    def __init__(self) -> None:
        self.model = "local-llama"
        self.usage = type(
            "U", (), {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        )()


class AnthropicLike:
    def __init__(self) -> None:
        self.usage = {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 6}
        self.stop_reason = "end_turn"


class RaisingUsage:
    @property
    def usage(self) -> Any:
        raise RuntimeError("do not touch")


class Hostile:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


def test_non_standard_objects() -> None:
    """Objects with a compatible usage work (provider unknown); others give None, never raise."""
    assert response_facts(WithUsage()) == {
        "response_model": "local-llama",
        "input_tokens": 11,
        "output_tokens": 5,
        "total_tokens": 16,
        "token_source": "provider",
    }
    facts = response_facts(AnthropicLike())
    assert (
        facts is not None and facts["input_tokens"] == 10 and facts["finish_reason"] == "end_turn"
    )
    for obj in (
        None,
        "text",
        b"x",
        42,
        1.5,
        [1, 2],
        ("a",),
        {"a": 1},
        {},
        object(),
        RaisingUsage(),
        Hostile(),
        WithUsage,
    ):
        assert response_facts(obj) is None, obj
        assert response_text(obj) is None


def test_dispatch_is_cached_per_class() -> None:
    """The handler of a class is found once, then read from the cache."""
    obj = ChatCompletion.model_validate(chat_completion("Hi", usage=chat_usage(1, 2)))
    response_facts(obj)
    response_facts("plain text")  # not a response: cached as one with nothing to read
    assert _usage._handlers[ChatCompletion] is _usage._chat
    assert _usage._handlers[str] is _usage._nothing


# -- request_facts -------------------------------------------------------------------


def test_request_facts() -> None:
    """model, temperature (as float) and the token limit under any of its names."""
    from openai import omit

    assert request_facts({"model": "gpt-4o", "temperature": 1, "max_tokens": 50}) == {
        "model": "gpt-4o",
        "temperature": 1.0,
        "max_tokens": 50,
    }
    assert request_facts({"model": "o3", "max_completion_tokens": 70})["max_tokens"] == 70
    assert request_facts({"model": "gpt-4.1", "max_output_tokens": 90})["max_tokens"] == 90
    assert request_facts({"model": "m", "temperature": omit, "max_tokens": omit}) == {"model": "m"}
    assert request_facts({"temperature": True, "max_tokens": False, "model": None}) == {}
    assert request_facts(
        {"model": "m", "temperature": 0.5, "extra_body": {"temperature": 0.9, "max_tokens": 8}}
    ) == {
        "model": "m",
        "temperature": 0.5,
        "max_tokens": 8,
    }


# -- estimates --------------------------------------------------------------------


def test_estimates() -> None:
    """chars/4 rounded up; the prompt's text parts count, images do not."""
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]
    prompt = {
        "system": [{"type": "text", "text": "abcd"}],
        "messages": [
            {"role": "user", "content": "hello"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "xyz"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
    }
    assert prompt_chars(prompt) == 12
    facts: dict[str, Any] = {"input_tokens": 100, "token_source": "provider"}
    add_estimates(facts, prompt, 9)
    assert facts == {
        "input_tokens": 100,
        "output_tokens": 3,
        "total_tokens": 103,
        "token_source": TOKEN_SOURCE_ESTIMATE,
    }


# -- stream accumulators -------------------------------------------------------------


def test_chat_stream_with_usage() -> None:
    """Chat chunks: text, finish reason from the last choice, usage from the usage chunk."""
    acc = ChatStreamUsage()
    items = chunks(
        chat_chunks(
            ["Hel", "lo ", "you"],
            id="c-3",
            model="gpt-x",
            finish_reason="length",
            usage=chat_usage(9, 3, cached=8),
        )
    )
    for c in items:
        acc.feed(c)
    assert acc.items == len(items) == 6 and acc.first_ns > 0
    assert acc.text() == "Hello you"
    assert acc.facts() == {
        "provider": "openai",
        "response_model": "gpt-x",
        "response_id": "c-3",
        "finish_reason": "length",
        "input_tokens": 9,
        "output_tokens": 3,
        "total_tokens": 12,
        "cache_read_tokens": 8,
        "token_source": "provider",
    }


def test_chat_stream_without_usage_is_estimated() -> None:
    """No usage chunk: output from the text, input from the prompt, source says estimate."""
    acc = ChatStreamUsage()
    for c in chunks(chat_chunks(["abcdefghi"])):
        acc.feed(c)
    facts = acc.facts({"messages": [{"role": "user", "content": "x" * 17}]})
    assert (facts["input_tokens"], facts["output_tokens"], facts["total_tokens"]) == (5, 3, 8)
    assert facts["token_source"] == TOKEN_SOURCE_ESTIMATE


def test_chat_stream_tool_calls_and_other_choices() -> None:
    """Tool-call arguments count for the estimate only; choices other than the first are skipped."""
    acc = ChatStreamUsage()
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call = {
        "index": 0,
        "id": "t",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
    }
    acc.feed(
        ChatCompletionChunk.model_validate(
            {
                **base,
                "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}],
            }
        )
    )
    acc.feed(
        ChatCompletionChunk.model_validate(
            {
                **base,
                "choices": [{"index": 1, "delta": {"content": "other"}, "finish_reason": "stop"}],
            }
        )
    )
    acc.feed(
        ChatCompletionChunk.model_validate(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        )
    )
    assert acc.text() is None
    facts = acc.facts(None)
    assert facts["finish_reason"] == "tool_calls"
    assert facts["output_tokens"] == estimate_tokens(len("lookup") + len('{"q": "x"}'))
    assert "input_tokens" not in facts  # no prompt given: nothing to estimate from


def test_responses_stream() -> None:
    """Responses events: text deltas, usage and model from response.completed."""
    acc = ResponsesStreamUsage()
    events = response_stream(
        response_events(
            ["Hi ", "there"], id="r-4", model="gpt-4.1-x", usage=responses_usage(20, 2, cached=16)
        )
    )
    for e in events:
        acc.feed(e)
    assert acc.items == len(events) and acc.text() == "Hi there"
    facts = acc.facts()
    assert facts["response_id"] == "r-4" and facts["response_model"] == "gpt-4.1-x"
    assert (facts["input_tokens"], facts["output_tokens"], facts["cache_read_tokens"]) == (
        20,
        2,
        16,
    )
    assert facts["token_source"] == "provider" and facts["finish_reason"] == "completed"


def test_responses_stream_cut_before_completed() -> None:
    """Without response.completed: model and id from response.created, tokens estimated."""
    acc = ResponsesStreamUsage()
    for e in response_stream(response_events(["abcd", "efgh"], id="r-5"))[:5]:
        acc.feed(e)
    facts = acc.facts("1234")
    assert facts["response_id"] == "r-5" and "finish_reason" not in facts
    assert (facts["input_tokens"], facts["output_tokens"]) == (1, 2)
    assert facts["token_source"] == TOKEN_SOURCE_ESTIMATE


def test_messages_stream() -> None:
    """Anthropic events: input (with caches) from message_start, output from message_delta."""
    acc = MessagesStreamUsage()
    events = message_stream(
        message_events(
            ["Hel", "lo"],
            id="m-1",
            model="claude-x",
            input=7,
            output=11,
            cache_read=50,
            cache_write=3,
            stop_reason="stop_sequence",
        )
    )
    for e in events:
        acc.feed(e)
    assert acc.items == len(events) == 7 and acc.text() == "Hello"
    assert acc.facts() == {
        "provider": "anthropic",
        "response_model": "claude-x",
        "response_id": "m-1",
        "input_tokens": 60,
        "output_tokens": 11,
        "total_tokens": 71,
        "cache_read_tokens": 50,
        "cache_write_tokens": 3,
        "finish_reason": "stop_sequence",
        "token_source": "provider",
    }


def test_messages_stream_tool_and_thinking_deltas() -> None:
    """Tool input JSON and thinking deltas count for the estimate, not the text."""
    acc = MessagesStreamUsage()
    events = message_events(["Hi"], input=3)[:3]
    for name, delta in (
        ("content_block_delta", {"type": "thinking_delta", "thinking": "hmm" * 4}),
        ("content_block_delta", {"type": "input_json_delta", "partial_json": '{"a": 1}'}),
        ("content_block_delta", {"type": "signature_delta", "signature": "x" * 100}),
    ):
        events.append((name, {"type": name, "index": 1, "delta": delta}))
    for e in message_stream(events):
        acc.feed(e)
    assert acc.text() is None
    assert acc.facts()["output_tokens"] == estimate_tokens(12 + 8)


def test_messages_stream_cut_before_message_delta() -> None:
    """Cut early: the input count is the provider's, the output one is estimated (not the
    placeholder of message_start)."""
    acc = MessagesStreamUsage()
    for e in message_stream(message_events(["abcdefgh"], input=30))[:3]:
        acc.feed(e)
    facts = acc.facts()
    assert facts["input_tokens"] == 30 and facts["output_tokens"] == 2
    assert facts["token_source"] == TOKEN_SOURCE_ESTIMATE and "finish_reason" not in facts


def test_empty_stream() -> None:
    """A stream with no chunk gives the provider and estimates of zero output."""
    for acc in (ChatStreamUsage(), ResponsesStreamUsage(), MessagesStreamUsage()):
        assert acc.items == 0 and acc.text() is None
        facts = acc.facts(None)
        assert facts["provider"] == acc.provider and facts["output_tokens"] == 0
