"""The seed's quick start records its span with the seed's columns."""

from __future__ import annotations

import asyncio

import llamonitor
from llamonitor import monitor_llm


def test_async_span_reaches_memory_backend(spans: llamonitor.InMemoryBackend) -> None:
    @monitor_llm(
        operation_name="generate_text", measure_text=True, custom_attributes={"model": "gpt-4"}
    )
    async def my_llm_function(prompt: str) -> dict[str, str]:
        return {"text": "Generated response..."}

    result = asyncio.run(my_llm_function("Hello!"))
    assert result == {"text": "Generated response..."}
    assert llamonitor.flush(5)
    (row,) = spans.rows()
    assert row["operation_name"] == "generate_text"
    assert row["text_char_count"] == len("Generated response...")
    assert row["text_word_count"] == 2
    assert row["custom_attributes"] == '{"model": "gpt-4"}'
