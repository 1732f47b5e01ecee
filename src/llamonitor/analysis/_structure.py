"""The structure pass: one streamed read of every span, in bounded memory.

It computes what needs more than a ``GROUP BY``: the critical path and
retries (per trace, :mod:`._critical`) and exact percentiles
(:mod:`._percentiles`). DuckDB streams a compact projection (no strings but
64-bit hashes, about 60 bytes a span); each record batch is split by
partition of traces (hash of the trace id) and appended to that partition's
file in a temporary directory, while the percentiles count it. Then each
partition is read back once and walked on its own, and gives up its
durations that the percentiles need. The memory used is that of a batch and
a partition (:data:`PARTITION_SPANS`), whatever the number of spans; the
files live in the page cache and are deleted as they are read. A single
partition stays in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from llamonitor.analysis import _critical
from llamonitor.analysis._percentiles import Percentiles, bins

PARTITION_SPANS = 1 << 17
"""Spans per partition of traces (about 15 MB of working memory each)."""

MAX_BUCKETS = 1000
"""Most trend buckets a report has (each costs 16 KB of percentile counts)."""

# The columns kept per span, in file order: (name, dtype).
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("k", "<u8"), ("pk", "<u8"), ("a", "<i8"), ("dur", "<f8"),
    ("op", "<i4"), ("model", "<i4"), ("agent", "<i4"), ("err", "|b1"),
)

Columns = dict[str, npt.NDArray[np.generic]]

_DIRECT_MASK = (1 << 16) - 1
"""The low bits of a hash that index :class:`Codes`' direct table (256 KB)."""


