"""LLM semantics: cost, LLM columns, agents, content capture with redaction, Observatory."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from genai_prices import Usage, calc_price

import llamonitor
from _helpers import one, rows
from llamonitor import ModelPrice, Observatory, monitor_llm, monitoring_session
from llamonitor.llm import pricing
from llamonitor.llm.content import prompt_hash, prompt_text, redact_builtin
from llamonitor.testing import capture_spans


@pytest.fixture(autouse=True)
def fresh_prices() -> Iterator[None]:
    pricing.reset()
    pricing._warned.clear()
    yield
    pricing.reset()
    pricing._warned.clear()


def package_price(model: str, provider: str | None, **usage: int) -> tuple[float, float, float]:
    r = calc_price(Usage(**usage), model_ref=model, provider_id=provider)
    return float(r.input_price), float(r.output_price), float(r.total_price)


# -- cost ----------------------------------------------------------------------

CASES = [
    # model, provider, input, output, cache_read, cache_write
    ("gpt-4o", "openai", 1200, 350, 0, 0),
    ("gpt-4o-mini", "openai", 98_000, 1_000, 40_000, 0),
    ("gpt-4o-2024-08-06", "openai", 10, 5, 0, 0),
    ("claude-3-5-haiku-latest", "anthropic", 1000, 10, 200, 300),
    ("claude-sonnet-4-5", "anthropic", 5000, 800, 0, 1000),
    ("gemini-1.5-flash", "google", 4096, 512, 0, 0),
    ("gemini-1.5-pro", "google", 300_000, 2_000, 0, 0),  # tiered: past 128k tokens
    ("mistral-large-latest", "mistral", 2000, 100, 0, 0),
]


@pytest.mark.parametrize(("model", "provider", "i", "o", "cr", "cw"), CASES)
def test_cost_matches_the_price_package(
    model: str, provider: str, i: int, o: int, cr: int, cw: int
) -> None:
    usage = {"input_tokens": i, "output_tokens": o}
    if cr:
        usage["cache_read_tokens"] = cr
    if cw:
        usage["cache_write_tokens"] = cw
    want = package_price(model, provider, **usage)
    got = pricing.cost(model, i, o, provider=provider, cache_read_tokens=cr, cache_write_tokens=cw)
    assert got is not None
    assert (got.input_usd, got.output_usd, got.total_usd) == pytest.approx(want, rel=1e-9)
    assert got.source == "genai-prices"


def test_recorded_spans_carry_cost_from_their_model_and_tokens(
    spans: llamonitor.InMemoryBackend,
) -> None:
    obs = Observatory(project_name="p")
    for model, provider, i, o, cr, _cw in CASES[:4]:
        obs.record_call(provider, model, i, o, 12.5, cached_tokens=cr or None)
    got = {r["model"]: r for r in rows(spans)}
    for model, provider, i, o, cr, _cw in CASES[:4]:
        usage = {"input_tokens": i, "output_tokens": o}
        if cr:
            usage["cache_read_tokens"] = cr
        want = package_price(model, provider, **usage)
        r = got[model]
        assert (r["input_cost_usd"], r["output_cost_usd"], r["cost_usd"]) == pytest.approx(want)
        assert r["cost_source"] == "genai-prices"
        assert r["total_tokens"] == i + o
        assert r["token_source"] == "user"


def test_token_counts_set_by_the_application_are_marked_user(
    spans: llamonitor.InMemoryBackend,
) -> None:
    """gen_ai.usage.* span attributes or custom_attributes give token_source "user";
    a span without counts keeps it null."""

    @llamonitor.monitor_llm("by_attribute")
    def by_attribute() -> str:
        span = llamonitor.current_span()
        assert span is not None
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        span.set_attribute("gen_ai.usage.output_tokens", 3)
        return "x"

    @llamonitor.monitor_llm("by_custom", custom_attributes={"output_tokens": 7})
    def by_custom() -> str:
        return "y"

    @llamonitor.monitor_llm("no_counts")
    def no_counts() -> str:
        return "z"

    by_attribute(), by_custom(), no_counts()
    got = {r["operation_name"]: r for r in rows(spans)}
    attribute = got["by_attribute"]
    assert (attribute["token_source"], attribute["total_tokens"]) == ("user", 15)
    assert got["by_custom"]["token_source"] == "user"
    assert got["no_counts"]["token_source"] is None


def test_price_overrides_win_and_price_private_models() -> None:
    prices = {
        "my-finetune": ModelPrice(input_per_million=2.0, output_per_million=8.0),
        "gpt-4o": ModelPrice(
            input_per_million=1.0, output_per_million=1.0, cached_input_per_million=0.5
        ),
    }
    with capture_spans(model_prices=prices) as spans:
        obs = Observatory()
        obs.record_call("acme", "my-finetune", 1_000_000, 500_000)
        obs.record_call("openai", "gpt-4o", 1000, 1000, cached_tokens=400)
        got = {r["model"]: r for r in rows(spans)}
    assert got["my-finetune"]["cost_usd"] == pytest.approx(2.0 + 4.0)
    assert got["my-finetune"]["cost_source"] == "override"
    # 600 uncached at $1/M + 400 cached at $0.5/M + 1000 output at $1/M
    assert got["gpt-4o"]["input_cost_usd"] == pytest.approx((600 + 200) / 1e6)
    assert got["gpt-4o"]["cost_usd"] == pytest.approx((600 + 200 + 1000) / 1e6)


def test_unknown_model_leaves_cost_empty_and_warns_once(
    spans: llamonitor.InMemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    obs = Observatory()
    with caplog.at_level(logging.WARNING, logger="llamonitor.pricing"):
        for _ in range(3):
            obs.record_call("acme", "acme-secret-model-7", 100, 10)
        got = rows(spans)
    assert [r["cost_usd"] for r in got] == [None, None, None]
    assert [r["total_tokens"] for r in got] == [110, 110, 110]
    warnings = [r for r in caplog.records if "acme-secret-model-7" in r.getMessage()]
    assert len(warnings) == 1
    assert "model_prices" in warnings[0].getMessage()


def test_zero_and_missing_token_counts(spans: llamonitor.InMemoryBackend) -> None:
    obs = Observatory()
    obs.record_call("openai", "gpt-4o", 0, 0, operation="zero")
    obs.record_call("openai", "gpt-4o", None, None, operation="none")
    obs.record_call("openai", "gpt-4o", 1000, None, operation="input_only")
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["zero"]["cost_usd"] == 0.0
    assert got["zero"]["total_tokens"] == 0
    assert got["none"]["cost_usd"] is None  # no tokens: no cost, not a zero cost
    assert got["none"]["total_tokens"] is None
    want = package_price("gpt-4o", "openai", input_tokens=1000)[2]
    assert got["input_only"]["cost_usd"] == pytest.approx(want)
    assert got["input_only"]["output_cost_usd"] == 0.0


def test_a_cost_given_by_the_user_is_kept(spans: llamonitor.InMemoryBackend) -> None:
    Observatory().record_call("openai", "gpt-4o", 1000, 100, cost_usd=0.5)
    r = one(spans)
    assert r["cost_usd"] == 0.5
    assert r["cost_source"] == "user"


def test_a_dated_response_model_unknown_to_prices_falls_back_to_the_requested_one(
    spans: llamonitor.InMemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    @monitor_llm("call")
    def call() -> str:
        span = llamonitor.current_span()
        assert span is not None
        span.set_attributes(
            {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2099-01-01-unknown",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 50,
            }
        )
        return "ok"

    with caplog.at_level(logging.WARNING, logger="llamonitor.pricing"):
        call()
        r = one(spans)
    assert r["response_model"] == "gpt-4o-2099-01-01-unknown"
    assert r["cost_usd"] == pytest.approx(
        package_price("gpt-4o", "openai", input_tokens=100, output_tokens=50)[2]
    )
    assert not caplog.records


def test_a_batch_priced_in_columns_is_priced_as_row_by_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``price_arrays`` (the OTLP receiver's table: one lookup per distinct
    model, column arithmetic) gives the costs and sources ``fill_costs`` gives
    row by row, to the bit: known, dated, unknown and missing models, missing
    counts, cache tokens, costs the spans carry; an unknown model is warned once;
    a tiered price is left to ``fill_costs``."""
    import random

    rng = random.Random(11)
    models = [None, "", "gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "no-such-model-x",
              "gpt-4o-mini-2024-07-18"]

    def some(values: list[Any], n: int, missing: float = 0.3) -> list[Any]:
        return [rng.choice(values) if rng.random() > missing else None for _ in range(n)]

    def column(cols: dict[str, Any], name: str, n: int) -> list[Any]:
        if cols.get(name) is None:
            cols[name] = [None] * n
        return list(cols[name])

    with caplog.at_level(logging.WARNING, logger="llamonitor.pricing"):
        for _ in range(200):
            n = rng.randrange(1, 40)
            cols: dict[str, Any] = {}
            for name, values in (("model", models), ("response_model", models),
                                 ("provider", [None, "openai", "anthropic", "other"])):
                if rng.random() < 0.7:
                    cols[name] = some(values, n)
            for name in ("input_tokens", "output_tokens", "cache_read_tokens",
                         "cache_write_tokens"):
                if rng.random() < 0.7:
                    cols[name] = some([0, 7, 1000, 123_456, 2**40], n)
            if rng.random() < 0.3:
                cols["cost_usd"] = some([0.5, 0.0, 1e-9], n, 0.7)
            if rng.random() < 0.3:
                cols["cost_source"] = some(["user", "override"], n, 0.7)
            expected = {k: list(v) for k, v in cols.items()}

            def mutable(c: dict[str, Any], name: str, n: int) -> list[Any]:
                if c.get(name) is None:
                    c[name] = [None] * n
                col: list[Any] = c[name]
                return col

            pricing.fill_costs(expected, n, mutable)
            got = pricing.price_arrays(cols, n)
            assert got is not None
            for name in ("input_cost_usd", "output_cost_usd", "cost_usd", "cost_source"):
                assert got[name].to_pylist() == column(expected, name, n), name
    unknown = [r for r in caplog.records if "no-such-model-x" in r.getMessage()]
    assert len(unknown) == 1
    tiered = {"model": ["gemini-1.5-pro"], "provider": ["google"], "input_tokens": [300_000]}
    assert pricing.price_arrays(tiered, 1) is None


