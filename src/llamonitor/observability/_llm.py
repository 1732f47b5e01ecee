"""The LLM columns of an LLM call event: model, counts, request settings, content, cost."""

from __future__ import annotations

from typing import Any

from llamonitor.llm import _settings as llm_settings
from llamonitor.llm import content
from llamonitor.llm.pricing import fill_costs
from llamonitor.observability import _facts as f
from llamonitor.schema._columns import column_value

_LLM_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "time_to_first_token_ms",
    "response_model",
    "finish_reason",
)


def llm_facts(ev: Any) -> dict[str, Any]:
    """Column values of an ``LLMCallEvent`` (its fields, then its ``payload``)."""
    cols: dict[str, Any] = {
        "model": f.text(getattr(ev, "model", None)) or f.text(getattr(ev, "model_id", None)),
        "provider": f.text(getattr(ev, "provider", None)),
    }
    for name in _LLM_COLUMNS:
        value = getattr(ev, name, None)
        if value is not None:
            cols[name] = column_value(name, value) if name != "cost_usd" else f.number(value)
    payload = getattr(ev, "payload", None)
    prompt = getattr(ev, "prompt", None)
    if isinstance(payload, dict):
        if cols["model"] is None:
            cols["model"] = f.text(payload.get("model"))
        cols["temperature"] = column_value("temperature", payload.get("temperature"))
        tokens = payload.get("max_tokens", payload.get("max_completion_tokens"))
        cols["max_tokens"] = column_value("max_tokens", tokens)
        if prompt is None:
            prompt = next(
                (payload[k] for k in ("messages", "prompt", "input") if k in payload), None
            )
    if prompt is not None:
        cols["prompt_hash"] = content.prompt_hash(prompt)
    cols.update(captured(prompt, getattr(ev, "completion", None)))
    if cols.get("input_tokens") is not None or cols.get("output_tokens") is not None:
        cols.setdefault("token_source", "user")
    return cols


def captured(prompt: Any, completion: Any) -> dict[str, Any]:
    """Prompt and completion columns, redacted and capped like the decorator's,
    when ``MonitorConfig(capture_content=True)``; else nothing."""
    if not llm_settings.SETTINGS.capture_content:
        return {}
    text = None if prompt is None else content.prompt_text(prompt)
    done = None if completion is None else str(completion)
    if text is None and done is None:
        return {}
    stored = content._store(text, done)
    stored.pop("custom_attributes", None)
    return stored


def price(cols: dict[str, Any]) -> None:
    """Total tokens and cost of an LLM span's columns, as the worker prices spans."""
    i, o = cols.get("input_tokens"), cols.get("output_tokens")
    if (i is not None or o is not None) and cols.get("total_tokens") is None:
        cols["total_tokens"] = (i or 0) + (o or 0)
    lists = {k: [v] for k, v in cols.items()}

    def column(c: dict[str, list[Any]], name: str, n: int) -> list[Any]:
        return c.setdefault(name, [None] * n)

    fill_costs(lists, 1, column)
    for name in ("input_cost_usd", "output_cost_usd", "cost_usd", "cost_source"):
        value = lists.get(name, [None])[0]
        if value is not None:
            cols[name] = value
