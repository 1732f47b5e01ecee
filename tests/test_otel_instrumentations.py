"""Real OpenTelemetry instrumentation packages into llamonitor's store, in process.

Each package patches the real ``openai`` / ``anthropic`` SDK (or LangChain),
pointed at the local test LLM server (``_llm_server``), and reports to an
OTel SDK ``TracerProvider`` with ``llamonitor.otel.SpanProcessor``: the rows
must carry the model, the token counts the server sent, the cost llamonitor's
prices give, and the place in the tree of the ``@monitor_llm`` spans around
or inside them. The packages patch globally: each test instruments and
uninstruments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import duckdb
import openai
import pytest
import wrapt
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from openinference.instrumentation.langchain import LangChainInstrumentor
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceOpenAI
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as OpenLLMetryAnthropic
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryOpenAI
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OTelOpenAIV2
from opentelemetry.sdk.trace import TracerProvider

import llamonitor.otel
from _helpers import rows
from _llm_server import (
    LLMServer,
    Reply,
    anthropic_usage,
    chat_completion,
    chat_usage,
    message_body,
)
from llamonitor import (
    MonitorConfig,
    initialize_monitoring,
    monitor_llm,
    monitoring_session,
    shutdown_monitoring,
)
from llamonitor.llm.pricing import rates
from llamonitor.otel import SpanProcessor, _processor

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


@pytest.fixture(scope="module")
def provider() -> Iterator[TracerProvider]:
    """The application's TracerProvider, with llamonitor's processor (one for
    the module, as an application has one)."""
    tp = TracerProvider()
    processor = SpanProcessor(interval_seconds=0.05)
    tp.add_span_processor(processor)
    tp.llamonitor_processor = processor  # type: ignore[attr-defined]
    yield tp
    tp.shutdown()


_PROXY = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2 / wrapt 1


def strip_left_wrappers() -> int:
    """Undo the wrappers an uninstrument left on the OpenAI SDK's classes.

    OpenLLMetry's ``OpenAIInstrumentor`` (0.62) uninstruments with
    ``unwrap("openai.resources.chat.completions", "Completions.create")``,
    which ``opentelemetry.instrumentation.utils.unwrap`` reads as the attribute
    ``"Completions.create"`` of module ``openai.resources.chat``: nothing is
    unwrapped, and instrumenting again wraps twice. And with several packages
    wrapping one method, each unwraps the outermost wrapper, whoever's it is.
    """
    stripped = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("openai.resources") or module is None:
            continue
        for cls in vars(module).values():
            if not isinstance(cls, type) or not cls.__module__.startswith("openai."):
                continue
            for attr, value in list(vars(cls).items()):
                while isinstance(value, _PROXY):
                    value = value.__wrapped__
                    setattr(cls, attr, value)
                    stripped += 1
    return stripped


@pytest.fixture(autouse=True)
def clean(server: LLMServer) -> Iterator[None]:
    server.reset()
    yield
    strip_left_wrappers()


def stored(provider: TracerProvider, spans: Any) -> list[dict[str, Any]]:
    """Every row so far: the processor's spans handed over, then written."""
    assert provider.llamonitor_processor.force_flush(10_000)  # type: ignore[attr-defined]
    return rows(spans)


def priced(model: str, provider: str, input_tokens: int, output_tokens: int) -> float:
    found = rates(model, provider)
    assert found is not None, model
    return found.cost(input_tokens, output_tokens).total_usd


def oai(server: LLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0, timeout=10)


def chat(server: LLMServer) -> str:
    server.push(Reply(body=chat_completion("Hello!", model="gpt-4o-mini", usage=chat_usage(42, 9))))
    with oai(server) as client:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    return result.choices[0].message.content or ""


def instrumented(instrumentor: Any, provider: TracerProvider) -> Any:
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor


OPENAI_INSTRUMENTORS: dict[str, Callable[[], Any]] = {
    "opentelemetry-instrumentation-openai-v2": OTelOpenAIV2,
    "openinference-instrumentation-openai": OpenInferenceOpenAI,
    "opentelemetry-instrumentation-openai (OpenLLMetry)": OpenLLMetryOpenAI,
}


