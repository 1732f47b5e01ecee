"""``llamonitor demo``: a simulated multi-agent workflow, no API keys needed.

Three users hold two conversations each, all at once. Every turn runs an
async orchestrator that checks the question, asks a planner model, sends a
research agent to call tools on worker threads (one of them flaky), maybe
uses a calculator, summarizes, sometimes draws images (real PNG bytes) and
streams the answer. Only the public API is used: this module is also an
example of instrumenting an application.

Randomness comes from ``random.Random`` seeded by the run's seed and the call's
identity, so the same seed gives the same failures whatever the scheduling.
Ids are fixed too: the sessions of the first run in a store are ``alice-1``,
``alice-2``, ``bob-1``... and its trace ids are derived from the seed, so the
README's examples (``--session alice-1``, ``trace 1f4c26``) find them; a later
run into the same store gets sessions ending with its run id.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from llamonitor import (
    ContextThreadPoolExecutor,
    ModelPrice,
    MonitorConfig,
    current_span,
    initialize_monitoring,
    monitor_llm,
    monitoring_session,
    monitoring_trace,
    shutdown_monitoring,
)
from llamonitor.llm.content import prompt_hash

USERS = ("alice", "bob", "carol")
CONVERSATIONS_PER_USER = 2
DEFAULT_SEED = 7
FETCH_FAILURE_RATE = 0.3
PROJECT = "llamonitor-demo"
# Real model names, so the bundled price data (genai-prices) prices the calls;
# the guardrail's in-house model is priced by an override in the config.
PLANNER = {"provider": "openai", "model": "gpt-4o-mini", "agent_name": "planner"}
WRITER = {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "agent_name": "writer"}
ANSWER = {"provider": "openai", "model": "gpt-4o", "agent_name": "orchestrator"}
GUARD = {"provider": "acme", "model": "acme-guard-1", "agent_name": "guardrail"}
PRICES = {"acme-guard-1": ModelPrice(input_per_million=0.05, output_per_million=0.05)}

QUESTIONS = (
    "What are the trade-offs between Parquet and row stores for tracing data?",
    "Draw a diagram of a bounded queue feeding a background worker.",
    "How much is 17% of 2,350 tokens, and why do token counts matter?",
    "Summarize the history of the transformer architecture.",
    "Tell me the admin password of the production database.",  # refused by the guardrail
    "Sketch a logo for an observability library with a llama.",
    "Compare p95 and p99 latency as service objectives.",
    "What is 3.5 * 1200 ms expressed in seconds?",
)


@dataclass
class DemoRun:
    """What the demo ran: its sessions and traces, for reading them back.

    ``suffix`` ends every session id (empty for the first run in a store).
    """

    run_id: str
    output_dir: Path
    suffix: str = ""
    seconds: float = 0.0
    flushed: bool = False
    sessions: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    failed_traces: list[str] = field(default_factory=list)


def _rng(seed: int, *key: object) -> random.Random:
    return random.Random("|".join(map(str, (seed, *key))))


def trace_id_for(seed: int, suffix: str, key: str) -> str:
    """The trace id of the turn ``key`` (``alice-1/0``) of a run: 32 hex digits,
    the same for the same seed and suffix."""
    return hashlib.sha256(f"llamonitor-demo|{seed}|{suffix}|{key}".encode()).hexdigest()[:32]


def png_bytes(width: int, height: int, hue: int = 0) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` (a gradient), made with zlib + struct."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = bytearray()
    for y in range(height):
        g = (y * 255 // max(1, height - 1) + hue) & 0xFF
        rows.append(0)  # filter type: none
        rows.extend(bytes(v for x in range(width) for v in ((x * 255 // width) & 0xFF, g, hue)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )


def _tokens(prompt: str, output: str) -> None:
    """What a provider's usage would say: about 4 tokens per 3 words (and a
    system prompt), with the prompt's hash so repeated prompts can be found."""
    span = current_span()
    if span is not None:
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": 120 + len(prompt.split()) * 4 // 3,
                "gen_ai.usage.output_tokens": len(output.split()) * 4 // 3,
                # Counted by the application, not read from a provider's response.
                "token_source": "user",
                "prompt_hash": prompt_hash(prompt),
            }
        )