# -- columns from attributes, agents, project -----------------------------------


def test_custom_attributes_and_otel_names_fill_the_llm_columns(
    spans: llamonitor.InMemoryBackend,
) -> None:
    @monitor_llm("gen", custom_attributes={"model": "gpt-4", "provider": "openai", "team": "a"})
    def gen() -> str:
        span = llamonitor.current_span()
        assert span is not None
        span.set_attribute("gen_ai.usage.input_tokens", 7)
        span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
        span.set_attribute("gen_ai.request.temperature", 0.2)
        span.set_attribute("max_tokens", "not a number")  # does not fit: attribute only
        return "hello"

    gen()
    r = one(spans)
    assert (r["model"], r["provider"], r["input_tokens"]) == ("gpt-4", "openai", 7)
    assert (r["finish_reason"], r["temperature"], r["max_tokens"]) == ("stop", 0.2, None)
    attrs = json.loads(r["custom_attributes"])
    assert attrs["team"] == "a"
    assert attrs["model"] == "gpt-4"  # kept as given, too
    assert attrs["max_tokens"] == "not a number"


def test_agent_name_marks_the_agent_span_and_the_calls_inside(
    spans: llamonitor.InMemoryBackend,
) -> None:
    obs = Observatory()

    @monitor_llm("plan", operation_type="agent", agent_name="planner")
    async def plan() -> str:
        obs.record_call("openai", "gpt-4o-mini", 10, 5, 3.0)
        await asyncio.sleep(0)
        return "plan"

    @monitor_llm("tool")
    def tool() -> str:
        obs.record_call("openai", "gpt-4o-mini", 1, 1, 1.0)
        return "x"

    asyncio.run(plan())
    tool()
    got = {(r["operation_name"], r["agent_name"]) for r in rows(spans)}
    assert got == {("plan", "planner"), ("llm_call", "planner"), ("tool", None), ("llm_call", None)}
    assert llamonitor.current_agent() is None


