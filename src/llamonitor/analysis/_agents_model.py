"""The typed results of the multi-agent analysis (see :mod:`._agents_walk` for
the definitions): plain dataclasses, JSON-ready with ``to_dict()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from llamonitor.analysis._models import Suggestion, _Result

HandoffKind = Literal["call", "sequence"]


@dataclass
class AgentNode(_Result):
    """One agent: its invocations and what they cost.

    ``time_ms`` sums its invocations' durations (a nested invocation's time is
    also in its caller's). ``cost_usd`` and the tokens are those of the spans
    of its invocations, not of the agents they hand work to. ``failed`` counts
    invocations whose own span failed; ``error_spans`` failed spans inside
    them. ``critical_ms`` is the agents' share of the traces' critical paths
    (each span's critical-path self time goes to the agent it ran in);
    ``critical_share`` that over the paths' total length. ``handoffs_out``
    counts handoffs it made; ``returned`` those after which work came back to
    it (an invocation of this agent is reachable from the receiver along
    handoffs); ``return_rate`` = ``returned / handoffs_out``.
    """

    agent: str
    invocations: int = 0
    time_ms: float = 0.0
    avg_ms: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    spans: int = 0
    failed: int = 0
    error_spans: int = 0
    critical_ms: float = 0.0
    critical_share: float = 0.0
    handoffs_out: int = 0
    returned: int = 0
    return_rate: float = 0.0


@dataclass
class AgentEdge(_Result):
    """The handoffs of one kind from ``source`` to ``target``.

    ``latency_ms``: the wait between the sender's last recorded step and the
    receiver's start (mean, p50 and max). ``success_rate``: the share whose
    receiver's invocation did not fail. ``context_tokens``: the receiver's
    first LLM call's input tokens (mean, over handoffs that have one);
    ``text_chars``: the output text of the sender's last step (mean, over
    handoffs that measured one).
    """

    source: str
    target: str
    kind: HandoffKind
    count: int = 0
    traces: int = 0
    latency_ms: float = 0.0
    p50_latency_ms: float = 0.0
    max_latency_ms: float = 0.0
    success_rate: float = 0.0
    failures: int = 0
    context_tokens: float | None = None
    text_chars: float | None = None


@dataclass
class ChainStep(_Result):
    """One invocation on a chain, and what was handed to it.

    ``kind`` is the handoff into it (``None`` for the first);
    ``offset_ms`` its start after the chain's first start. ``context_tokens``:
    its first LLM call's input tokens; ``text_chars``: the output text of the
    sender's last step before the handoff.
    """

    agent: str
    span_id: str
    kind: HandoffKind | None = None
    offset_ms: float = 0.0
    duration_ms: float = 0.0
    failed: bool = False
    context_tokens: int | None = None
    text_chars: int | None = None
    output_tokens: int = 0


@dataclass
class AgentChain(_Result):
    """The longest chain of handoffs (most handoffs; on a tie the longest in time).

    ``context_growth``: the last step's context tokens over the first's (of the
    steps that have them; ``None`` with fewer than two).
    """

    trace_id: str | None = None
    handoffs: int = 0
    duration_ms: float = 0.0
    steps: list[ChainStep] = field(default_factory=list)
    context_growth: float | None = None


@dataclass
class AgentLoop(_Result):
    """Handoffs that gave work back to an agent it had come from.

    ``path``: the agents from the earlier invocation to the re-entered one
    (``[A, A]``: an agent handing to itself; ``[A, B, A]``: ping-pong),
    cut to :data:`~._agents_walk.MAX_LOOP_PATH` agents.
    """

    path: list[str]
    count: int = 0
    traces: int = 0


@dataclass
class AgentGraph(_Result):
    """The coordination graph of a scope (a session, a time range...).

    ``spans`` read; ``agent_spans`` among them carry an ``agent_name``;
    ``unattributed_spans`` ran outside every agent's invocation.
    ``critical_ms``: the critical paths' total length (see :class:`AgentNode`).
    """

    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    project: str | None = None
    spans: int = 0
    agent_spans: int = 0
    unattributed_spans: int = 0
    traces: int = 0
    invocations: int = 0
    handoffs: int = 0
    critical_ms: float = 0.0
    nodes: list[AgentNode] = field(default_factory=list)
    edges: list[AgentEdge] = field(default_factory=list)
    loops: list[AgentLoop] = field(default_factory=list)
    longest_chain: AgentChain = field(default_factory=AgentChain)
    suggestions: list[Suggestion] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when no span in the scope carries an agent name."""
        return not self.nodes