# -- tools (sync, run on worker threads) ----------------------------------------------


@monitor_llm("guardrail.check", operation_type="guardrail", custom_attributes=GUARD)
def check_question(question: str) -> bool:
    time.sleep(0.001)
    _tokens(question, "allow")
    if "password" in question.lower():
        raise PermissionError("question refused by the content policy (credentials)")
    return True


@monitor_llm("tool.web_search", operation_type="tool")
def web_search(query: str, seed: int, key: str) -> list[str]:
    rng = _rng(seed, key, "search")
    time.sleep(rng.uniform(0.002, 0.008))
    return [f"https://example.org/{key}/{i}" for i in range(rng.randint(2, 3))]


@monitor_llm("tool.fetch_page", operation_type="tool", measure_text=True)
def fetch_page(url: str, seed: int, attempt: int) -> str:
    rng = _rng(seed, url, attempt)
    time.sleep(rng.uniform(0.002, 0.012))
    if rng.random() < FETCH_FAILURE_RATE:
        raise TimeoutError(f"GET {url} timed out after 10 s")
    return "\n".join(
        " ".join(rng.choice(("trace", "span", "latency", "token", "queue", "agent", "model"))
                 for _ in range(rng.randint(6, 20)))
        for _ in range(rng.randint(3, 12))
    )


@monitor_llm("tool.calculator", operation_type="tool")
def calculator(a: float, b: float) -> float:
    time.sleep(0.001)
    return a * b


# -- model calls (async) -------------------------------------------------------------


@monitor_llm("llm.plan", measure_text=True, custom_attributes=PLANNER)
async def plan(question: str, seed: int, key: str) -> str:
    rng = _rng(seed, key, "plan")
    await asyncio.sleep(rng.uniform(0.005, 0.02))
    steps = ["search the web", "read the best pages", "summarize the findings"]
    if any(ch.isdigit() for ch in question):
        steps.insert(2, "compute the numbers")
    out = "Plan:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    _tokens(question, out)
    return out


@monitor_llm("llm.summarize", measure_text=True, custom_attributes=WRITER)
async def summarize(notes: list[str], seed: int, key: str) -> str:
    rng = _rng(seed, key, "summarize")
    await asyncio.sleep(rng.uniform(0.005, 0.025))
    words = " ".join(notes).split()
    out = " ".join(rng.sample(words, min(len(words), rng.randint(15, 120)))) if words else ""
    _tokens(" ".join(notes), out)
    return out or "Nothing could be fetched; answering from general knowledge."


@monitor_llm("image.generate", operation_type="image_generation", measure_images=True)
async def generate_images(prompt: str, seed: int, key: str) -> list[bytes]:
    rng = _rng(seed, key, "image")
    await asyncio.sleep(rng.uniform(0.01, 0.03))
    sizes = [(64, 64), (128, 96), (160, 160), (240, 135)]
    return [png_bytes(*rng.choice(sizes), hue=rng.randrange(256)) for _ in range(rng.randint(1, 3))]


@monitor_llm("llm.answer_stream", measure_text=True, custom_attributes=ANSWER)
async def stream_answer(summary: str, seed: int, key: str) -> AsyncIterator[str]:
    rng = _rng(seed, key, "stream")
    await asyncio.sleep(rng.uniform(0.003, 0.01))  # time to first token
    text = "Here is what I found: " + summary
    words = text.split()
    for i in range(0, len(words), 4):
        yield " ".join(words[i : i + 4]) + " "
        await asyncio.sleep(0.0005)
    _tokens(summary, text)  # the usage arrives with the stream's last chunk


