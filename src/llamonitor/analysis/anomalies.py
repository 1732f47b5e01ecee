"""Anomaly detection: spikes, dips, level shifts and drifts in cost, tokens,
p95 latency, error rate and volume, per time bucket and group.

::

    from llamonitor.analysis.anomalies import detect_anomalies
    from llamonitor.storage.parquet import query

    for a in detect_anomalies(query("./monitoring_data"), since=week_ago):
        print(a.describe())
    # spike: p95 latency of model=gpt-4o at 2026-12-01 14:00 UTC (1h): 3,420 ms vs
    #   1,210 ms expected, +6.3 sigma

The signals are computed by the store's engine (one ``GROUP BY`` bucket and
group, see :mod:`._anomaly_signals`); the detector (:mod:`._anomaly_detect`)
is a robust rolling baseline (median level, hour-of-day profile, MAD sigma)
with a CUSUM for lasting changes. :class:`AnomalyWatcher` evaluates only
the buckets completed since its last poll.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from llamonitor.analysis._anomaly_detect import find
from llamonitor.analysis._anomaly_model import Anomaly
from llamonitor.analysis._anomaly_signals import GROUP_COLUMNS, SIGNALS
from llamonitor.analysis._anomaly_watch import AnomalyWatcher, detect

__all__ = [
    "GROUP_COLUMNS",
    "SIGNALS",
    "Anomaly",
    "AnomalyWatcher",
    "detect_anomalies",
    "detect_in_series",
]


def detect_anomalies(
    query: Any,
    *,
    since: datetime,
    until: datetime | None = None,
    bucket_seconds: int = 3600,
    signals: Sequence[str] = SIGNALS,
    group_by: Sequence[str] = ("model",),
    now: datetime | None = None,
) -> list[Anomaly]:
    """The anomalies of the buckets from ``since`` to ``until`` (or now).

    The baseline is made of the history before ``since`` too (a week of
    hourly buckets: see ``_anomaly_watch.warmup_buckets``), so the first
    buckets are judged like the later ones. The bucket in progress (at
    ``now``) is not judged: its figures are not complete.

    Args:
        query: the store's query side: ``llamonitor.storage.parquet.query(dir)``,
            ``sqlite.query(config)``, ``postgres.query(config)``, ``mysql.query(config)``
            (any ``DuckDBQuery``), the server's store, or a Parquet directory.
        since: the first bucket reported is the one holding this time (naive = UTC).
        until: buckets ending at or before this time (default: now).
        bucket_seconds: the width of a bucket; an hour-of-day profile is used
            when a day is a whole number of buckets.
        signals: any of :data:`SIGNALS`.
        group_by: dimensions of :data:`GROUP_COLUMNS` (``()``: all spans as one group).
        now: the current time (for tests; default: the clock).

    Returns:
        The anomalies, oldest first (then the farthest out first).

    Raises:
        ValueError: an unknown signal or dimension, or a bucket below one second.
    """
    if isinstance(query, (str, os.PathLike)):
        from llamonitor.storage import _parquet_read

        with _parquet_read.query(Path(query)) as q:
            return detect(
                q, since=since, until=until, bucket_seconds=bucket_seconds,
                signals=signals, group_by=group_by, now=now,
            )
    return detect(
        query, since=since, until=until, bucket_seconds=bucket_seconds, signals=signals,
        group_by=group_by, now=now,
    )


def detect_in_series(
    values: Sequence[float],
    *,
    timestamps: Sequence[datetime] | None = None,
    bucket_seconds: int = 3600,
) -> list[tuple[int, float, float, float, str]]:
    """The anomalies of one series of per-bucket values (NaN: a missing bucket).

    Args:
        values: one value per bucket, in time order.
        timestamps: each bucket's start (for the hour-of-day profile);
            default: the series starts at midnight UTC.
        bucket_seconds: the width of a bucket.

    Returns:
        ``(index, expected, observed, deviation, kind)`` per anomaly, in order;
        ``deviation`` is in robust sigmas, ``kind`` one of ``"spike"``,
        ``"dip"``, ``"level_shift"``, ``"drift"``.

    Raises:
        ValueError: ``timestamps`` of another length than ``values``.
    """
    return [
        (f.index, f.expected, f.observed, f.deviation, f.kind)
        for f in find(values, timestamps, bucket_seconds)
    ]
