"""LLM semantics: the current agent, prices and cost, prompt hashing, content
capture with redaction. Token usage extraction lives in ``_usage``."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

AGENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "llamonitor_agent", default=None
)
"""The agent whose work is running: set by spans of ``@monitor_llm(agent_name=...)``
and ``Observatory.track(..., agent_name=...)``; LLM spans under it carry its name."""

current_agent = AGENT.get


@contextmanager
def agent(name: str | None) -> Iterator[None]:
    """Run a block as the work of agent ``name`` (LLM calls in it carry the name)."""
    token = AGENT.set(name)
    try:
        yield
    finally:
        AGENT.reset(token)


__all__ = ["AGENT", "agent", "current_agent"]
