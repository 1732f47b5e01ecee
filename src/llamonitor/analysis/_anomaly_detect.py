"""Anomalies in one series of per-bucket values: a causal, robust detector.

:class:`SeriesDetector` takes the buckets in order, one at a time
(:meth:`~SeriesDetector.update`), so a watcher keeps one per series and feeds
it only the buckets completed since its last run. For each bucket:

* **expected** = the level + the hour-of-day profile. The *level* is the
  median of the (deseasonalised) values of the current segment's last
  :data:`LEVEL_WINDOW` buckets; the *profile* (per phase of the day, the
  median offset from the level over the last :data:`PROFILE_CYCLES` days) is
  used once :data:`MIN_PROFILE_CYCLES` days of history are there and it is
  larger than the noise (otherwise a flat profile: no seasonality).
* **sigma** = 1.4826 x the median absolute residual (the MAD of the errors the
  baseline made on the clean buckets of the last :data:`SCALE_WINDOW`), at
  least :data:`RELATIVE_FLOOR` of the level and at least the caller's noise
  floor (Poisson for counts, binomial for rates).
* a bucket more than :data:`SPIKE_SIGMAS` out is a **spike** (above) or a
  **dip** (below); it is left out of every later baseline.
* a two-sided CUSUM of the residuals (in sigmas, each clipped to
  :data:`CUSUM_CLIP`, allowance :data:`CUSUM_K`) passing :data:`CUSUM_H` is a
  lasting change: a **level_shift** when the residuals since the change began
  are about flat, a **drift** when they grow. The baseline then restarts at
  the change (the old level is no longer expected); spikes already reported
  inside the change are kept.

The constants are module attributes, so tests and users can tune them.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

SPIKE_SIGMAS = 5.0
"""A bucket this many robust sigmas from the expected value is a spike or a dip."""
CUSUM_K = 1.0
"""CUSUM allowance (sigmas): residuals smaller than this do not accumulate."""
CUSUM_H = 6.0
"""CUSUM decision interval (sigmas): past it, a lasting change is reported."""
CUSUM_CLIP = 4.0
"""Each residual adds at most this many sigmas to the CUSUM (one spike is no shift)."""
MIN_HISTORY = 24
"""Clean buckets of history before anything is reported."""
LEVEL_WINDOW = 48
"""Buckets of the current segment the level is the median of."""
SCALE_WINDOW = 168
"""Clean buckets whose residuals give sigma."""
PROFILE_CYCLES = 7
"""Days of history the hour-of-day profile is the median of."""
MIN_PROFILE_CYCLES = 3
"""Days of history before the profile is used."""
PROFILE_MIN_SIGMAS = 0.75
"""The profile is used when its median absolute offset is at least this many sigmas."""
RELATIVE_FLOOR = 0.02
"""Sigma is at least this fraction of the expected value's magnitude."""
ABSOLUTE_FLOOR = 1e-9
DAY_SECONDS = 86_400
MAX_PERIOD = 1440
"""At most this many buckets per day for a profile (a one-minute bucket)."""
RESTART_AFTER_DRIFT = 3
"""After a drift, the level restarts from this many latest buckets (it kept moving)."""

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise

Floor = Callable[[float, int], float]
"""The noise floor of a series at an expected value, for a bucket of so many spans
(e.g. Poisson for a count: ``sqrt(expected)``)."""

Finding = tuple[int, float, float, float, str]
"""``(index, expected, observed, deviation, kind)``."""


@dataclass(frozen=True)
class Found:
    """One anomaly found by :meth:`SeriesDetector.update`."""

    index: int
    expected: float
    observed: float
    deviation: float
    kind: str
    onset: int  # the first bucket of the change (== index for a spike or a dip)


def period_of(bucket_seconds: int) -> int:
    """Buckets per day, or 0 when a day is not a whole number of buckets (no profile)."""
    if bucket_seconds <= 0 or DAY_SECONDS % bucket_seconds:
        return 0
    p = DAY_SECONDS // bucket_seconds
    return p if 2 <= p <= MAX_PERIOD else 0


def _median(values: Sequence[float]) -> float:
    """The median of a short list (sorting in C beats numpy's overhead here)."""
    n = len(values)
    if not n:
        return math.nan
    ordered = sorted(values)
    m = n // 2
    return ordered[m] if n % 2 else (ordered[m - 1] + ordered[m]) / 2


