"""Suggestions from the coordination graph (kinds of :class:`~._models.Suggestion`):

``agent_loop``
    An agent whose handoffs came back to it (see ``AgentNode.returned``) at
    least :data:`LOOP_RATE` of the time and at least :data:`MIN_RETURNS` times:
    work bouncing between agents (ping-pong) or an agent re-running itself.
    The most frequent loop through it is named. No saving is claimed.
``agent_bottleneck``
    An agent holding at least :data:`BOTTLENECK_SHARE` of the traces'
    critical paths, when more than one agent ran. The path's time in it is the
    most that speeding it up (or running it beside other work) could save.
``context_growth``
    The longest chain's last step received at least :data:`GROWTH_FACTOR`
    times the context tokens of its first, and at least
    :data:`GROWTH_MIN_TOKENS` more: each handoff passes everything on.
"""

from __future__ import annotations

from llamonitor.analysis._agents_model import AgentGraph, AgentLoop
from llamonitor.analysis._format import ms as _ms
from llamonitor.analysis._format import pct as _pct
from llamonitor.analysis._models import Suggestion

LOOP_RATE = 0.25
MIN_RETURNS = 3
BOTTLENECK_SHARE = 0.5
GROWTH_FACTOR = 3.0
GROWTH_MIN_TOKENS = 1000


def _arrow(path: list[str]) -> str:
    return " → ".join(path)


def _loop_of(agent: str, loops: list[AgentLoop]) -> AgentLoop | None:
    return next((lp for lp in loops if lp.path and lp.path[0] == agent), None)


def suggestions(graph: AgentGraph) -> list[Suggestion]:
    """The suggestions of ``graph`` (loops, bottlenecks, context growth)."""
    out: list[Suggestion] = []
    for node in graph.nodes:
        if node.returned < MIN_RETURNS or node.return_rate < LOOP_RATE:
            continue
        loop = _loop_of(node.agent, graph.loops)
        via = f" (most often {_arrow(loop.path)}, {loop.count:,} times)" if loop else ""
        out.append(Suggestion(
            kind="agent_loop",
            title=f"Agent `{node.agent}` hands {_pct(node.return_rate)} of requests back to itself",
            detail=(
                f"{node.returned:,} of the {node.handoffs_out:,} handoffs `{node.agent}` made came "
                f"back to it{via}. Work bouncing between agents costs a model call each way: "
                "give the receiver what it needs to finish, or a limit on round trips."
            ),
            figures={"agent": node.agent, "handoffs": node.handoffs_out,
                     "returned": node.returned, "return_rate": node.return_rate,
                     "loop": loop.path if loop else None},
        ))
    if len(graph.nodes) > 1:
        for node in graph.nodes:
            if node.critical_share < BOTTLENECK_SHARE:
                continue
            out.append(Suggestion(
                kind="agent_bottleneck",
                title=f"`{node.agent}` holds {_pct(node.critical_share)} of the critical path",
                detail=(
                    f"The traces' critical paths spent {_ms(node.critical_ms)} of "
                    f"{_ms(graph.critical_ms)} in `{node.agent}` ({node.invocations:,} "
                    f"invocations, {_ms(node.avg_ms)} each on average). A faster model, "
                    "smaller prompts, or running its steps beside the other agents' would "
                    "shorten every trace."
                ),
                saving_ms=node.critical_ms,
                figures={"agent": node.agent, "critical_share": node.critical_share,
                         "critical_ms": node.critical_ms, "invocations": node.invocations},
            ))
    chain = graph.longest_chain
    ctx = [s.context_tokens for s in chain.steps if s.context_tokens]
    grows = len(ctx) >= 2 and ctx[-1] >= GROWTH_FACTOR * ctx[0]
    if grows and ctx[-1] - ctx[0] >= GROWTH_MIN_TOKENS:
        agents = [s.agent for s in chain.steps]
        out.append(Suggestion(
            kind="context_growth",
            title=f"Context grows {ctx[-1] / ctx[0]:.1f} times along {_arrow(agents[:6])}"
            + (" …" if len(agents) > 6 else ""),
            detail=(
                f"Along the longest chain of handoffs ({chain.handoffs} handoffs, trace "
                f"{chain.trace_id}), the input of each agent's first LLM call grew from "
                f"{ctx[0]:,} to {ctx[-1]:,} tokens. Hand on a summary instead of the whole "
                "history."
            ),
            figures={"trace_id": chain.trace_id, "agents": agents, "first_tokens": ctx[0],
                     "last_tokens": ctx[-1], "growth": ctx[-1] / ctx[0]},
        ))
    return out
