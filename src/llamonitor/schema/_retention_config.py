"""Retention and downsampling settings (``MonitorConfig.retention``,
environment ``LLMOPS_RETENTION__*``).

Seed 003's shape: raw points for a period, then 1 min, 5 min and 1 h
rollups, each with its own retention (``{'resolution': '1m', 'retention':
'7d'}``); spans for ``spans_days``, optionally keeping their per-minute and
per-hour rollups after the raw spans go. Here (in ``schema``) so that
``MonitorConfig`` holds it without importing the metrics package.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llamonitor.schema._metrics_config import parse_duration

RESOLUTION_NAMES: dict[str, int] = {"raw": 0, "0": 0, "1m": 60, "5m": 300, "1h": 3600}
"""Names of the stored resolutions (seconds: 0 raw, 60, 300, 3600)."""

ROLLUP_SETTLE_SECONDS = 120.0
"""A rollup window is built once it ended this long ago (``metrics._rollup``)."""

DEFAULT_INTERVAL_SECONDS = 3600.0
DAY_SECONDS = 86400.0


class ResolutionPolicy(BaseModel):
    """How long points of one resolution are kept.

    Args:
        resolution: ``raw`` (0), ``1m`` (60), ``5m`` (300), ``1h`` (3600), or
            those seconds.
        retention: a duration (``"24h"``, ``"7d"``, seconds); ``None``: forever.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int
    retention: float | None

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a resolution")
        if isinstance(v, int) and v in RESOLUTION_NAMES.values():
            return v
        name = str(v).strip().lower()
        if name in RESOLUTION_NAMES:
            return RESOLUTION_NAMES[name]
        raise ValueError(f"{v!r} is not a stored resolution: raw, 1m, 5m, 1h (0, 60, 300, 3600)")

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, v: Any) -> float | None:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("forever", "none", "")):
            return None
        return parse_duration(v, "retention")


DEFAULT_POINT_POLICIES: tuple[ResolutionPolicy, ...] = (
    ResolutionPolicy(resolution=0, retention=1 * DAY_SECONDS),
    ResolutionPolicy(resolution=60, retention=7 * DAY_SECONDS),
    ResolutionPolicy(resolution=300, retention=30 * DAY_SECONDS),
    ResolutionPolicy(resolution=3600, retention=365 * DAY_SECONDS),
)
"""Seed 003's ladder from its raw 10 s for 24 h: raw 1 d, 1 min 7 d, 5 min 30 d, 1 h 1 y."""


class RetentionConfig(BaseModel):
    """What ``llamonitor retention apply`` and the background task keep.

    Args:
        spans_days: days a span is kept (by its start ``timestamp``);
            ``None`` (default): spans are kept forever. Also accepted as
            ``retention_days`` (``LLMOPS_RETENTION__RETENTION_DAYS``).
        keep_span_rollups: before spans go, build their per-minute and
            per-hour series (``source="spans"`` metric points: counts,
            errors, tokens, cost, latency sketches per model and
            operation); those then follow the points' policy of 1m and 1h.
        points: the metric points' policy per resolution (a list of
            ``{"resolution": "1m", "retention": "7d"}``); a resolution not
            listed is kept forever. Before raw points (or 1m, 5m points)
            go, the coarser rollups they feed are built. Each retention must
            be at least as long as the finer resolution's and long enough
            for the next rollup window to close.
        background: ``llamonitor serve`` (and ``watch``) apply the policy
            every ``interval_seconds`` (off by default: serving never
            deletes data unless asked to).
        interval_seconds: time between background applications.
        batch_rows: rows per DELETE in the SQL stores (each batch its own
            transaction, so locks stay short).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spans_days: float | None = Field(default=None, gt=0)
    keep_span_rollups: bool = True
    points: tuple[ResolutionPolicy, ...] = DEFAULT_POINT_POLICIES
    background: bool = False
    interval_seconds: float = Field(default=DEFAULT_INTERVAL_SECONDS, gt=0)
    batch_rows: int = Field(default=10_000, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _retention_days(cls, data: Any) -> Any:
        """``retention_days`` (seed 003's and the issue's name) is ``spans_days``."""
        if isinstance(data, dict) and "retention_days" in data:
            data = dict(data)
            value = data.pop("retention_days")
            if data.get("spans_days") is not None and value is not None:
                raise ValueError("give spans_days or retention_days (the same setting), not both")
            if data.get("spans_days") is None:
                data["spans_days"] = value
        return data

    @field_validator("spans_days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("forever", "none", ""):
            return None
        return v

    @field_validator("interval_seconds", mode="before")
    @classmethod
    def _interval(cls, v: Any) -> float:
        return parse_duration(v, "interval_seconds")

    @model_validator(mode="after")
    def _ladder(self) -> RetentionConfig:
        seen: dict[int, int] = {}
        for i, p in enumerate(self.points):
            if p.resolution in seen:
                raise ValueError(
                    f"points[{i}]: resolution {p.resolution} s is also points[{seen[p.resolution]}]"
                )
            seen[p.resolution] = i
        ordered = sorted(self.points, key=lambda p: p.resolution)
        for finer, coarser in itertools.pairwise(ordered):
            if finer.retention is None:
                if coarser.retention is not None:
                    raise ValueError(
                        f"points[{seen[coarser.resolution]}]: {coarser.resolution} s points kept "
                        f"{_days(coarser.retention)}, less than the {finer.resolution} s points' "
                        "forever: a coarser resolution keeps at least as long"
                    )
                continue
            if coarser.retention is not None and coarser.retention < finer.retention:
                raise ValueError(
                    f"points[{seen[coarser.resolution]}]: {coarser.resolution} s points kept "
                    f"{_days(coarser.retention)}, less than the {finer.resolution} s points' "
                    f"{_days(finer.retention)}: a coarser resolution keeps at least as long"
                )
        resolutions = sorted({0, 60, 300, 3600})
        for p in self.points:
            nxt = [r for r in resolutions if r > p.resolution]
            if p.retention is not None and nxt:
                need = nxt[0] + ROLLUP_SETTLE_SECONDS
                if p.retention < need:
                    raise ValueError(
                        f"points[{seen[p.resolution]}].retention: {p.retention:g} s is shorter "
                        f"than {need:g} s, so {p.resolution} s points would go before the "
                        f"{nxt[0]} s window they feed is rolled up"
                    )
        return self

    def point_retention(self, resolution: int) -> float | None:
        """Seconds points of ``resolution`` are kept (``None``: forever)."""
        for p in self.points:
            if p.resolution == resolution:
                return p.retention
        return None

    @property
    def spans_seconds(self) -> float | None:
        return None if self.spans_days is None else self.spans_days * DAY_SECONDS


def _days(seconds: float) -> str:
    if seconds % DAY_SECONDS == 0:
        return f"{seconds / DAY_SECONDS:g}d"
    return f"{seconds:g}s"