def test_project_name_from_config_fills_every_span() -> None:
    @monitor_llm("x")
    def x() -> str:
        return "x"

    with capture_spans(project_name="shop") as spans:
        x()
        Observatory(project_name="other").record_call("openai", "gpt-4o", 1, 1)
        got = sorted((r["operation_name"], r["project_name"]) for r in rows(spans))
    assert got == [("llm_call", "other"), ("x", "shop")]


# -- content capture and redaction ----------------------------------------------

SECRET_TEXT = (
    "mail jane.doe@example.com or call +1 (415) 555-0132, card 4111 1111 1111 1111, "
    "key sk-proj-abcdefghijklmnop1234567890, api_key=hunter2hunter2, AKIAIOSFODNN7EXAMPLE"
)


def test_builtin_redaction_rules() -> None:
    out = redact_builtin(SECRET_TEXT)
    for secret in (
        "jane.doe@example.com",
        "555-0132",
        "4111 1111 1111 1111",
        "sk-proj-abcdefghijklmnop1234567890",
        "hunter2hunter2",
        "AKIAIOSFODNN7EXAMPLE",
    ):
        assert secret not in out, out
    assert "[EMAIL]" in out and "[PHONE]" in out and "[CARD]" in out and "[SECRET]" in out
    assert "api_key=[SECRET]" in out
    # Not everything with digits is a secret: a non-Luhn number, years, amounts stay.
    benign = "order 1234 5678 9012 3456 in 2024 cost $1,250.50 at 10:30"
    assert redact_builtin(benign).count("[CARD]") == 0
    assert "2024" in redact_builtin(benign) and "$1,250.50" in redact_builtin(benign)


