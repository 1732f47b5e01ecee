"""Batch rollups: raw points -> 60 s -> 300 s -> 3600 s, and spans -> per-minute
and per-hour series.

:func:`rollup` is what the retention helper calls before it drops raw points
(and what ``llamonitor metrics rollup`` runs). Each level is built from the
level below (60 s from raw, 300 s from 60 s, 3600 s from 300 s), with the
aggregates of :func:`~llamonitor.metrics._aggregate.window_aggregates`:
counters by last value and increase, gauges by last/avg (sum and count)/
min/max, histograms and summaries by summed counts and sums, min, max and
the merged DDSketch. A rollup point's ``timestamp`` is its window's start.

Idempotent and incremental: a level's windows up to the newest one already
stored are not built again (the watermark is the store itself, so a crash
between two levels loses nothing: the next run goes on from there). Only
windows that ended at least ``settle_seconds`` ago are built, so points
still on their way (the worker writes every 10 s) are in. Points that arrive
for a window after it was rolled up are not added to it.

Counters' increases need the point before a window: raw points are read from
:data:`COUNTER_LOOKBACK_SECONDS` before the first window; a series with no
point in that span starts its increase at its first point in the window (the
instruments write a zero when a series is created, so theirs are exact).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.metrics._aggregate import window_aggregates
from llamonitor.metrics._schema import RESOLUTIONS
from llamonitor.metrics._store import aware, query_points, read_points, write_points
from llamonitor.schema.config import StorageConfig

logger = logging.getLogger("llamonitor.metrics")

LEVELS: tuple[tuple[int, int], ...] = tuple(itertools.pairwise(RESOLUTIONS))
"""(from resolution, to resolution): raw -> 60, 60 -> 300, 300 -> 3600."""

SETTLE_SECONDS = 120.0
COUNTER_LOOKBACK_SECONDS = 3600
MAX_WINDOWS_PER_CHUNK = 1440
"""Windows rolled up per read (a day of minutes): bounds memory on a backlog."""


@dataclass
class RollupResult:
    """What :func:`rollup` wrote: points per resolution (and per span series)."""

    written: dict[int, int] = field(default_factory=dict)
    spans: dict[int, int] = field(default_factory=dict)
    until: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.written.values()) + sum(self.spans.values())


def _epoch_us(value: datetime) -> int:
    return int(aware(value).timestamp() * 1_000_000)


def _floor(value: datetime, seconds: int) -> datetime:
    us = _epoch_us(value)
    step = seconds * 1_000_000
    return datetime.fromtimestamp((us // step) * step / 1_000_000, timezone.utc)


def newest(
    storage: StorageConfig,
    resolution: int,
    source: str | None = None,
    exclude_source: str | None = None,
) -> datetime | None:
    """The newest point of ``resolution`` (of ``source``), or ``None``."""
    return _edge(storage, "max", resolution, source, exclude_source)


def oldest(
    storage: StorageConfig, resolution: int, exclude_source: str | None = None
) -> datetime | None:
    """The oldest point of ``resolution`` (not of ``exclude_source``), or ``None``."""
    return _edge(storage, "min", resolution, None, exclude_source)


def _edge(
    storage: StorageConfig,
    fn: str,
    resolution: int,
    source: str | None,
    exclude_source: str | None,
) -> datetime | None:
    where = "WHERE resolution_seconds = ?"
    params: list[Any] = [resolution]
    if source is not None:
        where += " AND source = ?"
        params.append(source)
    if exclude_source is not None:
        where += " AND source IS DISTINCT FROM ?"
        params.append(exclude_source)
    t = query_points(
        storage,
        f'SELECT {fn}("timestamp") AS t FROM {{rel}} {where}',
        params,
        sql_filters=(None, None, None, resolution),
    )
    if t.num_rows == 0 or "t" not in t.column_names:
        return None
    value = t.column("t")[0].as_py()
    return None if value is None else aware(value)


def rollup(
    storage: StorageConfig,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    spans: bool = True,
    settle_seconds: float = SETTLE_SECONDS,
    now: float | None = None,
    dry_run: bool = False,
) -> RollupResult:
    """Build every rollup level the store lacks, from ``since`` (or where the
    last run stopped, or the oldest point) to ``until`` (default: now less
    ``settle_seconds``), then the span series (``spans``).

    Args:
        storage: the store (the spans' ``StorageConfig``).
        since: do not build windows starting before this time.
        until: build only windows that end by this time.
        spans: also roll spans up into ``source="spans"`` series.
        settle_seconds: windows ending later than now less this are left
            for the next run.
        now: the current time (epoch seconds; tests).
        dry_run: build the windows in memory and count them; write nothing
            (each level counts the windows of the level below it would build).

    Returns:
        Points written (would be written) per resolution (:class:`RollupResult`).
    """
    current = time.time() if now is None else now
    limit = datetime.fromtimestamp(current - settle_seconds, timezone.utc)
    if until is not None:
        limit = min(limit, aware(until))
    result = RollupResult(until=limit)
    built: pa.Table | None = None
    for src, dst in LEVELS:
        result.written[dst], built = _level(storage, src, dst, since, limit, built, dry_run)
    if spans:
        from llamonitor.metrics._span_rollup import rollup_spans

        result.spans = rollup_spans(storage, since, limit, dry_run=dry_run)
    return result


def _level(
    storage: StorageConfig,
    src: int,
    dst: int,
    since: datetime | None,
    limit: datetime,
    unwritten: pa.Table | None = None,
    dry_run: bool = False,
) -> tuple[int, pa.Table | None]:
    """Build (and, unless ``dry_run``, write) the ``dst`` windows the store
    lacks; ``unwritten``: ``src`` points a dry run built but did not write.
    Returns the number of points built, and with ``dry_run`` the points (what
    the next level reads beside the store's)."""
    done = newest(storage, dst, exclude_source="spans")
    start: datetime | None
    if done is not None:
        start = done + timedelta(seconds=dst)
    else:
        start = oldest(storage, src, exclude_source="spans")
        if unwritten is not None and unwritten.num_rows:
            first = aware(pc.min(unwritten.column("timestamp")).as_py())
            start = first if start is None else min(start, first)
    if start is None:
        return 0, None
    if since is not None:
        start = max(start, aware(since))
    start = _floor(start, dst)
    end = _floor(limit, dst)  # only whole windows
    built: list[pa.Table] = []
    written = 0
    chunk = timedelta(seconds=dst * MAX_WINDOWS_PER_CHUNK)
    while start < end:
        stop = min(end, start + chunk)
        lookback = timedelta(seconds=COUNTER_LOOKBACK_SECONDS if src == 0 else 0)
        points = read_points(storage, start=start - lookback, end=stop, resolution=src)
        if unwritten is not None and unwritten.num_rows:
            ts = unwritten.column("timestamp")
            inside = pc.and_(
                pc.greater_equal(ts, pa.scalar(start - lookback, ts.type)),
                pc.less(ts, pa.scalar(stop, ts.type)),
            )
            points = pa.concat_tables([points, unwritten.filter(inside)])
        points = points.filter(
            pc.invert(pc.fill_null(pc.equal(points.column("source"), "spans"), False))
        )
        if points.num_rows:
            windows = window_aggregates(points, dst, start=start)
            if windows.num_rows:
                if dry_run:
                    built.append(windows)
                else:
                    written += write_points(storage, windows)
        start = stop
    if written:
        logger.info("llamonitor: rolled up %d points at %d s", written, dst)
    if dry_run:
        table = pa.concat_tables(built) if built else None
        return (0 if table is None else table.num_rows), table
    return written, None


def rollup_table(points: pa.Table, resolution: int) -> pa.Table:
    """``points`` (one resolution) rolled up to ``resolution`` (no store involved)."""
    return window_aggregates(points, resolution)
