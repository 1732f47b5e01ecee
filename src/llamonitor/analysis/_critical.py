"""The critical path of traces, and retries, vectorized with numpy.

**Critical path** (Jaeger's definition). Each span is an interval
``[start, end)`` (``end = start + duration``), first clipped to its
ancestors' intervals (a child that starts before or ends after its parent, as
clock skew between processes can make it, counts only inside the parent; a
child entirely outside is dropped). The critical path of a span ``P`` is
built walking back in time from ``P``'s end: at the current point ``t``
(initially ``P``'s end) take the child of ``P`` that ended last at or before
``t`` (on a tie the one that started first, then by span key), walk
that child's own critical path, then continue from the child's start; when
no child is left, the rest of the walk down to ``P``'s start is ``P``'s own
time. A span's **critical-path self time** is its time on the path not
covered by its critical children. The self times of a root's subtree add up
to the root's duration exactly, and a child that ran in parallel with another
is counted at most once: only the one that finished last is on the path, the
other only where it alone kept the parent waiting.

Roots are spans without a parent, and spans whose parent is missing from the
scope (lost, sampled out, or outside ``--since``/``--until``): each is the
root of its own subtree, walked separately. Spans on a cycle of parents
(corrupt data) reach no root and are left out.

**Retries**. Spans of the same operation with the same parent span (for root
spans: the same trace) are attempts of one step. An attempt is an *extra
attempt* if it started at or after another attempt had ended (attempts that
overlap in time are a parallel fan-out, not a retry), and it *followed an
error* if one of those that had ended before it started had failed.

**How.** Per span, a 64-bit key (hash of trace id and span id) and its
parent's, start, duration, operation and error; the spans of a partition of
traces (see :mod:`._structure`) are processed together. Parents are found
by sorting the keys; the clip, the root of each span and the path membership
are propagated by pointer jumping (``log2(depth)`` vectorized rounds);
siblings are sorted by end, each one's predecessor on a path (the sibling
that ended last before it started) is a ``searchsorted``, and the paths are
followed from every parent's last-ending child at once. The only Python
loops run ``log2(depth)`` times and the length of the longest chain of
sequential siblings. Two spans whose 64-bit keys collide (odds about
``n**2 / 2**65`` for ``n`` spans in a partition: 5e-10 for 131,072) would
share children; nothing else depends on the keys being unique.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_REL_BITS = 40  # times relative to the parent's start, in microseconds (12.7 days)
_REL_MAX = (1 << _REL_BITS) - 1
_I64_MAX = np.iinfo(np.int64).max


SelfTimes = Callable[[I64, I64], None]
"""Receives each partition's on-path spans: (operation codes, self times in µs)."""


@dataclass
class PathTotals:
    """Sums over every partition, indexed by operation code.

    Codes index ``op_hashes`` (the 64-bit hashes of the operation names).
    ``self_times``, if given, receives the self time of every span on a path
    (to compare with the operations' medians once they are known).
    """

    op_hashes: U64
    self_times: SelfTimes | None = None
    critical_us: F64 = field(init=False)
    on_path: I64 = field(init=False)
    extra_attempts: I64 = field(init=False)
    after_error: I64 = field(init=False)
    roots: int = 0
    declared_roots: int = 0
    spans: int = 0
    total_us: int = 0

    def __post_init__(self) -> None:
        size = self.op_hashes.size
        self.critical_us = np.zeros(size)
        self.on_path = np.zeros(size, np.int64)
        self.extra_attempts = np.zeros(size, np.int64)
        self.after_error = np.zeros(size, np.int64)

    @property
    def n_ops(self) -> int:
        return int(self.op_hashes.size)


def excess_us(codes: I64, self_us: I64, p50_us: F64, n_ops: int) -> F64:
    """Per operation code: the self time beyond ``p50_us[code]``."""
    over = np.maximum(self_us - p50_us[codes], 0.0)
    out: F64 = np.bincount(codes, weights=over, minlength=n_ops).astype(np.float64)
    return out


