"""Agent invocations, handoffs, chains and loops from the span hierarchy (numpy).

Definitions (the figures of :class:`~._agents_model.AgentGraph` follow them):

**Agent of a span.** The ``agent_name`` of the span itself or, when it has
none, of its nearest ancestor that has one; spans with no such ancestor run
outside every agent (*unattributed*). Spans whose parent is missing from the
scope (lost, sampled out, outside the time range) are roots, as for the
critical path; spans on a cycle of parents reach no root and are left out.

**Invocation.** A span with an ``agent_name`` starts an invocation of that
agent when its nearest ancestor with an agent name has another name (or
there is none), or when its ``operation_type`` is one of
:data:`AGENT_OPERATION_TYPES` (an agent explicitly run again inside itself:
recursion). Every other span belongs to the invocation of its nearest
ancestor that starts one: the LLM calls and tools an agent makes are part of
its invocation. An invocation's time is its first span's; it *failed* when
that span failed.

**Handoff** (control passes from one agent's invocation to another's):

- ``call`` (parent -> child): invocation C is nested in invocation P (P is
  the invocation of the nearest ancestor of C's span with an agent name).
- ``sequence`` (sibling-sequential): invocations X and Y have the same parent
  invocation (or, both top-level, the same trace), and X is the one that
  ended last at or before Y started (on a tie, the one that started last,
  then a fixed order of span keys). Siblings that overlap in time ran in parallel: no
  handoff between them.

Latency of a handoff: the time from the sender's last recorded step to the
receiver's start. For ``sequence`` that is X's end; for ``call`` it is the
latest end, at or before C's start, of P's own spans (P's first span
excluded) and of P's other child invocations, or P's start if none ended
yet. Negative values (clock skew between processes) count as 0. A handoff
*succeeded* when the receiver's invocation did not fail. What it hands on:
``text_chars``, the output text (``text_char_count``) of that last step, and
``context_tokens``, the receiver's first LLM call's ``input_tokens``.

**Chains.** Handoffs link invocations into a DAG (every edge goes forward in
time: a child starts within its parent, a successor after its predecessor).
A chain is a path in it; the longest chain has the most handoffs (on a tie,
the longest time from its first start to its last end). **Loops**: a handoff
``u -> v`` re-enters agent A = agent(v) when an invocation of A is upstream of
``u`` (reaches ``u`` along handoffs, ``u`` included); its path is the agents
from the nearest such invocation to ``v``. An agent's handoff ``u -> v``
*returned* when an invocation of agent(u) is reachable from ``v`` (``v``
included): the work came back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llamonitor.analysis import _critical

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

AGENT_OPERATION_TYPES = ("agent", "agent_workflow", "agent_run", "invoke_agent")
"""``operation_type`` values that start an invocation even inside the same agent."""

MAX_LOOP_PATH = 8
"""A loop's path is cut to this many agents (the first ones, then the re-entered)."""

_REL_BITS = 40  # times relative to a group's start, in microseconds (12.7 days)
_REL_MAX = (1 << _REL_BITS) - 1


@dataclass
class Spans:
    """The columns read per span (one row each; NaN: not recorded).

    ``agent``: code of the agent name (-1: none); ``agent_type``: the span's
    operation type is in :data:`AGENT_OPERATION_TYPES`; ``trace``: a hash of
    the trace id; ``llm``: an LLM call.
    """

    k: U64
    pk: U64
    trace: U64
    a: I64
    d: I64
    agent: I64
    agent_type: B
    err: B
    llm: B
    cost: F64
    input_tokens: F64
    output_tokens: F64
    text_chars: F64


@dataclass
class Walk:
    """Per invocation (index ``v``) and per handoff (index ``h``) arrays."""

    n_agents: int
    inv_of: I64  # per span: its invocation, -1 outside
    root: I64  # per invocation: its first span's row
    agent: I64
    start: I64
    end: I64
    failed: B
    parent: I64  # per invocation: the parent invocation, -1 top-level
    context_tokens: F64  # first LLM call's input tokens (NaN: none)
    output_tokens: F64
    cost: F64
    input_tokens: F64
    llm_calls: I64
    spans: I64
    error_spans: I64
    # handoffs
    h_kind: I64  # 0 call, 1 sequence
    h_src: I64
    h_dst: I64
    h_latency_us: I64
    h_text_chars: F64
    # critical path, per agent code (the last code: no agent)
    critical_us: F64
    critical_total_us: int


