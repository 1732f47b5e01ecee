"""Exact percentiles of durations per group, in bounded memory.

DuckDB's exact ``quantile_cont`` keeps every value of every group in memory
(8 bytes a span for each breakdown). Here the durations are read in chunks,
twice:

1. every chunk adds to a histogram per group over :data:`BINS` fixed,
   log-spaced bins (about 1.1% wide); from the counts, the bin that holds the
   rank each percentile needs (and the rank within that bin) is known;
2. every chunk gives up its values that fall in those few bins, and the
   percentile is read from them exactly.

Memory: the histograms (groups x 2,440 counts) and the values of the target
bins (a few percent of a group's spans at most, unless nearly all of them
lie within ~1% of each other). Percentiles interpolate linearly between the
two closest ranks, like ``quantile_cont`` and ``numpy.percentile``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

QUANTILES = (0.5, 0.95, 0.99)

# Bins: the top bits of the IEEE 754 representation, which orders positive
# doubles like their values: the exponent and 6 bits of mantissa, i.e. 64
# bins per doubling (each about 1.1% wide), from 1 µs to ~3 days; bin 0 holds
# zero, negative and smaller values, the last bin larger ones.
_SHIFT = 46
_LOW = int(np.float64(1e-3).view(np.uint64)) >> _SHIFT
_HIGH = int(np.float64(3e8).view(np.uint64)) >> _SHIFT
BINS = _HIGH - _LOW + 2

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def bins(values: F64) -> I64:
    """The bin of each duration (ms); bins are ordered like the values."""
    top = (values.view(np.uint64) >> np.uint64(_SHIFT)).astype(np.int64) - (_LOW - 1)
    out: I64 = np.where(values > 0, np.clip(top, 0, BINS - 1), 0)
    return out


@dataclass
class Percentiles:
    """Percentiles of one breakdown (``groups`` groups, codes 0..groups-1)."""

    groups: int
    counts: I64 = field(init=False)
    _targets: npt.NDArray[np.bool_] | None = field(default=None, init=False)
    _values: list[F64] = field(default_factory=list, init=False)
    _keys: list[I64] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.groups * BINS, np.int64)

    def count(self, codes: I64, binned: I64) -> None:
        """Pass 1: add a chunk (group codes and bins of its durations).

        A code past the last group adds groups (they are discovered as the
        chunks go by).
        """
        if codes.size and int(codes.max()) >= self.groups:
            grown = int(codes.max()) + 1
            self.counts = np.concatenate(
                [self.counts, np.zeros((grown - self.groups) * BINS, np.int64)]
            )
            self.groups = grown
        added = np.bincount(codes * BINS + binned)
        self.counts[: added.size] += added

    def _ranks(self) -> tuple[I64, I64, F64]:
        """Per (group, quantile): the two ranks to interpolate and the fraction."""
        n = self.counts.reshape(self.groups, BINS).sum(axis=1)
        pos = (np.maximum(n, 1) - 1)[:, None] * np.array(QUANTILES)[None, :]
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n, 1)[:, None] - 1)
        return lo, hi, pos - lo

    def _bins_of(self, ranks: I64) -> I64:
        """The bin holding each (group, quantile) rank: bins whose running count <= rank."""
        running = np.cumsum(self.counts.reshape(self.groups, BINS), axis=1)
        found: I64 = (running[:, None, :] <= ranks[:, :, None]).sum(axis=2)
        return np.minimum(found, BINS - 1)

    def target(self) -> None:
        """Between the passes: mark the bins that hold a needed rank."""
        lo, hi, _ = self._ranks()
        targets = np.zeros((self.groups, BINS), np.bool_)
        rows = np.arange(self.groups)[:, None]
        for ranks in (lo, hi):
            targets[rows, self._bins_of(ranks)] = True
        self._targets = targets.reshape(-1)

    def collect(self, codes: I64, binned: I64, values: F64) -> None:
        """Pass 2: keep a chunk's values that fall in a target bin."""
        if self._targets is None:
            raise RuntimeError("target() comes between count() and collect()")
        keys = codes * BINS + binned
        keep = self._targets[keys]
        if keep.any():
            self._keys.append(keys[keep])
            self._values.append(values[keep])

    def result(self) -> F64:
        """``(groups, len(QUANTILES))`` percentiles (0 for an empty group)."""
        out = np.zeros((self.groups, len(QUANTILES)))
        if not self._keys:
            return out
        keys, values = np.concatenate(self._keys), np.concatenate(self._values)
        order = np.lexsort((values, keys))
        keys, values = keys[order], values[order]
        table = self.counts.reshape(self.groups, BINS)
        below = np.cumsum(table, axis=1) - table  # values in the bins below each bin
        rows = np.arange(self.groups)[:, None]
        lo, hi, frac = self._ranks()

        def value(ranks: I64) -> F64:
            b = self._bins_of(ranks)
            start = np.searchsorted(keys, rows * BINS + b)
            at = np.clip(start + ranks - below[rows, b], 0, values.size - 1)
            picked: F64 = values[at]
            return picked

        a, b = value(lo), value(hi)
        out = a + (b - a) * frac
        out[table.sum(axis=1) == 0] = 0.0
        return out
