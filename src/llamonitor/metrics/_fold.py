"""Folding a histogram's buffered observations: vectorized, off the caller's thread."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llamonitor.metrics import _sketch
from llamonitor.metrics._instruments import DistributionChild


@dataclass
class Interval:
    """What one child observed since the worker last took it."""

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    nan_dropped: int = 0
    sketch: Any = field(default=None)


def fold_into(child: DistributionChild, values: list[float]) -> None:
    """Add ``values`` to the child's totals, bucket counts and interval."""
    if not values:
        return
    arr = np.asarray(values, dtype=np.float64)
    nan = np.isnan(arr)
    n_nan = int(nan.sum())
    if n_nan:
        arr = arr[~nan]
    bounds = child.buckets
    with child.fold_lock:
        iv = child.interval
        if iv is None:
            iv = child.interval = Interval(sketch=_sketch.new_sketch())
        iv.nan_dropped += n_nan
        child.nan_dropped += n_nan
        if arr.size == 0:
            return
        total = float(arr.sum())
        iv.count += int(arr.size)
        iv.sum += total
        iv.min = min(iv.min, float(arr.min()))
        iv.max = max(iv.max, float(arr.max()))
        _sketch.add_values(iv.sketch, arr)
        child.total_count += int(arr.size)
        child.total_sum += total
        if bounds:
            # bucket i counts values <= bounds[i] (not cumulative here)
            idx = np.searchsorted(np.asarray(bounds), arr, side="left")
            counts = np.bincount(idx, minlength=len(bounds))[: len(bounds)]
            bc = child.bucket_counts
            for i, c in enumerate(counts.tolist()):
                if c:
                    bc[i] += c


def take(child: DistributionChild) -> Interval | None:
    """Fold what is buffered, then take (and reset) the child's interval."""
    fold_into(child, child.swap())
    with child.fold_lock:
        iv: Interval | None = child.interval
        child.interval = None
    return iv