def _nearest(flag: B, parent: I64) -> I64:
    """Per row: the nearest of itself and its ancestors with ``flag`` (-1: none).

    Pointer jumping: ``ptr[i]`` is always ``i`` or an ancestor whose answer is
    ``i``'s; unflagged pointers jump to their target's pointer, doubling the
    distance each round.
    """
    n = flag.size
    ptr: I64 = np.where(flag, np.arange(n), parent)
    for _ in range(n.bit_length() + 2):
        live = ptr >= 0
        live[live] = ~flag[ptr[live]]
        if not live.any():
            break
        nxt = ptr.copy()
        nxt[live] = ptr[ptr[live]]
        ptr = nxt
    ptr[(ptr >= 0) & ~flag[np.maximum(ptr, 0)]] = -1  # a cycle: no answer
    return ptr


def _first_per(group: I64, order_key: I64, size: int) -> I64:
    """Per group code (0..size-1): the row with the smallest ``order_key`` (-1: none)."""
    out: I64 = np.full(size, -1, np.int64)
    if group.size:
        o = np.lexsort((order_key, group))
        g = group[o]
        first = np.ones(g.size, np.bool_)
        first[1:] = g[1:] != g[:-1]
        out[g[first]] = o[first]
    return out


def walk(s: Spans, n_agents: int) -> Walk:
    """Invocations, handoffs and the critical path per agent of ``s``'s spans (at least one)."""
    n = s.k.size
    parent, _, _ = _critical._parents(s.k, s.pk)
    end = s.a + s.d
    _, reach = _critical._clip(parent, s.a.copy(), end.copy())
    has_agent = (s.agent >= 0) & reach
    agent_anc = _nearest(has_agent, parent)  # the agent of each span: agent[agent_anc]
    up: I64 = np.where(parent >= 0, agent_anc[np.maximum(parent, 0)], -1)  # strict ancestor
    nested = has_agent & (up >= 0)
    differs = np.zeros(n, np.bool_)
    differs[nested] = s.agent[up[nested]] != s.agent[nested]
    starts = has_agent & ((up < 0) | s.agent_type | differs)
    inv_row = _nearest(starts, parent)  # the row starting each span's invocation
    inv_row[~reach] = -1
    root: I64 = np.flatnonzero(starts)
    index: I64 = np.full(n, -1, np.int64)
    index[root] = np.arange(root.size)
    inv_of: I64 = np.where(inv_row >= 0, index[np.maximum(inv_row, 0)], -1)
    m = root.size
    p_row = parent[root]
    p_inv: I64 = np.where(p_row >= 0, inv_of[np.maximum(p_row, 0)], -1)

    member = np.flatnonzero(inv_of >= 0)
    mi = inv_of[member]

    def per_inv(values: npt.NDArray[np.generic]) -> F64:
        weights = np.nan_to_num(values[member].astype(np.float64))
        out: F64 = np.bincount(mi, weights=weights, minlength=m).astype(np.float64)
        return out

    ctx = np.full(m, np.nan)
    with_ctx = member[s.llm[member] & ~np.isnan(s.input_tokens[member])]
    first = _first_per(inv_of[with_ctx], s.a[with_ctx], m)
    ctx[first >= 0] = s.input_tokens[with_ctx[first[first >= 0]]]

    h = _handoffs(s, end, root, p_inv, inv_of, member)
    crit, total = _critical_by_agent(s, agent_anc, n_agents)
    return Walk(
        n_agents=n_agents, inv_of=inv_of, root=root, agent=s.agent[root], start=s.a[root],
        end=end[root], failed=s.err[root], parent=p_inv, context_tokens=ctx,
        output_tokens=per_inv(s.output_tokens), cost=per_inv(s.cost),
        input_tokens=per_inv(s.input_tokens),
        llm_calls=np.bincount(mi, weights=s.llm[member], minlength=m).astype(np.int64),
        spans=np.bincount(mi, minlength=m).astype(np.int64),
        error_spans=np.bincount(mi, weights=s.err[member], minlength=m).astype(np.int64),
        h_kind=h[0], h_src=h[1], h_dst=h[2], h_latency_us=h[3], h_text_chars=h[4],
        critical_us=crit, critical_total_us=total,
    )