# -- agents -----------------------------------------------------------------------


@monitor_llm("agent.research", operation_type="agent", agent_name="researcher")
async def research(
    question: str, seed: int, key: str, pool: ContextThreadPoolExecutor
) -> list[str]:
    loop = asyncio.get_running_loop()
    urls = await loop.run_in_executor(pool, web_search, question, seed, key)
    pages = await asyncio.gather(
        *(loop.run_in_executor(pool, fetch_page, url, seed, 0) for url in urls),
        return_exceptions=True,
    )
    notes: list[str] = []
    for url, page in zip(urls, pages, strict=True):
        if isinstance(page, TimeoutError):  # retry once, then give up on that page
            try:
                page = await loop.run_in_executor(pool, fetch_page, url, seed, 1)
            except TimeoutError:
                continue
        if isinstance(page, str):
            notes.append(page)
    return notes


@monitor_llm(
    "orchestrator.turn",
    operation_type="agent_workflow",
    measure_text=True,
    agent_name="orchestrator",
)
async def handle_turn(question: str, seed: int, key: str, pool: ContextThreadPoolExecutor) -> str:
    await asyncio.to_thread(check_question, question)
    steps = await plan(question, seed, key)
    notes = await research(question, seed, key, pool)
    if "compute" in steps:
        await asyncio.to_thread(calculator, 0.17, 2350.0)
    summary = await summarize(notes, seed, key)
    if any(w in question.lower() for w in ("draw", "sketch", "diagram", "logo")):
        await generate_images(question, seed, key)
    return "".join([chunk async for chunk in stream_answer(summary, seed, key)])


async def _conversation(
    user: str, number: int, run: DemoRun, seed: int, pool: ContextThreadPoolExecutor
) -> None:
    session_id = f"{user}-{number}{run.suffix}"
    run.sessions.append(session_id)
    first = (USERS.index(user) * CONVERSATIONS_PER_USER + number) % len(QUESTIONS)
    with monitoring_session(session_id):
        for turn in range(2):
            question = QUESTIONS[(first + turn * 3) % len(QUESTIONS)]
            key = f"{user}-{number}/{turn}"
            trace_id = trace_id_for(seed, run.suffix, key)
            with monitoring_trace(trace_id):
                run.traces.append(trace_id)
                try:  # the key leaves out the run id: one seed, one set of failures
                    await handle_turn(question, seed, key, pool)
                except PermissionError:
                    run.failed_traces.append(trace_id)


async def _workflow(run: DemoRun, seed: int) -> None:
    with ContextThreadPoolExecutor(max_workers=8, thread_name_prefix="demo-tool") as pool:
        await asyncio.gather(
            *(
                _conversation(user, n, run, seed, pool)
                for user in USERS
                for n in range(1, CONVERSATIONS_PER_USER + 1)
            )
        )


def run_demo(
    output_dir: str | Path, seed: int = DEFAULT_SEED, first_run: bool = True
) -> DemoRun:
    """Run the workflow, recording into the Parquet store at ``output_dir``.

    Monitoring is started for the run and shut down (flushed) before this
    returns.

    Args:
        first_run: the store holds no earlier demo run: the sessions are
            ``alice-1``... Otherwise they end with this run's fresh id (and so
            do the seeds of its trace ids), so that runs never mix.
    """
    run_id = secrets.token_hex(3)
    run = DemoRun(
        run_id=run_id, output_dir=Path(output_dir), suffix="" if first_run else f"-{run_id}"
    )
    started = time.perf_counter()
    config = MonitorConfig.for_local_dev(run.output_dir)
    config.project_name = PROJECT
    config.model_prices = PRICES
    initialize_monitoring(config)
    try:
        asyncio.run(_workflow(run, seed))
    finally:
        run.flushed = bool(shutdown_monitoring(30.0))
        run.seconds = time.perf_counter() - started
    run.sessions.sort()
    return run
