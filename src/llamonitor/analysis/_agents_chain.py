"""Chains and loops over the handoff DAG of :mod:`._agents_walk` (definitions there).

The DAG has one node per invocation and at most two edges into each (its
parent's call, its predecessor's sequence), so one pass in topological order
(Kahn's) computes, per invocation, the longest chain ending there and the
agents upstream of it (a bitset: a Python int), and one pass in reverse the
agents reachable downstream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from llamonitor.analysis._agents_walk import MAX_LOOP_PATH, Walk


@dataclass
class Chains:
    """The longest chain (invocations, and the handoff into each but the first),
    the loops by agent path (count, trace hashes), and per handoff whether the
    work came back to its sender."""

    longest: list[int] = field(default_factory=list)
    longest_handoffs: list[int] = field(default_factory=list)
    loops: dict[tuple[int, ...], tuple[int, set[int]]] = field(default_factory=dict)
    returned: list[bool] = field(default_factory=list)


def chains(w: Walk, traces: npt.NDArray[np.uint64]) -> Chains:
    """Longest chain, loops and returns of ``w``; ``traces``: per invocation, a trace hash."""
    m = int(w.root.size)
    src = w.h_src.tolist()
    dst = w.h_dst.tolist()
    agent = w.agent.tolist()
    start = w.start.tolist()
    end = w.end.tolist()
    into: list[list[int]] = [[] for _ in range(m)]
    out: list[list[int]] = [[] for _ in range(m)]
    for h, (u, v) in enumerate(zip(src, dst, strict=True)):
        out[u].append(h)
        into[v].append(h)
    order = _topological(m, into, out, dst)
    bit = [1 << a for a in agent]
    up = list(bit)
    length = [0] * m
    first = list(start)  # the start of the longest chain ending here
    back = [-1] * m
    for v in order:
        for h in into[v]:
            u = src[h]
            up[v] |= up[u]
            n, f = length[u] + 1, first[u]
            if n > length[v] or (n == length[v] and end[v] - f > end[v] - first[v]):
                length[v], first[v], back[v] = n, f, h
    down = [0] * m
    for v in reversed(order):
        for h in out[v]:
            down[v] |= bit[dst[h]] | down[dst[h]]
    result = Chains()
    result.returned = [bool(bit[src[h]] & (bit[dst[h]] | down[dst[h]])) for h in range(len(src))]
    for u, v in zip(src, dst, strict=True):
        if up[u] & bit[v]:
            path = (*(agent[x] for x in _loop_path(u, agent[v], src, into, up, bit)), agent[v])
            count, seen = result.loops.get(path, (0, set()))
            seen.add(int(traces[v]))
            result.loops[path] = (count + 1, seen)
    if m:
        best = max(range(m), key=lambda v: (length[v], end[v] - first[v], -v))
        nodes, hs = [best], []
        while back[nodes[-1]] >= 0:
            hs.append(back[nodes[-1]])
            nodes.append(src[hs[-1]])
        result.longest, result.longest_handoffs = nodes[::-1], hs[::-1]
    return result


def _topological(m: int, into: list[list[int]], out: list[list[int]], dst: list[int]) -> list[int]:
    indegree = [len(x) for x in into]
    ready = deque(v for v in range(m) if indegree[v] == 0)
    order: list[int] = []
    while ready:
        v = ready.popleft()
        order.append(v)
        for h in out[v]:
            t = dst[h]
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    return order  # every edge goes forward in time: no invocation is left out


def _loop_path(
    u: int, target: int, src: list[int], into: list[list[int]], up: list[int], bit: list[int]
) -> list[int]:
    """From the nearest upstream invocation of agent ``target`` down to ``u``."""
    path = [u]
    want = 1 << target
    cur = u
    while bit[cur] != want:
        cur = next(src[h] for h in into[cur] if up[src[h]] & want)
        path.append(cur)
    path.reverse()
    if len(path) > MAX_LOOP_PATH - 1:  # the re-entered agent is added after
        path = [*path[: MAX_LOOP_PATH - 2], path[-1]]
    return path