def test_content_is_not_stored_by_default_but_its_hash_is(
    spans: llamonitor.InMemoryBackend,
) -> None:
    Observatory().record_call(
        "openai", "gpt-4o", 5, 2, prompt=[{"role": "user", "content": "hi"}], completion="yo"
    )
    r = one(spans)
    assert r["prompt_content"] is None and r["completion_content"] is None
    assert r["prompt_hash"] == prompt_hash([{"role": "user", "content": "hi"}])
    assert len(r["prompt_hash"]) == 32
    assert r["text_char_count"] == 2  # the completion is still measured


def test_captured_content_is_redacted_capped_and_the_cap_recorded() -> None:
    def no_names(text: str) -> str:
        return text.replace("Alice", "[NAME]")

    config = dict(
        capture_content=True,
        content_max_chars=60,
        redact_patterns=[r"ORD-\d+"],
        redactor=no_names,
    )
    with capture_spans(**config) as spans:
        prompt = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"Alice asks about ORD-123. {SECRET_TEXT}"},
        ]
        Observatory().record_call("openai", "gpt-4o", 5, 2, prompt=prompt, completion="ok Alice")
        prompt.append({"role": "assistant", "content": "changed after the call"})
        r = one(spans)
    assert r["completion_content"] == "ok [NAME]"
    p = r["prompt_content"]
    assert p == "system: be brief\nuser: [NAME] asks about [REDACTED]. mail [EMAIL]"[:60]
    assert "changed after" not in p
    cut = json.loads(r["custom_attributes"])["content_truncated"]
    assert cut == {"prompt": len(prompt_text(prompt[:2])), "max_chars": 60}


def test_a_bad_redaction_pattern_fails_at_configuration() -> None:
    with pytest.raises(Exception, match="redact_patterns") as info:
        llamonitor.MonitorConfig(redact_patterns=["(unclosed"])
    assert "not a valid regular expression" in str(info.value)


def test_prompt_hash_is_stable_and_content_sensitive() -> None:
    a = [{"role": "user", "content": "hello"}]
    assert prompt_hash(a) == prompt_hash([{"role": "user", "content": "hello"}])
    assert prompt_hash(a) != prompt_hash([{"role": "user", "content": "hello!"}])
    assert prompt_hash(a) != prompt_hash([{"role": "system", "content": "hello"}])
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert prompt_hash(parts) == prompt_hash(a)
    assert prompt_hash("") is None


# -- Observatory -------------------------------------------------------------------