def _count(codes: I64, size: int, weights: Any = None) -> Any:
    return np.bincount(codes, weights=weights, minlength=size)


def _sort_keys(keys: U64) -> tuple[I64, U64]:
    """A stable sort of 64-bit keys: (order, sorted keys).

    The row number is packed into the low bits, so that ``ndarray.sort`` (SIMD)
    does the work of ``argsort``. Keys equal in their high bits may come out
    of order; that is checked, and then the exact ``argsort`` is used.
    """
    n = keys.size
    bits = max(1, (n - 1).bit_length())
    if bits <= 32:
        low = np.uint64((1 << bits) - 1)
        packed = (keys & ~low) | np.arange(n, dtype=np.uint64)
        packed.sort()
        order: I64 = (packed & low).astype(np.int64)
        ordered = keys[order]
        if n < 2 or bool((ordered[1:] >= ordered[:-1]).all()):
            return order, ordered
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def _parents(k: U64, pk: U64) -> tuple[I64, I64, I64]:
    """Each span's parent row (-1: none in the partition), the rows sorted by
    ``pk``, and the run number of each of these among equal ``pk``."""
    n = k.size
    by_k, ks = _sort_keys(k)
    by_pk, pks = _sort_keys(pk)
    pk_gid, starts = _runs(pks)
    # Siblings share a parent key: each distinct key is looked up once.
    pos = np.searchsorted(ks, pks[starts])  # sorted queries: a merge, not random probes
    np.minimum(pos, n - 1, out=pos)
    hit = ks[pos] == pks[starts]
    found = hit[pk_gid]
    parent: I64 = np.full(n, -1, np.int64)
    parent[by_pk[found]] = by_k[pos[pk_gid[found]]]
    parent[parent == np.arange(n)] = -1  # a span that is its own parent is a root
    return parent, by_pk, pk_gid


def _clip(parent: I64, lo: I64, hi: I64) -> tuple[B, B]:
    """Clip ``lo``/``hi`` in place to every ancestor's; returns (is root, reaches a root)."""
    n = parent.size
    root = parent < 0
    anc: I64 = np.where(root, np.arange(n), parent)
    for _ in range(n.bit_length() + 1):
        np.maximum(lo, lo[anc], out=lo)
        np.minimum(hi, hi[anc], out=hi)
        nxt = anc[anc]
        if np.array_equal(nxt, anc):
            break
        anc = nxt
    return root, root[anc]


def _and_ancestors(parent: I64, root: B, ok: B) -> None:
    """``ok[i] &= ok[every ancestor of i]``, in place (pointer jumping)."""
    n = parent.size
    anc: I64 = np.where(root, np.arange(n), parent)
    for _ in range(n.bit_length() + 1):
        ok &= ok[anc]
        nxt = anc[anc]
        if np.array_equal(nxt, anc):
            break
        anc = nxt


