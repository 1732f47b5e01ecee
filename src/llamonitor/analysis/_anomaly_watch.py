"""Anomalies over a store: batch (:func:`detect`) and incremental (:class:`AnomalyWatcher`).

A :class:`Book` keeps one :class:`~._anomaly_detect.SeriesDetector` per
(group, signal) and the next bucket each expects; :meth:`Book.feed` hands
them the rows of a range of buckets. :func:`detect` feeds a fresh book
the warm-up and the requested range in one statement; the watcher keeps its
book and, at each poll, asks the store only for the buckets completed since
its watermark.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from llamonitor.analysis._anomaly_detect import (
    PROFILE_CYCLES,
    SCALE_WINDOW,
    Floor,
    Found,
    SeriesDetector,
    period_of,
)
from llamonitor.analysis._anomaly_model import Anomaly
from llamonitor.analysis._anomaly_signals import (
    SIGNALS,
    BucketRow,
    Query,
    bucket_of,
    bucket_rows,
    check_group_by,
    check_signals,
    start_of,
)

logger = logging.getLogger("llamonitor.analysis.anomalies")

MAX_SERIES = 2000
"""At most this many (group, signal) series are followed; the rest are logged once."""

_ZERO_WHEN_EMPTY = frozenset({"cost", "tokens", "volume"})
"""Signals that are 0 in a bucket without spans (the others are unknown there)."""


def _poisson(expected: float, _count: int) -> float:
    return math.sqrt(max(expected, 1.0))


def _binomial(expected: float, count: int) -> float:
    n = max(count, 1)
    p = min(max(expected, 0.5 / n), 1.0)
    return math.sqrt(p * (1 - p) / n)


FLOORS: dict[str, Floor] = {"volume": _poisson, "error_rate": _binomial}
"""Each signal's noise floor (see :data:`~._anomaly_detect.Floor`)."""


def warmup_buckets(bucket_seconds: int) -> int:
    """Buckets of history read before the first reported one (a baseline's worth)."""
    return max(SCALE_WINDOW, PROFILE_CYCLES * period_of(bucket_seconds))


def _check_bucket(bucket_seconds: int) -> int:
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int):
        raise ValueError(f"bucket_seconds: must be an integer, got {bucket_seconds!r}")
    if bucket_seconds < 1:
        raise ValueError(f"bucket_seconds: must be at least 1, got {bucket_seconds}")
    return bucket_seconds


@dataclass
class _Series:
    detector: SeriesDetector
    next_bucket: int


Group = tuple[tuple[str, str], ...]


class Book:
    """The detectors of every (group, signal), each with the next bucket it expects."""

    def __init__(self, bucket_seconds: int, signals: Sequence[str], group_by: Sequence[str]):
        self.bucket_seconds = _check_bucket(bucket_seconds)
        self.signals = check_signals(signals)
        self.group_by = check_group_by(group_by)
        self.series: dict[tuple[Group, str], _Series] = {}
        self._full_logged = False

    def feed(
        self, rows: Sequence[BucketRow], first: int, end: int, report_from: int | None = None
    ) -> list[Anomaly]:
        """Hand the buckets ``[first, end)`` (``rows``: those with spans) to the detectors.

        Returns the anomalies of buckets at or after ``report_from`` (default ``first``).
        """
        report_from = first if report_from is None else report_from
        by_group: dict[Group, dict[int, BucketRow]] = {}
        for r in rows:
            by_group.setdefault(r.group, {})[r.bucket] = r
        groups = list(dict.fromkeys([*(g for g, _ in self.series), *by_group]))
        out: list[Anomaly] = []
        for group in groups:
            mine = by_group.get(group, {})
            for signal in self.signals:
                series = self._series(group, signal, mine)
                if series is None:
                    continue
                start = max(series.next_bucket, first)
                for b in range(start, end):
                    row = mine.get(b)
                    if row is not None:
                        value = row.value(signal)
                        count = row.timed if signal == "latency_p95" else row.volume
                    else:
                        value = 0.0 if signal in _ZERO_WHEN_EMPTY else math.nan
                        count = 0
                    found = series.detector.update(value, start_of(b, self.bucket_seconds), count)
                    if found and b >= report_from:
                        out.extend(self._anomaly(signal, group, b, f) for f in found)
                series.next_bucket = max(series.next_bucket, end)
        return out

    def _series(self, group: Group, signal: str, mine: dict[int, BucketRow]) -> _Series | None:
        key = (group, signal)
        found = self.series.get(key)
        if found is not None:
            return found
        start = min((b for b, r in mine.items() if r.has(signal)), default=None)
        if start is None:
            return None
        if len(self.series) >= MAX_SERIES:
            if not self._full_logged:
                self._full_logged = True
                logger.warning(
                    "anomalies: more than %d series (group x signal); the later ones are "
                    "not followed: group by fewer dimensions", MAX_SERIES,
                )
            return None
        made = _Series(SeriesDetector(self.bucket_seconds, FLOORS.get(signal)), start)
        self.series[key] = made
        return made

    def _anomaly(self, signal: str, group: Group, bucket: int, f: Found) -> Anomaly:
        width = self.bucket_seconds
        onset = start_of(bucket - (f.index - f.onset), width)
        return Anomaly(
            signal=signal, group=group, bucket_start=start_of(bucket, width),
            bucket_seconds=width, expected=f.expected, observed=f.observed,
            deviation=f.deviation, kind=f.kind, onset=onset,
        )