@pytest.mark.parametrize("package", list(OPENAI_INSTRUMENTORS))
def test_openai_instrumentation_lands_under_monitor_llm(
    package: str, server: LLMServer, provider: TracerProvider, spans: Any
) -> None:
    """The package's chat span lands with model, tokens and cost, as the child
    of the @monitor_llm span it ran in, and a @monitor_llm call after it is
    its sibling: one trace, one session."""
    inst = instrumented(OPENAI_INSTRUMENTORS[package](), provider)
    try:

        @monitor_llm(operation_name="agent")
        def agent() -> str:
            return summarize(chat(server))

        @monitor_llm(operation_name="summarize")
        def summarize(text: str) -> str:
            return text.upper()

        with monitoring_session("conversation-1"):
            assert agent() == "HELLO!"
    finally:
        inst.uninstrument()
    found = stored(provider, spans)
    by = {r["operation_name"]: r for r in found}
    (llm,) = [r for r in found if r["operation_name"] not in ("agent", "summarize")]
    assert llm["operation_type"] == "llm_call"
    assert llm["model"] == "gpt-4o-mini"
    assert llm["provider"] == "openai"
    assert (llm["input_tokens"], llm["output_tokens"], llm["total_tokens"]) == (42, 9, 51)
    assert llm["cost_usd"] == pytest.approx(priced("gpt-4o-mini", "openai", 42, 9))
    assert llm["parent_span_id"] == by["agent"]["span_id"]
    assert by["summarize"]["parent_span_id"] == by["agent"]["span_id"]
    assert {r["trace_id"] for r in found} == {by["agent"]["trace_id"]}
    assert {r["session_id"] for r in found} == {"conversation-1"}