def test_observatory_session_holds_its_calls(spans: llamonitor.InMemoryBackend) -> None:
    @monitor_llm("retrieve", operation_type="tool")
    def retrieve() -> str:
        return "docs"

    obs = Observatory(project_name="proj")
    session = obs.start_session("answer")
    retrieve()
    obs.record_call(
        provider=llamonitor.ModelProvider.OPENAI,
        model_name="gpt-4o",
        prompt_tokens=500,
        completion_tokens=200,
        latency_ms=1500,
        agent_name="writer",
    )
    obs.end_session(session)
    obs.end_session(session)  # twice: recorded once
    got = {r["operation_name"]: r for r in rows(spans)}
    assert set(got) == {"answer", "retrieve", "llm_call"}
    root = got["answer"]
    assert root["operation_type"] == "session" and root["parent_span_id"] is None
    assert root["project_name"] == "proj"
    for name in ("retrieve", "llm_call"):
        assert got[name]["parent_span_id"] == root["span_id"]
        assert got[name]["session_id"] == session.session_id
    call = got["llm_call"]
    assert call["duration_ms"] == pytest.approx(1500, abs=0.01)
    assert (call["provider"], call["agent_name"], call["input_tokens"]) == ("openai", "writer", 500)


def test_observatory_track_sync_async_and_failures(spans: llamonitor.InMemoryBackend) -> None:
    obs = Observatory()
    with obs.track("run") as run:
        with obs.track("search", agent_name="researcher"):
            obs.record_call("anthropic", "claude-3-5-haiku-latest", 10, 5)
        obs.record_call("openai", "gpt-4o", 1, 1, success=False, error="rate limited")

    async def step() -> None:
        async with obs.track("async-step"):
            raise KeyError("boom")

    with pytest.raises(KeyError):
        asyncio.run(step())
    got = {r["operation_name"]: r for r in rows(spans) if r["operation_name"] != "llm_call"}
    calls = [r for r in rows(spans) if r["operation_name"] == "llm_call"]
    assert got["run"]["operation_type"] == "session"
    assert got["search"]["operation_type"] == "agent"
    assert got["search"]["parent_span_id"] == run.span_id
    assert {c["agent_name"] for c in calls} == {"researcher", None}
    failed = next(c for c in calls if c["error"])
    assert failed["error_message"] == "rate limited"
    assert got["async-step"]["error_type"] == "KeyError"
    assert got["async-step"]["operation_type"] == "session"


def test_observatory_starts_monitoring_when_none_runs(tmp_path: Any) -> None:
    config = llamonitor.MonitorConfig.for_local_dev(tmp_path / "store")
    obs = Observatory(project_name="solo", config=config)
    with monitoring_session("s1"):
        obs.record_call("openai", "gpt-4o", 10, 10)
    assert llamonitor.flush(5)
    from llamonitor.storage import parquet

    (r,) = parquet.query(tmp_path / "store").events()
    assert (r["project_name"], r["session_id"], r["model"]) == ("solo", "s1", "gpt-4o")
    assert r["cost_usd"] > 0


def test_record_call_never_raises(spans: llamonitor.InMemoryBackend, internal_errors: Any) -> None:
    obs = Observatory()
    obs.record_call("openai", "gpt-4o", latency_ms="slow")  # type: ignore[arg-type]
    assert internal_errors and internal_errors[0][0] == "record_call"
    internal_errors.clear()


# -- @monitor_llm reads usage from what the function returns ------------------------

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": "four words of text"},
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 7},
    },
}

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "hello there"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_read_input_tokens": 90,
        "cache_creation_input_tokens": 5,
    },
}