def merge(anomalies: list[Anomaly]) -> list[Anomaly]:
    """Drop the spikes (dips) a later level shift or drift of the same series and
    direction explains (buckets from its onset to its confirmation); sort by
    time, then by how far out."""
    changes = [a for a in anomalies if a.kind in ("level_shift", "drift")]

    def explained(a: Anomaly) -> bool:
        if a.kind not in ("spike", "dip"):
            return False
        up = a.kind == "spike"
        return any(
            c.signal == a.signal and c.group == a.group and (c.deviation > 0) == up
            and c.onset is not None and c.onset <= a.bucket_start <= c.bucket_start
            for c in changes
        )

    kept = [a for a in anomalies if not explained(a)]
    return sorted(kept, key=lambda a: (a.bucket_start, -abs(a.deviation), a.signal, a.group))


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def detect(
    query: Query,
    *,
    since: datetime,
    until: datetime | None,
    bucket_seconds: int,
    signals: Sequence[str],
    group_by: Sequence[str],
    now: datetime | None,
) -> list[Anomaly]:
    """See :func:`llamonitor.analysis.anomalies.detect_anomalies`."""
    book = Book(bucket_seconds, signals, group_by)
    current = _now(now)
    end_time = current if until is None else min(_now(until), current)
    end = bucket_of(end_time, bucket_seconds)  # the bucket in progress is not judged
    report_from = bucket_of(since, bucket_seconds)
    first = report_from - warmup_buckets(bucket_seconds)
    rows = bucket_rows(
        query, first_bucket=first, end_bucket=end, bucket_seconds=bucket_seconds,
        group_by=book.group_by,
    )
    return merge(book.feed(rows, first, end, report_from))


class AnomalyWatcher:
    """Incremental anomaly detection: each :meth:`poll` reads only the buckets
    completed since the last one (and those still open to late spans).

    The first poll reads a baseline's worth of history
    (:func:`warmup_buckets`) and reports the anomalies of its last
    ``report_buckets`` buckets only; later polls report those of the new
    buckets.

    Late spans: a bucket that ended less than ``late_seconds`` before a poll
    is judged then, and judged again at each later poll until it has been
    over for ``late_seconds`` (the detectors are put back to where they were
    before it, and fed it again with what the store holds by then). An
    anomaly that spans written late reveal is reported at the poll that
    first sees it; one already reported is not reported again, nor taken
    back if late spans make it go away. Spans later than ``late_seconds`` are
    not seen by the watcher (the batch :func:`detect` always reads everything).
    With ``late_seconds=0`` (the default) a bucket is judged once.

    Args:
        query: the store's query side (as for ``detect_anomalies``).
        bucket_seconds, signals, group_by: as for ``detect_anomalies``.
        report_buckets: how many buckets the first poll reports anomalies of.
        late_seconds: how long after its end a bucket is judged again.
    """

    def __init__(
        self,
        query: Query,
        *,
        bucket_seconds: int = 3600,
        signals: Sequence[str] = SIGNALS,
        group_by: Sequence[str] = ("model",),
        report_buckets: int = 1,
        late_seconds: float = 0.0,
    ) -> None:
        if not late_seconds >= 0:
            raise ValueError(f"late_seconds: must be 0 or more, got {late_seconds!r}")
        self.query = query
        self.book = Book(bucket_seconds, signals, group_by)
        self.report_buckets = max(0, int(report_buckets))
        self.late_seconds = float(late_seconds)
        self._next: int | None = None  # the first bucket not judged yet
        # The book as it was before the first bucket still open to late spans.
        self._settled: tuple[int, Book] | None = None
        self._reported: set[tuple[str, Group, datetime, str]] = set()
        self._report_floor = 0  # the first poll's first reported bucket

    @property
    def watermark(self) -> datetime | None:
        """The end of the last bucket judged (``None`` before the first poll)."""
        return None if self._next is None else start_of(self._next, self.book.bucket_seconds)

    def poll(self, now: datetime | None = None) -> list[Anomaly]:
        """Judge the buckets completed since the last poll (and judge again those
        still open to late spans); the anomalies not reported before."""
        width = self.book.bucket_seconds
        current = _now(now)
        end = bucket_of(current, width)
        if self._next is None:
            first = end - warmup_buckets(width)
            report_from = self._report_floor = end - self.report_buckets
            book = self.book
        elif self._settled is not None:
            first, saved = self._settled
            report_from = max(first, self._report_floor)
            book = copy.deepcopy(saved)
        else:
            first = report_from = self._next
            book = self.book
        if end <= first:
            return []
        # Buckets before ``settled`` have been over for late_seconds: final.
        settled = min(end, max(first, bucket_of(current - timedelta(seconds=self.late_seconds),
                                                width)))
        rows = bucket_rows(
            self.query, first_bucket=first, end_bucket=end, bucket_seconds=width,
            group_by=book.group_by,
        )
        found = book.feed(rows, first, settled, report_from)
        if settled < end:
            self._settled = (settled, copy.deepcopy(book))
            found += book.feed(rows, settled, end, report_from)
        else:
            self._settled = None
        self.book = book
        self._next = end
        keep_from = start_of(settled, width)
        fresh = []
        for a in found:
            key = (a.signal, a.group, a.bucket_start, a.kind)
            if key not in self._reported:
                fresh.append(a)
                if a.bucket_start >= keep_from:
                    self._reported.add(key)  # may be judged again: remember it
        self._reported = {k for k in self._reported if k[2] >= keep_from}
        return sorted(fresh, key=lambda a: (a.bucket_start, -abs(a.deviation), a.signal, a.group))
