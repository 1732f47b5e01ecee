"""Content in OTel spans fed through ``llamonitor.otel.SpanProcessor`` follows
the same capture setting and redaction as decorated code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import llamonitor
from llamonitor import MonitorConfig, StorageConfig
from llamonitor.otel import SpanProcessor, _bridge


@pytest.fixture
def feed() -> Iterator[Any]:
    """``feed(config_kwargs)``: monitoring into memory with those settings and
    one OTel chat span carrying a prompt with a secret and an e-mail; returns
    its row."""
    providers: list[TracerProvider] = []

    def run(**settings: Any) -> dict[str, Any]:
        _bridge.reset()
        memory = llamonitor.InMemoryBackend()
        llamonitor.initialize_monitoring(
            MonitorConfig(storage=StorageConfig(backend=memory, flush_interval_seconds=0.05),
                          **settings)
        )
        provider = TracerProvider()
        processor = SpanProcessor(interval_seconds=0.05)
        provider.add_span_processor(processor)
        providers.append(provider)
        with provider.get_tracer("t").start_as_current_span("chat") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("input.value", "mail bob@example.com, key sk-abcdefghijklmnopqrstuvwx")
            s.set_attribute("output.value", "ok, mailed bob@example.com")
            s.set_attribute("llm.input_messages.0.message.content", "call +1 415 555 0100 now")
            s.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "event mail eve@example.com"})
        assert processor.force_flush(5000)
        assert llamonitor.flush(10)
        (row,) = memory.rows()
        return dict(row)

    yield run
    for provider in providers:
        provider.shutdown()
    _bridge.reset()


def test_capture_off_stores_no_content_but_the_prompt_hash(feed: Any) -> None:
    """Default (capture_content off): no prompt or completion column, no content
    attribute, as for decorated code; the prompt hash is kept."""
    row = feed()
    assert row.get("prompt_content") is None and row.get("completion_content") is None
    assert row["prompt_hash"]
    custom = json.loads(row["custom_attributes"] or "{}")
    assert not [k for k in custom if k.startswith("llm.input_messages")]
    assert "bob@example.com" not in json.dumps(row, default=str)
    assert "eve@example.com" not in json.dumps(row, default=str)  # nor in a span event


def test_capture_on_redacts_like_decorated_code(feed: Any) -> None:
    """capture_content on: the text is stored after the built-in rules and the
    user's patterns, in the columns and in the content attributes."""
    row = feed(capture_content=True, redact_patterns=[r"now"])
    assert row["prompt_content"] == "mail [EMAIL], key [SECRET]"
    assert row["completion_content"] == "ok, mailed [EMAIL]"
    custom = json.loads(row["custom_attributes"])
    assert custom["llm.input_messages.0.message.content"] == "call [PHONE] [REDACTED]"
    (event,) = [e for e in custom["otel.events"] if e["name"] == "gen_ai.content.prompt"]
    assert event["attributes"]["gen_ai.prompt"] == "event mail [EMAIL]"


def test_capture_on_without_rules_keeps_the_text(feed: Any) -> None:
    """redact_builtin off and no patterns: the content is stored as sent."""
    row = feed(capture_content=True, redact_builtin=False)
    assert row["prompt_content"].startswith("mail bob@example.com")
