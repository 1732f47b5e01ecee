"""One trace as a tree: the spans' parents, a depth-first order (children by
start time), self times, subtree rollups, the critical path and truncation.

Everything is vectorised with numpy over the trace's columns, apart from two
plain O(n) passes (the depth-first order and the subtree sizes). The
critical path is :mod:`llamonitor.analysis._critical`'s (the reports'
definition): each span is given an operation code of its own, so the
per-operation figures it adds up are per span.

Parents: a span whose ``parent_span_id`` is missing from the trace (or is its
own id) is a root; a cycle of parents (corrupt data) is cut where the walk up
from its earliest span comes back to itself, and that span becomes a root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.analysis import _critical

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

COLUMNS = (
    "span_id", "parent_span_id", "session_id", "operation_name", "operation_type", "duration_ms",
    "error", "error_type", "model", "provider", "agent_name", "input_tokens", "output_tokens",
    "total_tokens", "cost_usd",
)
"""The columns the tree reads (plus the start, as ``ts_us``)."""

SQL = (
    "SELECT " + ", ".join(c for c in COLUMNS if c != "error")
    + ', coalesce(error, false) AS error, epoch_us("timestamp") AS ts_us '
    'FROM {rel} WHERE trace_id = ? ORDER BY "timestamp", span_id'
)
"""A trace's spans in start order (ties by span id): the order of siblings."""


def _floats(table: pa.Table, name: str) -> F64:
    out: F64 = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    return out


def _ints(table: pa.Table, name: str) -> tuple[I64, npt.NDArray[np.bool_]]:
    col = table.column(name)
    known = col.is_valid().to_numpy(zero_copy_only=False)
    values: I64 = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, known


def parents(span_ids: pa.ChunkedArray, parent_ids: pa.ChunkedArray) -> I64:
    """Each span's parent row (-1 for a root): missing parents, self-parents and
    one span of each cycle are roots."""
    n = len(span_ids)
    found = pc.index_in(parent_ids, value_set=span_ids)
    parent: I64 = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    parent[parent == np.arange(n)] = -1
    # Pointer jumping: after ceil(log2 n) rounds every span points at its root,
    # unless it is on (or under) a cycle.
    anc: I64 = np.where(parent < 0, np.arange(n), parent)
    for _ in range(max(1, n.bit_length())):
        nxt = anc[anc]
        if np.array_equal(nxt, anc):
            break
        anc = nxt
    stuck = np.flatnonzero(parent[anc] >= 0)
    if stuck.size:
        _cut_cycles(parent, stuck)
    return parent


def _cut_cycles(parent: I64, stuck: I64) -> None:
    """Make one span of each cycle a root (in place); O(spans under cycles)."""
    done: set[int] = set()
    for first in stuck.tolist():
        path: list[int] = []
        on_path: set[int] = set()
        node = first
        while node >= 0 and node not in done:
            if node in on_path:
                parent[node] = -1  # the walk came back: cut the cycle here
                break
            path.append(node)
            on_path.add(node)
            node = int(parent[node])
        done.update(path)