def _runs(keys: Any) -> tuple[I64, I64]:
    """For sorted ``keys``: each element's run number, and where each run starts."""
    new = np.empty(keys.size, np.bool_)
    if keys.size:
        new[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
    starts: I64 = np.flatnonzero(new)
    gid: I64 = np.cumsum(new) - 1
    return gid, starts


def _critical(
    parent: I64, by_pk: I64, lo: I64, hi: I64, k: U64, op: I64, acc: PathTotals
) -> None:
    n = parent.size
    root, reach = _clip(parent, lo, hi)
    valid = reach & (hi >= lo)
    # Children grouped by parent: the rows sorted by parent key, with a parent here.
    ch: I64 = by_pk[valid[by_pk] & (parent[by_pk] >= 0)]
    par = parent[ch]
    gid, _ = _runs(par)
    plo = lo[par]
    rel_hi = np.minimum(hi[ch] - plo, _REL_MAX)
    rel_lo = np.minimum(lo[ch] - plo, _REL_MAX)
    key = (gid << _REL_BITS) | rel_hi
    order = np.argsort(key, kind="stable")  # nearly sorted already: fast
    key = key[order]
    if ch.size > 1 and bool((key[1:] == key[:-1]).any()):
        # Siblings ending together: the one that started first is the last (taken first).
        order = order[np.lexsort((k[ch[order]], -rel_lo[order], key))]
        key = ((gid << _REL_BITS) | rel_hi)[order]
    ch, gid, rel_lo = ch[order], gid[order], rel_lo[order]
    m = ch.size
    _, starts = _runs(gid)
    # pred: the sibling that ended last at or before this one's start, placed before it.
    below = np.searchsorted(key, (gid << _REL_BITS) | rel_lo, side="right")
    pred = np.minimum(below, np.arange(m)) - 1
    pred[pred < starts[gid]] = -1
    member = np.zeros(m, np.bool_)
    front = np.append(starts[1:], m) - 1 if m else starts  # each parent's last-ending child
    while front.size:
        member[front] = True
        front = pred[front]
        front = front[front >= 0]
    ok = root & valid
    ok[ch[member]] = True
    _and_ancestors(parent, root, ok)
    length = np.where(ok, hi - lo, 0)
    on_path = np.flatnonzero(member)
    kids = ch[on_path]
    keep = ok[kids]
    kids = kids[keep]
    # A parent's children are contiguous (sorted by parent): sum each run.
    covered = np.zeros(n, np.int64)
    if kids.size:
        _, runs = _runs(gid[on_path][keep])
        covered[parent[kids[runs]]] = np.add.reduceat(length[kids], runs)
    self_us: I64 = length - covered
    on = np.flatnonzero(ok & (self_us > 0))
    size = acc.n_ops
    acc.critical_us += _count(op[on], size, self_us[on])
    acc.on_path += _count(op[on], size)
    if acc.self_times is not None:
        acc.self_times(op[on], self_us[on])
    roots = np.flatnonzero(root & valid)
    acc.roots += int(roots.size)
    acc.total_us += int(length[roots].sum())


def _retries(by_pk: I64, gid: I64, a: I64, end: I64, op: I64, err: B, acc: PathTotals) -> None:
    """Extra attempts per operation among siblings (same parent key) of the same operation.

    ``by_pk``: the rows sorted by parent key; ``gid``: their runs of equal parent key.
    """
    key = gid * acc.n_ops + op[by_pk]
    o = np.argsort(key, kind="stable")  # nearly sorted: fast
    order = by_pk[o]
    grp, starts = _runs(key[o])
    if starts.size == order.size:
        return  # every (parent, operation) once: no repeats
    # Only the steps attempted more than once can hold an extra attempt: most
    # are attempted once, so the rest works on a small part of the rows.
    sizes = np.diff(starts, append=order.size)
    repeated = sizes[grp] > 1
    order, grp = order[repeated], grp[repeated]
    grp, starts = _runs(grp)
    s_a, s_end, s_err, s_op = a[order], end[order], err[order], op[order]
    first_end = np.minimum.reduceat(s_end, starts)[grp]
    first_err_end = np.minimum.reduceat(np.where(s_err, s_end, _I64_MAX), starts)[grp]
    # Started after another attempt had ended (b > first_end: not itself the first to end).
    extra = (s_a >= first_end) & (s_end > first_end)
    after = extra & (s_a >= first_err_end) & ((s_end > first_err_end) | ~s_err)
    acc.extra_attempts += _count(s_op[extra], acc.n_ops)
    acc.after_error += _count(s_op[after], acc.n_ops)


def walk(k: U64, pk: U64, a: I64, d: I64, op: I64, err: B, acc: PathTotals) -> None:
    """Add one partition's critical path and retry figures to ``acc``.

    Args:
        k, pk: span and parent keys. a: starts (µs). d: durations (µs).
        op: operation codes (indexes of ``acc.op_hashes``). err: failed.
    """
    if k.size == 0:
        return
    acc.spans += int(k.size)
    end = a + d
    parent, by_pk, pk_gid = _parents(k, pk)
    _retries(by_pk, pk_gid, a, end, op, err, acc)
    _critical(parent, by_pk, a.copy(), end.copy(), k, op, acc)