def test_decorated_calls_returning_sdk_objects_record_usage_and_cost(
    spans: llamonitor.InMemoryBackend,
) -> None:
    from anthropic.types import Message
    from openai.types.chat import ChatCompletion

    @monitor_llm("openai_call", measure_text=True)
    def openai_call() -> ChatCompletion:
        return ChatCompletion.model_validate(CHAT)

    @monitor_llm("anthropic_call", agent_name="writer")
    async def anthropic_call() -> Message:
        return Message.model_validate(MESSAGE)

    completion = openai_call()
    message = asyncio.run(anthropic_call())
    assert isinstance(completion, ChatCompletion) and isinstance(message, Message)
    got = {r["operation_name"]: r for r in rows(spans)}
    o = got["openai_call"]
    assert (o["provider"], o["response_model"], o["response_id"]) == (
        "openai", "gpt-4o-mini-2024-07-18", "chatcmpl-1",
    )
    assert (o["input_tokens"], o["output_tokens"], o["total_tokens"]) == (120, 30, 150)
    assert (o["cache_read_tokens"], o["reasoning_tokens"]) == (100, 7)
    assert (o["finish_reason"], o["token_source"]) == ("length", "provider")
    assert o["text_char_count"] == len("four words of text")
    want = package_price(
        "gpt-4o-mini", "openai", input_tokens=120, output_tokens=30, cache_read_tokens=100
    )
    assert o["cost_usd"] == pytest.approx(want[2])
    a = got["anthropic_call"]
    # OTel convention: input tokens include the cached ones (Anthropic reports them apart).
    assert (a["input_tokens"], a["cache_read_tokens"], a["cache_write_tokens"]) == (105, 90, 5)
    assert (a["provider"], a["finish_reason"]) == ("anthropic", "end_turn")
    assert a["agent_name"] == "writer"
    want = package_price(
        "claude-3-5-haiku-20241022", "anthropic",
        input_tokens=105, output_tokens=4, cache_read_tokens=90, cache_write_tokens=5,
    )  # fmt: skip
    assert a["cost_usd"] == pytest.approx(want[2])


def test_decorated_calls_returning_dicts_and_responses_without_usage(
    spans: llamonitor.InMemoryBackend,
) -> None:
    @monitor_llm("as_dict")
    def as_dict() -> dict[str, Any]:
        return dict(CHAT)

    @monitor_llm("no_usage")
    def no_usage() -> dict[str, Any]:
        return {**CHAT, "usage": None}

    @monitor_llm("not_llm")
    def not_llm() -> dict[str, Any]:
        return {"rows": 3, "usage": "n/a"}

    @monitor_llm("tool_output")
    def tool_output() -> dict[str, Any]:
        return {"output": "42", "choices": ["a", "b"]}

    for fn in (as_dict, no_usage, not_llm, tool_output):
        fn()
    got = {r["operation_name"]: r for r in rows(spans)}
    assert got["as_dict"]["input_tokens"] == 120 and got["as_dict"]["provider"] == "openai"
    est = got["no_usage"]
    assert est["token_source"].startswith("estimate")
    assert est["output_tokens"] == -(-len("four words of text") // 4)
    assert est["input_tokens"] is None  # the prompt is not known to the decorator
    for name in ("not_llm", "tool_output"):
        n = got[name]
        assert n["provider"] is None and n["output_tokens"] is None and n["token_source"] is None


@pytest.mark.parametrize("backend", ["parquet", "sqlite"])
def test_observatory_get_report_reads_the_session_back(tmp_path: Any, backend: str) -> None:
    """Seed 002's ``get_report(session)``: its cost and calls, from the store written to."""
    if backend == "parquet":
        config = llamonitor.MonitorConfig.for_local_dev(tmp_path / "store")
    else:
        config = llamonitor.MonitorConfig.for_production(f"sqlite:///{tmp_path / 'spans.db'}")
    obs = Observatory(project_name="p", config=config)
    other = obs.start_session("other")
    obs.record_call("openai", "gpt-4o", 5000, 5000)
    obs.end_session(other)
    session = obs.start_session("answer")
    obs.record_call("openai", "gpt-4o", 1000, 100, 20.0)
    obs.record_call("anthropic", "claude-3-5-haiku-latest", 2000, 50, 30.0)
    obs.end_session(session)
    report = obs.get_report(session)
    want = package_price("gpt-4o", "openai", input_tokens=1000, output_tokens=100)[2]
    want += package_price(
        "claude-3-5-haiku-latest", "anthropic", input_tokens=2000, output_tokens=50
    )[2]
    assert report.session_id == session.session_id
    assert report.cost.total_usd == pytest.approx(want)
    assert report.cost.llm_calls == 2
    assert {g.key for g in report.cost.by_model} >= {"gpt-4o", "claude-3-5-haiku-latest"}


def test_observatory_get_report_needs_a_store_it_can_read(
    spans: llamonitor.InMemoryBackend,
) -> None:
    obs = Observatory()
    with pytest.raises(ValueError, match="pass store="):
        obs.get_report("s1")