def _median_of(a: np.ndarray) -> float:
    """``np.median`` of a short array without its per-call overhead (no NaN here)."""
    n = a.size
    if not n:
        return math.nan
    ordered = np.sort(a)
    m = n // 2
    return float(ordered[m]) if n % 2 else float((ordered[m - 1] + ordered[m]) / 2)


class _SortedWindow:
    """The latest ``maxlen`` ``(index, value)`` pairs, their values also kept sorted:
    the median of the window costs no sort per bucket."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: deque[tuple[int, float]] = deque()
        self._sorted: list[float] = []

    def append(self, item: tuple[int, float]) -> None:
        if len(self._items) >= self.maxlen:
            self._drop(self._items.popleft()[1])
        self._items.append(item)
        bisect.insort(self._sorted, item[1])

    def pop(self) -> tuple[int, float]:
        item = self._items.pop()
        self._drop(item[1])
        return item

    def _drop(self, value: float) -> None:
        del self._sorted[bisect.bisect_left(self._sorted, value)]

    def clear(self) -> None:
        self._items.clear()
        self._sorted.clear()

    def median(self) -> float:
        ordered = self._sorted
        n = len(ordered)
        if not n:
            return math.nan
        m = n // 2
        return ordered[m] if n % 2 else (ordered[m - 1] + ordered[m]) / 2

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> tuple[int, float]:
        return self._items[i]


class SeriesDetector:
    """The detector of one series (see the module's docstring); feed it bucket by bucket.

    Its memory is bounded (a week of buckets, or :data:`PROFILE_CYCLES` days).

    Args:
        bucket_seconds: the width of a bucket (the day's profile needs a whole
            number of buckets per day).
        floor: the series' noise floor at an expected value, or ``None``.
    """

    def __init__(self, bucket_seconds: int = 3600, floor: Floor | None = None) -> None:
        self.period = period_of(bucket_seconds)
        self.bucket_seconds = bucket_seconds
        self.floor = floor
        # The level: (index, value, phase) of the buckets that are no spike.
        self._level: deque[tuple[int, float, int]] = deque(maxlen=LEVEL_WINDOW)
        # Sigma: (index, |value - expected|) of the clean buckets.
        self._errors = _SortedWindow(SCALE_WINDOW)
        # The profile: (index, phase, value - level) of the clean buckets.
        self._offsets: deque[tuple[int, int, float]] = deque(
            maxlen=max(1, self.period * PROFILE_CYCLES)
        )
        # A change's figures: (index, value, expected, sigma) of the latest buckets.
        self._recent: deque[tuple[int, float, float, float]] = deque(maxlen=SCALE_WINDOW)
        self.seen = 0  # buckets fed, missing ones included
        self.segment_start = 0  # index of the first bucket of the current level
        self._profile = [0.0] * max(self.period, 1)
        self._profile_on = False
        self._up = self._down = 0.0
        self._up_from = self._down_from = 0  # where each CUSUM started to grow
        self._last_change: tuple[int, int] | None = None  # (index, sign) of the latest change
        self._history = 0  # clean buckets so far
        # The latest level shift while its new level is learnt: (onset, sign, expected, sigma).
        self._shift: tuple[int, int, float, float] | None = None
        self._shift_profile: list[float] | None = None  # the day's profile before it

    # -- the baseline ----------------------------------------------------------

    def _phase_of(self, index: int, timestamp: datetime | None) -> int:
        if not self.period:
            return 0
        if timestamp is None:
            return index % self.period
        t = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc)
        return int(t.timestamp() // self.bucket_seconds) % self.period

    def _refresh_profile(self) -> None:
        """Recompute the hour-of-day profile (once a day)."""
        if len(self._offsets) < MIN_PROFILE_CYCLES * self.period:
            return
        phase = np.fromiter((o[1] for o in self._offsets), int, len(self._offsets))
        dev = np.fromiter((o[2] for o in self._offsets), float, len(self._offsets))
        counts = np.bincount(phase, minlength=self.period)
        if counts.min() < MIN_PROFILE_CYCLES:
            return
        # Each phase's median at once: sorted by phase, then value; the middle one(s).
        ordered = dev[np.lexsort((dev, phase))]
        starts = np.cumsum(counts) - counts
        profile = (ordered[starts + (counts - 1) // 2] + ordered[starts + counts // 2]) / 2
        profile -= _median_of(profile)
        noise = MAD_SCALE * _median_of(np.abs(dev - profile[phase]))
        self._profile = [float(v) for v in profile]
        self._profile_on = bool(_median_of(np.abs(profile)) >= PROFILE_MIN_SIGMAS * noise)

    def _baseline(self, phase: int) -> tuple[float, float, float]:
        """``(level, seasonal, sigma)`` from the buckets before this one."""
        start = self.segment_start
        if self._profile_on:
            prof = self._profile
            level = _median([v - prof[ph] for i, v, ph in self._level if i >= start])
            season = prof[phase]
        else:
            level = _median([v for i, v, _ in self._level if i >= start])
            season = 0.0
        sigma = MAD_SCALE * self._errors.median()
        return level, season, sigma

    def _sigma(self, sigma: float, expected: float, count: int) -> float:
        floors = [ABSOLUTE_FLOOR, RELATIVE_FLOOR * abs(expected)]
        if self.floor is not None:
            floors.append(self.floor(expected, count))
        return max(sigma if not math.isnan(sigma) else 0.0, *floors)

    # -- one bucket ------------------------------------------------------------

    def update(
        self, value: float, timestamp: datetime | None = None, count: int = 0
    ) -> list[Found]:
        """Take the next bucket's value (NaN: missing) and return what it shows.

        Args:
            value: the bucket's value; NaN when the bucket has none.
            timestamp: the bucket's start (its hour of the day); default: the
                series starts at midnight.
            count: the spans the value was made of (for the noise floor).

        Returns:
            The anomalies this bucket reveals: a spike or a dip at this
            bucket, and/or a lasting change confirmed at this bucket.
        """
        index = self.seen
        self.seen += 1
        phase = self._phase_of(index, timestamp)
        if self.period and index and phase == 0:
            self._refresh_profile()
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return []
        level, season, raw_sigma = self._baseline(phase)
        if math.isnan(level):  # the first bucket, or a new segment with nothing in it yet
            level = value - season
        expected = level + season
        if self._history < MIN_HISTORY:
            self._push(index, value, phase, level, expected, math.nan, True, True)
            return self._still_moving(index)
        sigma = self._sigma(raw_sigma, expected, count)
        z = (value - expected) / sigma
        found: list[Found] = []
        spike = abs(z) > SPIKE_SIGMAS
        if spike:
            found.append(Found(index, expected, value, z, "spike" if z > 0 else "dip", index))
        change = self._cusum(index, z)
        self._push(
            index, value, phase, level, expected, sigma, not spike and change is None, not spike
        )
        if change is not None:
            found.append(self._changed(index, change, expected, sigma))
        return found

    def _still_moving(self, index: int) -> list[Found]:
        """A level shift whose new level keeps moving the same way, while the
        baseline learns it again: the change was a drift (reported as one)."""
        shift = self._shift
        if shift is None:
            return []
        if self._history >= MIN_HISTORY - 1:
            self._shift = None  # learnt: judged as usual from the next bucket on
        # Without the day's profile the baseline is learning again: take out the old one.
        prof = self._shift_profile
        seen = np.array([v - (prof[ph] if prof else 0.0)
                         for i, v, ph in self._level if i >= self.segment_start])
        if seen.size < MOVING_MIN_BUCKETS:
            return []
        t = _slope_t(seen)
        if abs(t) <= MOVING_T or (t > 0) != (shift[1] > 0):
            return []
        onset, sign, expected, sigma = shift
        observed = float(np.median(seen[-3:]))
        if sign * (observed - float(np.median(seen[:3]))) < MOVING_SIGMAS * sigma:
            return []  # not farther out than where the new level began
        self._shift = None
        self._last_change = (index, sign)
        return [Found(index, expected, observed, (observed - expected) / sigma, "drift", onset)]

    def _push(
        self, index: int, value: float, phase: int, level: float, expected: float,
        sigma: float, clean: bool, usable: bool,
    ) -> None:
        if usable:
            self._level.append((index, value, phase))
        if clean:
            self._errors.append((index, abs(value - expected)))
            self._offsets.append((index, phase, value - level))
            self._history += 1
        self._recent.append((index, value, expected, sigma))

    def _cusum(self, index: int, z: float) -> int | None:
        """Advance the CUSUMs; the onset of a confirmed change (or ``None``)."""
        c = max(-CUSUM_CLIP, min(CUSUM_CLIP, z))
        if self._up == 0.0:
            self._up_from = index
        if self._down == 0.0:
            self._down_from = index
        self._up = max(0.0, self._up + c - CUSUM_K)
        self._down = max(0.0, self._down - c - CUSUM_K)
        if self._up > CUSUM_H:
            return self._up_from
        if self._down > CUSUM_H:
            return self._down_from
        return None

    def _changed(self, index: int, onset: int, expected: float, sigma: float) -> Found:
        """The level shift or drift from ``onset`` to ``index``; restart the baseline."""
        since = [r for r in self._recent if r[0] >= onset]
        seen = np.array([r[1] for r in since])
        # The baseline as it was when the change began.
        if since and not math.isnan(since[0][3]):
            expected, sigma = since[0][2], since[0][3]
        sign = 1 if float(np.median(seen)) >= expected else -1
        again = (
            self._last_change is not None
            and self._last_change[1] == sign
            and index - self._last_change[0] <= LEVEL_WINDOW
        )
        drift = again or _sloped(seen)
        observed = float(np.median(seen[-3:])) if drift else float(np.median(seen))
        deviation = (observed - expected) / sigma
        # The change's buckets were measured against the old level: leave them
        # out of sigma and the profile. The level restarts at the change.
        for window in (self._errors, self._offsets):
            while window and window[-1][0] >= onset:
                window.pop()
                self._history -= 1 if window is self._errors else 0
        self._shift_profile = list(self._profile) if self._profile_on else None
        self.segment_start = index - RESTART_AFTER_DRIFT + 1 if drift else onset
        if not drift:
            # A new level may scale the noise and the day's profile too: learn
            # them again (nothing is judged for MIN_HISTORY buckets).
            self._profile_on = False
            self._offsets.clear()
            self._errors.clear()
            self._history = 0
        self._up = self._down = 0.0
        self._last_change = (index, sign)
        self._shift = None if drift else (onset, sign, expected, sigma)
        kind = "drift" if drift else "level_shift"
        return Found(index, expected, observed, deviation, kind, onset)


DRIFT_T = 3.0
"""A change whose values still trend (slope t-statistic above this) is a drift."""
DRIFT_MIN_BUCKETS = 8
MOVING_T = 3.0
"""After a level shift, a new level whose slope t-statistic passes this makes it a drift."""
MOVING_MIN_BUCKETS = 8
MOVING_SIGMAS = 2.0
"""... and its latest buckets must be this many (old) sigmas farther out than its first."""
"""Buckets of the new level before that slope is tested."""


def _sloped(values: np.ndarray) -> bool:
    """Whether ``values`` (the buckets since a change began) still trend."""
    return abs(_slope_t(values)) > DRIFT_T


def _slope_t(values: np.ndarray) -> float:
    """The t-statistic of the slope of ``values`` (signed; 0 when too few)."""
    y = values[~np.isnan(values)]
    n = y.size
    if n < DRIFT_MIN_BUCKETS:
        return 0.0
    t = np.arange(n, dtype=float)
    t -= t.mean()
    slope = float(t @ (y - y.mean()) / (t @ t))
    resid = y - y.mean() - slope * t
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(t @ t)) if n > 2 else math.inf
    return slope / se if se > 0 else 0.0


def find(
    values: Sequence[float],
    timestamps: Sequence[datetime] | None = None,
    bucket_seconds: int = 3600,
    floor: Floor | None = None,
) -> list[Found]:
    """Every anomaly of a whole series (one :class:`SeriesDetector` fed in order)."""
    if timestamps is not None and len(timestamps) != len(values):
        raise ValueError(
            f"timestamps: {len(timestamps)} given for {len(values)} values"
        )
    detector = SeriesDetector(bucket_seconds, floor)
    out: list[Found] = []
    for i, v in enumerate(values):
        out.extend(detector.update(v, None if timestamps is None else timestamps[i]))
    return out