class Codes:
    """64-bit hash -> a dense code, in order of first appearance.

    A column holds few distinct hashes (operations, models, agents): each batch
    is looked up in a table indexed by the low 16 bits of the known hashes and
    checked against them; a batch with a hash not seen yet (or known hashes
    sharing their low bits) is looked up in the sorted known ones, and only
    hashes not seen yet get codes. (Not ``pyarrow.compute``'s dictionary encoding: importing it
    costs more than encoding every batch this way.)
    """

    def __init__(self) -> None:
        self.hashes: list[int] = []
        self._sorted = np.empty(0, np.uint64)  # the known hashes, sorted
        self._code_of = np.empty(0, np.int32)  # the code of each of them
        # A direct table on the low bits of the known hashes (when they differ
        # there): one gather and one check, instead of a binary search.
        self._direct: npt.NDArray[np.int32] | None = None
        self._by_code = np.empty(0, np.uint64)  # the hash of each code

    def encode(self, column: pa.Array) -> npt.NDArray[np.int32]:
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.uint64)
        if self._direct is not None:
            codes: npt.NDArray[np.int32] = self._direct[values & np.uint64(_DIRECT_MASK)]
            if bool((self._by_code[codes] == values).all()):
                return codes
        known = len(self.hashes)
        out = self._search(values)
        if len(self.hashes) != known or self._direct is None:
            self._index()
        return out

    def _index(self) -> None:
        if not self.hashes:
            return
        low = self._sorted & np.uint64(_DIRECT_MASK)
        self._by_code = np.array(self.hashes, dtype=np.uint64)
        if _distinct(low).size != low.size:
            self._direct = None  # two known hashes share their low bits: search
            return
        direct = np.zeros(_DIRECT_MASK + 1, np.int32)  # unknown low bits: code 0, checked
        direct[low.astype(np.int64)] = self._code_of
        self._direct = direct

    def _search(self, values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        pos = np.minimum(np.searchsorted(self._sorted, values), max(0, self._sorted.size - 1))
        miss = (self._sorted[pos] != values) if self._sorted.size else np.ones(values.size, bool)
        if miss.any():
            new = _first_seen(values[miss])
            codes = np.arange(len(self.hashes), len(self.hashes) + new.size, dtype=np.int32)
            self.hashes.extend(int(h) for h in new)
            merged = np.concatenate([self._sorted, new])
            order = np.argsort(merged, kind="stable")
            self._sorted = merged[order]
            self._code_of = np.concatenate([self._code_of, codes])[order]
            pos = np.searchsorted(self._sorted, values)
        out: npt.NDArray[np.int32] = self._code_of[pos]
        return out


def _starts(ordered: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
    """Where each run of equal values of ``ordered`` (sorted) starts."""
    new = np.ones(ordered.size, np.bool_)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return np.flatnonzero(new)


def _first_seen(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The distinct values, in order of first appearance."""
    n = values.size
    low = (values & np.uint64(_DIRECT_MASK)).astype(np.intp)
    first = np.full(_DIRECT_MASK + 1, n, np.intp)
    np.minimum.at(first, low, np.arange(n))  # the first row of each low 16 bits
    rows = first[first < n]
    table = np.zeros(_DIRECT_MASK + 1, np.uint64)
    table[low[rows]] = values[rows]
    if bool((table[low] == values).all()):  # no two distinct values share low bits
        out: npt.NDArray[np.uint64] = values[np.sort(rows)]
        return out
    order = np.argsort(values, kind="stable")
    return values[np.sort(order[_starts(values[order])])]


def _distinct(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The distinct values, sorted. (Not ``np.unique``: in numpy 2 it imports
    ``numpy.ma``, 10 ms.)"""
    ordered = np.sort(values)
    out: npt.NDArray[np.uint64] = ordered[_starts(ordered)]
    return out


@dataclass
class Structure:
    """What the pass found: path and retry totals, percentiles per breakdown.

    ``percentiles[name]`` is a ``(groups, 3)`` array (p50, p95, p99) indexed
    by the codes of ``codes[name]`` (for ``bucket``: bucket - ``first_bucket``).
    """

    path: _critical.PathTotals
    percentiles: dict[str, npt.NDArray[np.float64]]
    codes: dict[str, Codes]
    first_bucket: int
    excess_us: npt.NDArray[np.float64]
    """Per operation code: critical-path time beyond the operation's median duration."""


def _columns(batch: pa.RecordBatch, codes: dict[str, Codes]) -> Columns:
    out: Columns = {
        "k": batch.column("k").to_numpy(),
        "pk": batch.column("pk").to_numpy(),
        "a": batch.column("a").to_numpy(),
        "dur": batch.column("dur").to_numpy(),
        "err": batch.column("err").to_numpy(zero_copy_only=False),
    }
    for name in ("op", "model", "agent"):
        out[name] = codes[name].encode(batch.column(name))
    return out


class _Spill:
    """One file per partition; each batch appends a block: row count, then the columns."""

    def __init__(self, directory: Path, partitions: int) -> None:
        self.paths = [directory / f"part-{i}.bin" for i in range(partitions)]
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 - closed in close()

    def append(self, part: npt.NDArray[np.int16], cols: Columns) -> None:
        order = np.argsort(part, kind="stable")  # 16-bit: a radix sort
        bounds = np.searchsorted(part[order], np.arange(len(self.paths) + 1))
        # One gather per column puts the batch in partition order; each
        # partition's rows are then a contiguous slice, written without a copy.
        ordered = [cols[name][order].astype(dtype, copy=False) for name, dtype in _COLUMNS]
        for i in np.flatnonzero(np.diff(bounds)):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            f = self._files[i]
            f.write(np.int64(hi - lo).tobytes())
            for column in ordered:
                f.write(column[lo:hi].data)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def read(self, i: int) -> Columns:
        data = self.paths[i].read_bytes()
        parts: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name, _ in _COLUMNS}
        at = 0
        while at < len(data):
            n = int(np.frombuffer(data, np.int64, 1, at)[0])
            at += 8
            for name, dtype in _COLUMNS:
                arr = np.frombuffer(data, np.dtype(dtype), n, at)
                parts[name].append(arr)
                at += arr.nbytes
        return {name: np.concatenate(chunks) if chunks else np.empty(0, np.dtype(dtype))
                for (name, dtype), chunks in zip(_COLUMNS, parts.values(), strict=True)}


def _group_codes(
    cols: Columns, width_us: int, first_bucket: int
) -> dict[str, npt.NDArray[np.int64]]:
    a = cols["a"].astype(np.int64, copy=False)
    return {
        "total": np.zeros(a.size, np.int64),
        "operation": cols["op"].astype(np.int64),
        "model": cols["model"].astype(np.int64),
        "agent": cols["agent"].astype(np.int64),
        "bucket": np.floor_divide(a, width_us) - first_bucket,
    }


def run(
    batches: Iterable[pa.RecordBatch],
    partitions: int,
    *,
    bucket_us: int,
    first_us: int,
    last_us: int,
) -> Structure:
    """Walk the streamed spans (columns of ``structure_sql``) partition by partition.

    Args:
        batches: the record batches, consumed once.
        partitions: how many partitions ``part`` ranges over.
        bucket_us: the trend bucket's width; ``first_us``/``last_us``: the
            first and last span start (µs since the epoch), for the buckets.

    Raises:
        ValueError: more than :data:`MAX_BUCKETS` trend buckets.
    """
    first_bucket = first_us // bucket_us
    n_buckets = last_us // bucket_us - first_bucket + 1
    if n_buckets > MAX_BUCKETS:
        raise ValueError(
            f"bucket: {n_buckets:,} buckets in this time range, at most {MAX_BUCKETS:,}: "
            "choose a coarser bucket (hour, day) or a shorter range"
        )
    codes = {name: Codes() for name in ("op", "model", "agent")}
    # Groups of op, model and agent are discovered as the spans go by: their
    # percentiles grow (see Percentiles.count).
    sizes = {"total": 1, "operation": 1, "model": 1, "agent": 1, "bucket": n_buckets}
    percentiles = {name: Percentiles(size) for name, size in sizes.items()}
    declared = 0
    with tempfile.TemporaryDirectory(prefix="llamonitor-analysis-") as tmp:
        spill = _Spill(Path(tmp), partitions) if partitions > 1 else None
        kept: list[Columns] = []
        try:
            for batch in batches:
                cols = _columns(batch, codes)
                declared += batch.column("declared_root").true_count
                # The percentiles' first pass: count per (group, bin) as the spans go by.
                binned = bins(cols["dur"].astype(np.float64, copy=False))
                for name, group in _group_codes(cols, bucket_us, first_bucket).items():
                    percentiles[name].count(group, binned)
                if spill is None:
                    kept.append(cols)
                else:
                    spill.append(batch.column("part").to_numpy(), cols)
        finally:
            if spill is not None:
                spill.close()

        def chunks() -> Iterator[Columns]:
            if spill is None:
                if kept:
                    yield {name: np.concatenate([c[name] for c in kept]) for name, _ in _COLUMNS}
                return
            for i in range(partitions):
                yield spill.read(i)
                spill.paths[i].unlink()

        # The self times on the paths wait in files (or memory) for the medians.
        self_times: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self_path = Path(tmp) / "self.bin"

        def keep_self(ops: npt.NDArray[np.int64], us: npt.NDArray[np.int64]) -> None:
            if spill is None:
                self_times.append((ops, us))
                return
            with open(self_path, "ab") as f:
                f.write(np.int64(ops.size).tobytes())
                f.write(np.ascontiguousarray(ops, dtype=np.int64).data)
                f.write(np.ascontiguousarray(us, dtype=np.int64).data)

        acc = _critical.PathTotals(
            op_hashes=np.array(codes["op"].hashes, dtype=np.uint64), self_times=keep_self
        )
        acc.declared_roots = declared
        for p in percentiles.values():
            p.target()
        for cols in chunks():  # the walk, and the percentiles' second pass
            acc_walk(cols, acc)
            dur = cols["dur"].astype(np.float64, copy=False)
            binned = bins(dur)
            for name, group in _group_codes(cols, bucket_us, first_bucket).items():
                percentiles[name].collect(group, binned, dur)
        results = {name: p.result() for name, p in percentiles.items()}
        p50_us = results["operation"][:, 0] * 1000
        excess = np.zeros(acc.n_ops)
        for ops, us in _read_self(self_path) if spill is not None else self_times:
            excess += _critical.excess_us(ops, us, p50_us, acc.n_ops)
    return Structure(
        path=acc, percentiles=results, codes=codes, first_bucket=first_bucket, excess_us=excess
    )


def _read_self(
    path: Path,
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """The (operation codes, self times) blocks written during the walk, one at a time."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        while head := f.read(8):
            n = int(np.frombuffer(head, np.int64)[0])
            ops = np.frombuffer(f.read(8 * n), np.int64)
            us = np.frombuffer(f.read(8 * n), np.int64)
            yield ops, us


def acc_walk(cols: Columns, acc: _critical.PathTotals) -> None:
    """The critical path and retries of one partition's spans."""
    dur = cols["dur"].astype(np.float64, copy=False)
    _critical.walk(
        np.ascontiguousarray(cols["k"], dtype=np.uint64),
        np.ascontiguousarray(cols["pk"], dtype=np.uint64),
        np.ascontiguousarray(cols["a"], dtype=np.int64),
        np.rint(np.nan_to_num(dur) * 1000).astype(np.int64),
        cols["op"].astype(np.int64),
        np.ascontiguousarray(cols["err"], dtype=np.bool_),
        acc,
    )
