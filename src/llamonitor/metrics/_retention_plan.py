"""The engine-neutral half of retention: which rows a policy sends away.

:func:`plan` turns a :class:`~llamonitor.schema.RetentionConfig` and a time
into :class:`Cutoff` s: per table (``spans``, ``metric_points``) and per
resolution of the points, the time before which rows go. Every store's
executor (``_retention_parquet``, ``_retention_sql``) takes the same cutoffs
and answers with the same :class:`Tally` per cutoff, whether it measured
(a dry run) or deleted.

A row goes when its ``timestamp`` is *before* the cutoff (``<``); a row at
the cutoff or after it, or with no timestamp, stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from llamonitor.schema._retention_config import RetentionConfig
from llamonitor.storage._compact import CompactionError

SPANS = "spans"
POINTS = "metric_points"

EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
"""Cutoffs are clamped here (a retention longer than the calendar keeps all)."""


class RetentionError(CompactionError):
    """Retention cannot proceed safely (a rewrite that came out with the wrong
    rows, another retention or compaction holding the store)."""


@dataclass(frozen=True)
class Cutoff:
    """Rows of ``table`` (of ``resolution``, for points) before ``before`` go."""

    table: str
    resolution: int | None
    before: datetime
    retention_seconds: float

    @property
    def key(self) -> str:
        return self.table if self.resolution is None else f"{self.table}@{self.resolution}"


@dataclass
class Tally:
    """What went (or, in a dry run, would go) under one cutoff.

    ``bytes`` is what the files lose (Parquet: removed files' sizes, and
    the size a rewrite saves); the SQL stores estimate it from the table's
    average row size (``bytes_estimated``), and their files shrink only after
    a ``VACUUM`` (SQLite) or as the free space is reused (PostgreSQL, InnoDB).
    """

    rows: int = 0
    files_removed: int = 0
    files_rewritten: int = 0
    partitions_dropped: int = 0
    bytes: int = 0
    bytes_estimated: bool = False
    notes: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        self.files_removed += other.files_removed
        self.files_rewritten += other.files_rewritten
        self.partitions_dropped += other.partitions_dropped
        self.bytes += other.bytes
        self.bytes_estimated = self.bytes_estimated or other.bytes_estimated
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cutoff(now: datetime, seconds: float) -> datetime:
    try:
        return max(EARLIEST, now - timedelta(seconds=seconds))
    except OverflowError:
        return EARLIEST


def plan(config: RetentionConfig, now: datetime) -> list[Cutoff]:
    """The cutoffs of ``config`` at ``now`` (aware), finest resolution first;
    what is kept forever has none."""
    out: list[Cutoff] = []
    if config.spans_seconds is not None:
        out.append(Cutoff(SPANS, None, _cutoff(now, config.spans_seconds), config.spans_seconds))
    for p in sorted(config.points, key=lambda p: p.resolution):
        if p.retention is not None:
            out.append(Cutoff(POINTS, p.resolution, _cutoff(now, p.retention), p.retention))
    return out


def span_cutoff(cutoffs: list[Cutoff]) -> datetime | None:
    return next((c.before for c in cutoffs if c.table == SPANS), None)


def point_cutoffs(cutoffs: list[Cutoff]) -> dict[int, datetime]:
    return {
        c.resolution: c.before for c in cutoffs if c.table == POINTS and c.resolution is not None
    }