def _handoffs(
    s: Spans, end: I64, root: I64, p_inv: I64, inv_of: I64, member: I64
) -> tuple[I64, I64, I64, I64, F64]:
    """(kind, sender, receiver, latency µs, text chars) of every handoff."""
    m = root.size
    r_start, r_end = s.a[root], end[root]
    # -- call: P -> C, latency from P's last step ended at or before C's start.
    child = np.flatnonzero(p_inv >= 0)
    par = p_inv[child]
    # P's steps: its own spans but its first, and its child invocations' first spans.
    own = member[root[inv_of[member]] != member]
    ev_inv = np.concatenate([inv_of[own], par])
    ev_row = np.concatenate([own, root[child]])
    ev_rel = np.clip(end[ev_row] - r_start[ev_inv], 0, _REL_MAX)
    ev_key = (ev_inv << _REL_BITS) | ev_rel
    o = np.argsort(ev_key, kind="stable")
    ev_key, ev_row = ev_key[o], ev_row[o]
    q_rel = np.clip(r_start[child] - r_start[par], 0, _REL_MAX)
    pos = np.searchsorted(ev_key, (par << _REL_BITS) | q_rel, side="right") - 1
    found = pos >= 0
    found[found] = (ev_key[pos[found]] >> _REL_BITS) == par[found]
    last_end = np.where(found, r_start[par] + (ev_key[np.maximum(pos, 0)] & _REL_MAX), r_start[par])
    call_lat = np.maximum(r_start[child] - last_end, 0)
    call_chars = np.where(found, s.text_chars[ev_row[np.maximum(pos, 0)]], np.nan)
    # -- sequence: siblings by (group, end, start, key); pred ended last before.
    group_raw = np.where(p_inv >= 0, p_inv.astype(np.uint64), s.trace[root] | np.uint64(1 << 63))
    o = np.lexsort((s.k[root], r_start, r_end, group_raw))
    g_sorted = group_raw[o]
    new = np.ones(m, np.bool_)
    new[1:] = g_sorted[1:] != g_sorted[:-1]
    gid: I64 = np.cumsum(new) - 1
    g_first: I64 = np.flatnonzero(new)
    base = np.minimum.reduceat(r_start[o], g_first)[gid] if m else np.empty(0, np.int64)
    e_key = (gid << _REL_BITS) | np.clip(r_end[o] - base, 0, _REL_MAX)
    s_key = (gid << _REL_BITS) | np.clip(r_start[o] - base, 0, _REL_MAX)
    below = np.searchsorted(e_key, s_key, side="right")
    pred = np.minimum(below, np.arange(m)) - 1
    ok = pred >= g_first[gid] if m else np.empty(0, bool)
    src, dst = o[pred[ok]], o[ok]
    seq_lat = np.maximum(r_start[dst] - r_end[src], 0)
    seq_chars = s.text_chars[root[src]]
    kind = np.concatenate([np.zeros(child.size, np.int64), np.ones(dst.size, np.int64)])
    return (kind, np.concatenate([par, src]), np.concatenate([child, dst]),
            np.concatenate([call_lat, seq_lat]).astype(np.int64),
            np.concatenate([call_chars, seq_chars]))


def _critical_by_agent(s: Spans, agent_anc: I64, n_agents: int) -> tuple[F64, int]:
    """Each agent's critical-path self time (µs; the last code: no agent), and the total."""
    acc = _critical.PathTotals(op_hashes=np.zeros(n_agents + 1, np.uint64))
    code: I64 = np.where(agent_anc >= 0, s.agent[np.maximum(agent_anc, 0)], n_agents)
    _critical.walk(s.k, s.pk, s.a, s.d, code, s.err, acc)
    return acc.critical_us, acc.total_us