@dataclass
class Tree:
    """A trace's spans (rows of ``table``) as a forest."""

    table: pa.Table
    parent: I64
    start_us: I64
    dur_us: I64
    kids: list[int]
    """Rows grouped by parent (roots first), each group in start order."""
    offsets: list[int]
    """Group ``p + 1`` (the children of row ``p``; group 0: the roots) is
    ``kids[offsets[p + 1]:offsets[p + 2]]``."""

    @classmethod
    def of(cls, table: pa.Table) -> Tree:
        parent = parents(table.column("span_id"), table.column("parent_span_id"))
        start_us = table.column("ts_us").to_numpy(zero_copy_only=False).astype(np.int64)
        dur = np.nan_to_num(_floats(table, "duration_ms"), nan=0.0, posinf=0.0, neginf=0.0)
        dur_us: I64 = np.maximum(np.rint(dur * 1000.0), 0).astype(np.int64)
        by_parent = np.argsort(parent, kind="stable")  # rows are in start order already
        counts = np.bincount(parent + 1, minlength=len(table) + 1)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(table, parent, start_us, dur_us, by_parent.tolist(), offsets.tolist())

    @property
    def n(self) -> int:
        return len(self.table)

    def child_count(self) -> I64:
        out: I64 = np.diff(np.asarray(self.offsets, np.int64))[1:].astype(np.int64)
        return out

    def preorder(self, top: list[int]) -> tuple[list[int], list[int]]:
        """The rows under ``top`` depth first (children by start), and each one's depth."""
        kids, off = self.kids, self.offsets
        depth = [0] * self.n
        order: list[int] = []
        stack = top[::-1]
        while stack:
            v = stack.pop()
            order.append(v)
            a, b = off[v + 1], off[v + 2]
            if a != b:
                d = depth[v] + 1
                children = kids[a:b]
                for c in children:
                    depth[c] = d
                stack.extend(children[::-1])
        return order, [depth[v] for v in order]

    def roots(self) -> list[int]:
        return self.kids[: self.offsets[1]]

    def depth_of(self, row: int) -> int:
        d, p = 0, int(self.parent[row])
        while p >= 0:
            d, p = d + 1, int(self.parent[p])
        return d

    def self_us(self) -> I64:
        """Duration minus the union of the children's intervals, clipped to the span."""
        n = self.n
        ch: I64 = np.asarray(self.kids[self.offsets[1]:], np.int64)  # every non-root, by parent
        out: I64 = self.dur_us.copy()
        if ch.size == 0:
            return out
        par = self.parent[ch]
        p_lo, p_hi = self.start_us[par], self.start_us[par] + self.dur_us[par]
        lo = np.clip(self.start_us[ch], p_lo, p_hi) - p_lo
        hi = np.clip(self.start_us[ch] + self.dur_us[ch], p_lo, p_hi) - p_lo
        hi = np.maximum(hi, lo)
        # Children are grouped by parent and by start within a group: a running
        # maximum of the ends, offset per group so that it restarts at each parent.
        new = np.ones(ch.size, np.bool_)
        new[1:] = par[1:] != par[:-1]
        gid = np.cumsum(new) - 1
        width = int(hi.max()) + 1
        if width * (int(gid[-1]) + 2) < 2**62:
            run = np.maximum.accumulate(gid * width + hi) - gid * width
            prev = np.concatenate([[0], run[:-1]])
            prev[new] = 0
        else:  # pragma: no cover - a trace spanning centuries
            prev = np.zeros(ch.size, np.int64)
            best = 0
            for i in range(ch.size):
                best = 0 if new[i] else best
                prev[i] = best
                best = max(best, int(hi[i]))
        covered = np.maximum(hi - np.maximum(lo, prev), 0)
        out -= np.bincount(par, weights=covered, minlength=n).astype(np.int64)
        return np.maximum(out, 0)

    def critical(self) -> npt.NDArray[np.bool_]:
        """Whether each span is on the critical path of its root (analysis' definition)."""
        n = self.n
        keys = np.arange(1, n + 1, dtype=np.uint64)
        pk = np.where(self.parent >= 0, self.parent + 1, 0).astype(np.uint64)
        hit: list[I64] = []
        acc = _critical.PathTotals(
            op_hashes=np.zeros(n, np.uint64), self_times=lambda ops, _us: hit.append(ops)
        )
        err = self.table.column("error").to_numpy(zero_copy_only=False).astype(np.bool_)
        _critical.walk(keys, pk, self.start_us, self.dur_us, np.arange(n, dtype=np.int64),
                       err, acc)
        on = np.zeros(n, np.bool_)
        parent = self.parent.tolist()
        for rows in hit:  # a span with self time on the path, and its ancestors
            for r in rows.tolist():
                while r >= 0 and not on[r]:
                    on[r] = True
                    r = parent[r]
        return on


def rollups(tree: Tree, order: list[int]) -> dict[str, tuple[Any, Any]]:
    """Per row of ``order`` (depth first), sums over its subtree, from prefix sums:
    name -> (values, known: whether any span of the subtree had one)."""
    parent = tree.parent.tolist()
    size = [1] * tree.n
    for v in reversed(order):
        p = parent[v]
        if p >= 0:
            size[p] += size[v]
    idx = np.asarray(order, np.int64)
    pos = np.arange(idx.size)
    end = pos + np.asarray(size, np.int64)[idx]

    def window(values: Any) -> Any:
        cum = np.concatenate([[0], np.cumsum(values[idx])])
        return cum[end] - cum[pos]

    t = tree.table
    every = np.ones(idx.size, np.bool_)
    err = t.column("error").to_numpy(zero_copy_only=False).astype(np.int64)
    out: dict[str, tuple[Any, Any]] = {"spans": (end - pos, every), "errors": (window(err), every)}
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        values, known = _ints(t, name)
        out[name] = (window(values), window(known.astype(np.int64)) > 0)
    cost = _floats(t, "cost_usd")
    known_cost = np.isfinite(cost)
    out["cost_usd"] = (np.round(window(np.where(known_cost, cost, 0.0)), 12),
                       window(known_cost.astype(np.int64)) > 0)
    return out


def keep(order: list[int], depth: list[int], max_spans: int) -> list[int]:
    """Positions of ``order`` to show: all, or the ``max_spans`` shallowest
    (depth first within a depth), so every shown span's parent is shown."""
    if len(order) <= max_spans:
        return list(range(len(order)))
    by_depth = np.argsort(np.asarray(depth, np.int64), kind="stable")[:max_spans]
    kept: list[int] = np.sort(by_depth).tolist()
    return kept


def finite(value: Any) -> Any:
    """``None`` for NaN and the infinities (JSON has neither)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
