"""The :class:`Anomaly` record (re-exported by :mod:`llamonitor.analysis.anomalies`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

_UNITS = {
    "cost": ("$", ""),
    "tokens": ("", " tokens"),
    "latency_p95": ("", " ms"),
    "error_rate": ("", "%"),
    "volume": ("", " spans"),
}
_NAMES = {
    "cost": "cost",
    "tokens": "tokens",
    "latency_p95": "p95 latency",
    "error_rate": "error rate",
    "volume": "volume",
}
_KINDS = {
    "spike": "spike",
    "dip": "dip",
    "level_shift": "level shift",
    "drift": "drift",
}


def _figure(signal: str, value: float) -> str:
    pre, post = _UNITS.get(signal, ("", ""))
    if signal == "error_rate":
        return f"{value * 100:.1f}%"
    if signal == "cost":
        return f"{pre}{value:,.4f}" if abs(value) < 1 else f"{pre}{value:,.2f}"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{pre}{value:,.0f}{post}"
    return f"{pre}{value:,.1f}{post}"


def _width(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Anomaly:
    """One anomaly: a signal of a group, in a bucket, with its figures.

    Attributes:
        signal: ``"cost"``, ``"tokens"``, ``"latency_p95"``, ``"error_rate"``
            or ``"volume"``.
        group: the group, as ``((dimension, value), ...)``, e.g.
            ``(("model", "gpt-4o"),)``; ``""`` for spans without the column;
            ``()`` when not grouped.
        bucket_start: the start of the bucket (UTC) where the anomaly was
            found: the spike's bucket, or the bucket where a lasting change
            became certain.
        bucket_seconds: the width of the buckets.
        expected: what the baseline expected (for a change: before it began).
        observed: what the bucket showed (for a level shift: the median since
            it began; for a drift: the latest buckets').
        deviation: ``(observed - expected) / sigma``, in robust sigmas
            (negative below the expected value).
        kind: ``"spike"``, ``"dip"``, ``"level_shift"`` or ``"drift"``.
        onset: for a level shift or a drift, the bucket it began in;
            ``bucket_start`` for a spike or a dip.
    """

    signal: str
    group: tuple[tuple[str, str], ...]
    bucket_start: datetime
    bucket_seconds: int
    expected: float
    observed: float
    deviation: float
    kind: str
    onset: datetime | None = None

    def describe(self) -> str:
        """One line for a human, with the figures."""
        where = ", ".join(f"{k}={v or '(none)'}" for k, v in self.group) or "all spans"
        when = self.bucket_start.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
        kind = _KINDS.get(self.kind, self.kind)
        line = (
            f"{kind}: {_NAMES.get(self.signal, self.signal)} of {where} at {when} UTC "
            f"({_width(self.bucket_seconds)}): {_figure(self.signal, self.observed)} vs "
            f"{_figure(self.signal, self.expected)} expected, {self.deviation:+.1f} sigma"
        )
        if self.onset is not None and self.onset != self.bucket_start:
            line += f", since {self.onset.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M')}"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601, the group as a mapping."""
        return {
            "signal": self.signal,
            "group": dict(self.group),
            "bucket_start": self.bucket_start.isoformat(),
            "bucket_seconds": self.bucket_seconds,
            "expected": self.expected,
            "observed": self.observed,
            "deviation": self.deviation,
            "kind": self.kind,
            "onset": None if self.onset is None else self.onset.isoformat(),
            "description": self.describe(),
        }