def test_anthropic_instrumentation_lands_under_monitor_llm(
    server: LLMServer, provider: TracerProvider, spans: Any
) -> None:
    """OpenLLMetry's Anthropic span lands with model, tokens and cost, as the
    child of the @monitor_llm span it ran in."""
    model = "claude-3-5-haiku-20241022"
    inst = instrumented(OpenLLMetryAnthropic(), provider)
    try:

        @monitor_llm(operation_name="agent")
        def agent() -> str:
            server.push(Reply(body=message_body("Hi!", model=model, usage=anthropic_usage(30, 7))))
            with anthropic.Anthropic(
                base_url=server.url, api_key="test", max_retries=0, timeout=10
            ) as client:
                msg = client.messages.create(model=model, max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
            return msg.content[0].text  # type: ignore[union-attr]

        assert agent() == "Hi!"
    finally:
        inst.uninstrument()
    found = stored(provider, spans)
    by = {r["operation_name"]: r for r in found}
    (llm,) = [r for r in found if r["operation_name"] != "agent"]
    assert llm["operation_type"] == "llm_call"
    assert (llm["model"], llm["provider"]) == (model, "anthropic")
    assert (llm["input_tokens"], llm["output_tokens"]) == (30, 7)
    assert llm["cost_usd"] == pytest.approx(priced(model, "anthropic", 30, 7))
    assert llm["parent_span_id"] == by["agent"]["span_id"]
    assert llm["trace_id"] == by["agent"]["trace_id"]


class FakeChat(GenericFakeChatModel):
    """LangChain's fake chat model, answering with usage, under a priced model name."""

    model_name: str = "gpt-4o-mini"


def fake_chat() -> FakeChat:
    usage = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
    return FakeChat(messages=iter([AIMessage(content="It is blue.", usage_metadata=usage)]))


def test_langchain_chain_lands_under_monitor_llm(provider: TracerProvider, spans: Any) -> None:
    """OpenInference's LangChain spans (chain, prompt, chat model) land as a
    subtree of the @monitor_llm span the chain ran in; the chat model's row
    has its model, tokens and cost."""
    inst = instrumented(LangChainInstrumentor(), provider)
    try:
        chain = ChatPromptTemplate.from_messages([("user", "Tell me about {topic}")]) | fake_chat()

        @monitor_llm(operation_name="agent")
        def agent() -> str:
            return str(chain.invoke({"topic": "the sky"}).content)

        assert agent() == "It is blue."
    finally:
        inst.uninstrument()
    found = stored(provider, spans)
    by = {r["operation_name"]: r for r in found}
    assert set(by) == {"agent", "RunnableSequence", "ChatPromptTemplate", "FakeChat"}
    llm = by["FakeChat"]
    assert (llm["operation_type"], llm["model"]) == ("llm_call", "gpt-4o-mini")
    assert (llm["input_tokens"], llm["output_tokens"]) == (11, 4)
    assert llm["cost_usd"] == pytest.approx(priced("gpt-4o-mini", "openai", 11, 4))
    assert by["RunnableSequence"]["parent_span_id"] == by["agent"]["span_id"]
    assert by["RunnableSequence"]["operation_type"] == "chain"
    assert llm["parent_span_id"] == by["RunnableSequence"]["span_id"]
    assert {r["trace_id"] for r in found} == {by["agent"]["trace_id"]}


def test_monitor_llm_tool_inside_a_langchain_chain_is_its_child(
    provider: TracerProvider, spans: Any
) -> None:
    """A @monitor_llm function a LangChain step calls is stored as the child of
    that step's span, in the chain's trace and session."""
    inst = instrumented(LangChainInstrumentor(), provider)
    try:

        @monitor_llm(operation_name="lookup")
        def lookup(question: str) -> str:
            return question + " (looked up)"

        chain = RunnableLambda(lookup, name="retrieve") | RunnableLambda(str.upper, name="shout")
        assert chain.invoke("sky") == "SKY (LOOKED UP)"
    finally:
        inst.uninstrument()
    found = stored(provider, spans)
    by = {r["operation_name"]: r for r in found}
    assert by["lookup"]["parent_span_id"] == by["retrieve"]["span_id"]
    assert by["retrieve"]["parent_span_id"] == by["RunnableSequence"]["span_id"]
    assert by["RunnableSequence"]["parent_span_id"] is None
    assert len({r["trace_id"] for r in found}) == 1
    assert len({r["session_id"] for r in found}) == 1


def test_all_packages_coexist_and_uninstrument_cleanly(
    server: LLMServer, provider: TracerProvider, spans: Any
) -> None:
    """The five packages instrument one process at once (the OpenAI ones wrap
    each other), every one lands its span, and once uninstrumented (with what
    the OpenAI ones leave behind stripped, see strip_left_wrappers) none does."""
    insts = [
        instrumented(make(), provider)
        for make in (*OPENAI_INSTRUMENTORS.values(), OpenLLMetryAnthropic, LangChainInstrumentor)
    ]
    try:
        assert chat(server) == "Hello!"
        chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | fake_chat()
        assert chain.invoke({"q": "sky?"}).content == "It is blue."
    finally:
        for inst in insts:
            inst.uninstrument()
    found = stored(provider, spans)
    llm_rows = [r for r in found if r["operation_type"] == "llm_call"]
    assert len(llm_rows) == 4  # three wrappers of one OpenAI call, and the fake chat model
    openai_rows = [r for r in llm_rows if r["provider"] == "openai"]
    assert len(openai_rows) == 3
    assert all((r["input_tokens"], r["output_tokens"]) == (42, 9) for r in openai_rows)
    assert len({r["trace_id"] for r in openai_rows}) == 1  # nested in one another
    strip_left_wrappers()  # OpenLLMetry's OpenAI uninstrument leaves its wrappers
    spans.clear()
    assert chat(server) == "Hello!"
    assert stored(provider, spans) == []


def test_readme_line_turns_langchain_on_into_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's one line (OpenInference's LangChain instrumentation on
    llamonitor.otel.tracer_provider()) lands a chain's spans in the Parquet store."""
    monkeypatch.setattr(_processor, "_provider", None)  # a provider of this test's own
    initialize_monitoring(MonitorConfig.for_local_dev(tmp_path))
    LangChainInstrumentor().instrument(tracer_provider=llamonitor.otel.tracer_provider())
    try:
        chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | fake_chat()
        assert chain.invoke({"q": "sky?"}).content == "It is blue."
    finally:
        LangChainInstrumentor().uninstrument()
        provider = llamonitor.otel.tracer_provider()
        assert provider.force_flush()
        provider.shutdown()
    assert shutdown_monitoring(20)
    found = duckdb.execute(
        f"select operation_name, model, input_tokens, output_tokens, cost_usd > 0 "
        f"from read_parquet('{tmp_path}/**/*.parquet') order by 1"
    ).fetchall()
    assert found == [
        ("ChatPromptTemplate", None, None, None, None),
        ("FakeChat", "gpt-4o-mini", 11, 4, True),
        ("RunnableSequence", None, None, None, None),
    ]
