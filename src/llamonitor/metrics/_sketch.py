"""The mergeable quantile sketch of histograms and summaries: DataDog's DDSketch.

``ddsketch`` (a maintained package, the reference Python implementation of
Masson et al., VLDB 2019) with relative accuracy :data:`RELATIVE_ACCURACY`:
every quantile it returns is within 1% of the true value of that rank.
Sketches are serialized in ``ddsketch``'s protobuf form (the format the other
DDSketch implementations read), stored in the points' ``sketch`` column, and
merged exactly (bin counts add) by rollups.

Values are added vectorized: the bin of each value is computed with numpy
from the same logarithmic mapping ``DDSketch`` uses, and each bin is added
once with its count (``DDSketch.add(bin value, weight)``), so folding a
million observations costs a few numpy passes, not a million Python calls.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from llamonitor.schema.config import ConfigurationError

RELATIVE_ACCURACY = 0.01

UNREADABLE = [0]
"""Sketches :func:`merge` could not read (and left out)."""

logger = logging.getLogger("llamonitor.metrics")

_mapping: Any = None


def require_sketch() -> None:
    """Raise if ``ddsketch`` (and ``protobuf``, its serialization) is missing.

    Raises:
        ConfigurationError: naming ``pip install 'llamonitor[metrics]'``.
    """
    if (
        importlib.util.find_spec("ddsketch") is None
        or importlib.util.find_spec("google.protobuf") is None
    ):
        raise ConfigurationError(
            "metrics",
            "histograms and summaries keep a DDSketch: pip install 'llamonitor[metrics]'",
        )


def new_sketch() -> Any:
    """An empty DDSketch of :data:`RELATIVE_ACCURACY`."""
    from ddsketch import DDSketch

    return DDSketch(RELATIVE_ACCURACY)


def _log_mapping() -> Any:
    global _mapping
    if _mapping is None:
        from ddsketch.mapping import LogarithmicMapping

        _mapping = LogarithmicMapping(RELATIVE_ACCURACY)
    return _mapping


def add_values(sketch: Any, values: np.ndarray[Any, Any]) -> None:
    """Add every value of ``values`` (finite or infinite, no NaN) to ``sketch``."""
    if values.size == 0:
        return
    mapping = _log_mapping()
    tiny = mapping.min_possible
    pos = values[values > tiny]
    neg = -values[values < -tiny]
    zeros = int(values.size - pos.size - neg.size)
    for part, sign in ((pos, 1.0), (neg, -1.0)):
        if part.size == 0:
            continue
        part = np.minimum(part, mapping.max_possible)  # +-inf: the top bin
        with np.errstate(divide="ignore"):
            keys = np.ceil(np.log2(part) * mapping._multiplier) + mapping._offset
        uniq, counts = np.unique(keys.astype(np.int64), return_counts=True)
        for key, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            sketch.add(sign * mapping.value(key), float(count))
    if zeros:
        sketch.add(0.0, float(zeros))


def bin_values(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each value replaced by the value of its DDSketch bin (what a sketch of
    :data:`RELATIVE_ACCURACY` answers for it), vectorized.

    The quantile ``q`` of a DDSketch holding ``values`` is the element at
    rank ``floor(q * (n - 1))`` of these, sorted (``DDSketch.get_quantile_value``
    walks its bins to that rank): so quantiles of many groups at once need no
    sketch object per group (see ``StreamAggregator``); a test holds the two equal.
    """
    mapping = _log_mapping()
    tiny = mapping.min_possible
    out = np.zeros(values.shape, np.float64)
    mag = np.minimum(np.abs(values), mapping.max_possible)
    nonzero = mag > tiny
    with np.errstate(divide="ignore"):
        keys = np.ceil(np.log2(mag[nonzero]) * mapping._multiplier) + mapping._offset
    reps = np.power(2.0, (keys - mapping._offset) / mapping._multiplier) * (
        2.0 / (1 + mapping.gamma)
    )
    out[nonzero] = np.sign(values[nonzero]) * reps
    return out


def to_bytes(sketch: Any) -> bytes:
    """The protobuf form of ``sketch``."""
    from ddsketch.pb.proto import DDSketchProto

    data: bytes = DDSketchProto.to_proto(sketch).SerializeToString()  # type: ignore[no-untyped-call]
    return data


def from_bytes(data: bytes) -> Any:
    """The sketch of its protobuf form.

    Raises:
        ValueError: not a serialized DDSketch.
    """
    from ddsketch.pb import ddsketch_pb2
    from ddsketch.pb.proto import DDSketchProto

    proto = ddsketch_pb2.DDSketch()
    try:
        proto.ParseFromString(data)
        return DDSketchProto.from_proto(proto)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ValueError(f"not a serialized DDSketch: {exc}") from None


def merge(sketches: Iterable[bytes | None]) -> bytes | None:
    """One serialized sketch of several (``None`` if none). A value that is not
    a sketch (a foreign writer's bytes) is left out, counted in :data:`UNREADABLE`
    and logged once: it must not stop a rollup."""
    merged: Any = None
    for data in sketches:
        if not data:
            continue
        try:
            s = from_bytes(data)
        except ValueError as exc:
            UNREADABLE[0] += 1
            if UNREADABLE[0] == 1:
                logger.warning("llamonitor: a metric point's sketch was left out: %s", exc)
            continue
        if merged is None:
            merged = s
        else:
            merged.merge(s)
    return None if merged is None else to_bytes(merged)


def quantiles(data: bytes | None, qs: Sequence[float]) -> list[float | None]:
    """The quantiles ``qs`` (0..1) of a serialized sketch (``None``s if empty)."""
    if not data:
        return [None for _ in qs]
    s = from_bytes(data)
    if s.count == 0:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        v = s.get_quantile_value(q)
        out.append(None if v is None or math.isnan(v) else float(v))
    return out
