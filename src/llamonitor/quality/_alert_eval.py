"""Evaluating the rules over a store, incrementally, in the store's engine.

A threshold rule's window is cut into buckets (1/60 of the window, 1 s to
5 min). The store's engine (DuckDB over the Parquet files, or over the rows a
SQL store returns for the time range) aggregates the spans per group and
bucket to *partials* that add up: spans, failures, cost, tokens, the sum and
maximum of the durations, and a log-scale histogram of the durations (the
percentiles: bins 2% wide, so a p95 is within 1% of the exact one). Only those
rows reach Python.

The first evaluation reads the whole window. Each later one reads again
only the buckets from the previous evaluation's time minus ``late`` (spans
reach a store after they started) and replaces them; buckets that left the
window are dropped. So an evaluation costs time in proportion to the new
spans, not to the store or the window: a day's spend rule re-reads the last
two minutes every 15 s, not the day.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pyarrow as pa

from llamonitor.quality._alert_rules import (
    GROUP_COLUMNS,
    AnomalyRule,
    ThresholdRule,
)
from llamonitor.storage._duckdb import DuckDBQuery, Filters

HIST_BASE = 1.02
"""Durations are binned by ``floor(log_1.02(ms))``: a bin's middle is within 1% of
any duration in it."""
_LOG_BASE = math.log(HIST_BASE)
MIN_BUCKET_SECONDS = 1
MAX_BUCKET_SECONDS = 300
BUCKETS_PER_WINDOW = 60
_TOKENS = "coalesce(total_tokens, coalesce(input_tokens, 0) + coalesce(output_tokens, 0))"
_HAS_TOKENS = "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR total_tokens IS NOT NULL)"
_QUANTILES = {"latency_p50": 0.5, "latency_p90": 0.9, "latency_p95": 0.95, "latency_p99": 0.99}

GroupKey = tuple[tuple[str, str], ...]
"""A group: ``(("model", "gpt-4o"),)``; ``()`` for a rule without ``group_by``."""


class Query(Protocol):
    """What evaluation needs of a store (``DuckDBQuery.run``; a ``ServerStore`` has it too)."""

    def run(
        self, sql: str, params: Sequence[Any] = ..., filters: Filters = ...
    ) -> pa.Table | None: ...


@dataclass(frozen=True)
class Observation:
    """A rule's figure for one group at one evaluation."""

    group: GroupKey
    value: float | None
    """``None``: no figure (no span in the window, or fewer than ``min_count``)."""
    count: int
    holds: bool
    """Whether the rule's condition holds (for an anomaly: the bucket is anomalous)."""
    detail: str = ""


def bucket_seconds(rule: ThresholdRule) -> int:
    """The width of ``rule``'s buckets: 1/60 of the window, within 1 s .. 5 min."""
    raw = rule.window / BUCKETS_PER_WINDOW
    return int(min(MAX_BUCKET_SECONDS, max(MIN_BUCKET_SECONDS, math.floor(raw))))


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


_FIELDS_ALWAYS = ("n",)
_NEEDS: dict[str, tuple[str, ...]] = {
    "volume": (),
    "errors": ("errors",),
    "error_rate": ("errors",),
    "cost": ("cost",),
    "tokens": ("tokens",),
    "input_tokens": ("in_tok",),
    "output_tokens": ("out_tok",),
    "latency_avg": ("ms", "timed"),
    "latency_max": ("max_ms",),
    **{m: ("hist",) for m in _QUANTILES},
}
_SQL_OF = {
    "n": "count(*)",
    "errors": "count(*) FILTER (WHERE error)",
    "cost": "sum(cost_usd)",
    "tokens": f"sum({_TOKENS}) FILTER (WHERE {_HAS_TOKENS})",
    "in_tok": "sum(input_tokens)",
    "out_tok": "sum(output_tokens)",
    "ms": "sum(duration_ms) FILTER (WHERE NOT isnan(duration_ms))",
    "timed": "count(duration_ms) FILTER (WHERE NOT isnan(duration_ms))",
    "max_ms": "max(duration_ms) FILTER (WHERE NOT isnan(duration_ms))",
}
_BIN = f"CAST(floor(ln(greatest(duration_ms, 0.001)) / {_LOG_BASE!r}) AS INTEGER)"


def rule_sql(rule: ThresholdRule) -> tuple[str, list[Any], tuple[str, ...]]:
    """The statement of ``rule``'s partials (``{where}`` to fill), its extra
    parameters (the filters not in :class:`Filters`) and the fields it returns."""
    fields = (*_FIELDS_ALWAYS, *_NEEDS[rule.metric])
    keys = [GROUP_COLUMNS[g] for g in rule.group_by]
    width = bucket_seconds(rule) * 1_000_000
    heads = [*(f"{k} AS g{i}" for i, k in enumerate(keys)),
             f'CAST(epoch_us("timestamp") // {width} AS BIGINT) AS b']
    extra: list[str] = []
    params: list[Any] = []
    for column, value in rule.filters().items():
        if column == "operation_name":
            continue  # in Filters: a SQL store pushes it into its own WHERE
        extra.append(f"{column} = ?")
        params.append(value)
    more = (" AND " + " AND ".join(extra)) if extra else ""
    if "hist" in fields:
        # Two levels (spans by bin, then bins into lists) is 2.5x faster than histogram().
        inner = ", ".join([*heads, f"{_BIN} AS bin", "count(*) AS c"])
        outer = ", ".join([*(f"g{i}" for i in range(len(keys))), "b", "sum(c) AS n",
                           "list(bin ORDER BY bin) AS bins", "list(c ORDER BY bin) AS cs"])
        return (f"SELECT {outer} FROM (SELECT {inner} FROM {{rel}} {{where}}{more} "
                "AND NOT isnan(duration_ms) GROUP BY ALL) GROUP BY ALL"), params, fields
    select = ", ".join([*heads, *(f"{_SQL_OF[f]} AS {f}" for f in fields)])
    return f"SELECT {select} FROM {{rel}} {{where}}{more} GROUP BY ALL", params, fields


@dataclass
class _RuleData:
    """The partials of one rule's buckets, and up to when they are read."""

    buckets: dict[tuple[GroupKey, int], dict[str, Any]] = field(default_factory=dict)
    totals: dict[GroupKey, dict[str, Any]] = field(default_factory=dict)
    """The sum of each group's buckets, kept as buckets come and go (a long window's
    hundreds of buckets are not merged again at each evaluation)."""
    read_until: float | None = None

    def drop(self, key: tuple[GroupKey, int]) -> None:
        part = self.buckets.pop(key)
        total = self.totals.get(key[0])
        if total is not None:
            _merge_into(total, part, -1)
            if not total.get("n"):
                del self.totals[key[0]]

    def add(self, key: tuple[GroupKey, int], part: dict[str, Any]) -> None:
        if key in self.buckets:
            self.drop(key)
        self.buckets[key] = part
        _merge_into(self.totals.setdefault(key[0], {}), part, 1)


class Evaluator:
    """Evaluates rules over one store, keeping each rule's buckets between calls.

    Args:
        query: the store's query side.
        late_seconds: each evaluation reads again this last stretch before the
            previous evaluation's time (spans that arrived late).
    """

    def __init__(self, query: Query, late_seconds: float = 120.0) -> None:
        self.query = query
        self.late_seconds = late_seconds
        self._data: dict[str, _RuleData] = {}
        # rule -> (the bucket in progress, the observations, whether they are final)
        self._anomaly_cache: dict[str, tuple[int, list[Observation], bool]] = {}
        self.timings: dict[str, float] = {}
        self.rows_read: dict[str, int] = {}

    def forget(self, name: str) -> None:
        self._data.pop(name, None)
        self._anomaly_cache.pop(name, None)

    def evaluate(self, rule: ThresholdRule | AnomalyRule, now: datetime) -> list[Observation]:
        """``rule``'s observations at ``now``, one per group seen in its window."""
        started = time.perf_counter()
        try:
            if isinstance(rule, AnomalyRule):
                return self._anomalous(rule, now)
            return self._threshold(rule, now)
        finally:
            self.timings[rule.name] = time.perf_counter() - started

    # -- thresholds --------------------------------------------------------------------

    def _threshold(self, rule: ThresholdRule, now: datetime) -> list[Observation]:
        width = bucket_seconds(rule)
        t = _epoch(now)
        data = self._data.setdefault(rule.name, _RuleData())
        first_bucket = math.ceil((t - rule.window) / width)
        if data.read_until is None or t < data.read_until:
            data.buckets.clear()
            data.totals.clear()
            start_bucket = first_bucket
        else:
            start_bucket = max(first_bucket, math.floor((data.read_until - self.late_seconds)
                                                        / width))
        self._read(rule, width, start_bucket, t, data)
        data.read_until = t
        for key in [k for k in data.buckets if k[1] < first_bucket]:
            data.drop(key)
        return self._observe(rule, data, first_bucket)

    def _read(self, rule: ThresholdRule, width: int, start_bucket: int, t: float,
              data: _RuleData) -> None:
        sql, params, fields = rule_sql(rule)
        f = Filters(operation=rule.operation, since=_utc(start_bucket * width), until=_utc(t))
        where, wparams = DuckDBQuery.where(f)
        table = self.query.run(sql.replace("{where}", where), [*wparams, *params], f)
        for key in [k for k in data.buckets if k[1] >= start_bucket]:
            data.drop(key)
        n_groups = len(rule.group_by)
        self.rows_read[rule.name] = 0 if table is None else table.num_rows
        if table is None:
            return
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        for i in range(table.num_rows):
            group = tuple(
                (rule.group_by[j], "" if columns[f"g{j}"][i] is None else str(columns[f"g{j}"][i]))
                for j in range(n_groups)
            )
            if "bins" in columns:
                part = {"n": columns["n"][i],
                        "hist": dict(zip(columns["bins"][i], columns["cs"][i], strict=True))}
            else:
                part = {f: columns[f][i] for f in fields}
            key = (group, int(columns["b"][i]))
            old = data.buckets.get(key)
            data.add(key, part if old is None else _merge(old, part))

    def _observe(self, rule: ThresholdRule, data: _RuleData, first_bucket: int
                 ) -> list[Observation]:
        groups = {g: dict(total) for g, total in data.totals.items()}
        if rule.metric == "latency_max":  # a maximum does not subtract: over the buckets
            for (group, b), part in data.buckets.items():
                if b >= first_bucket and part.get("max_ms") is not None and group in groups:
                    m = groups[group].get("max_ms")
                    groups[group]["max_ms"] = part["max_ms"] if m is None else max(
                        m, part["max_ms"])
        if not rule.group_by and () not in groups:
            groups[()] = {"n": 0}  # all spans: a figure (0 spans, $0) even when there are none
        out = []
        for group, total in sorted(groups.items()):
            count = int(total.get("n") or 0)
            value = figure(rule.metric, total) if count >= rule.min_count else None
            holds = value is not None and _compare(value, rule.comparison, rule.threshold)
            out.append(Observation(group, value, count, holds))
        return out

    # -- anomalies ---------------------------------------------------------------------

    def _anomalous(self, rule: AnomalyRule, now: datetime) -> list[Observation]:
        width = int(rule.bucket)
        current = math.floor(_epoch(now) / width)
        cached = self._anomaly_cache.get(rule.name)
        if cached is not None and cached[0] == current and cached[2]:
            return cached[1]  # the latest complete bucket has not changed
        # Until ``late`` has passed since the bucket ended, spans may still reach it:
        # judge it again at each evaluation till then.
        final = _epoch(now) - current * width >= self.late_seconds
        from llamonitor.analysis.anomalies import detect_anomalies

        group_by = list(rule.group_by)
        for name in GROUP_COLUMNS:  # a filter: group by it too, keep the matching groups
            if getattr(rule, name) is not None and name not in group_by:
                group_by.append(name)
        last_complete = _utc((current - 1) * width)
        found = detect_anomalies(
            self.query,
            since=now - timedelta(seconds=rule.history),
            until=now,
            bucket_seconds=width,
            signals=[rule.signal],
            group_by=group_by,
            now=now,
        )
        latest: dict[GroupKey, Any] = {}
        for a in found:
            if a.bucket_start < last_complete or not _matches(rule, dict(a.group)):
                continue
            group = tuple((k, v) for k, v in a.group if k in rule.group_by)
            best = latest.get(group)
            if best is None or abs(a.deviation) > abs(best.deviation):
                latest[group] = a
        out = [
            Observation(g, float(a.observed), 0, True, a.describe())
            for g, a in sorted(latest.items(), key=lambda kv: kv[0])
        ]
        self._anomaly_cache[rule.name] = (current, out, final)
        return out


def _matches(rule: AnomalyRule, group: dict[str, str]) -> bool:
    for name in GROUP_COLUMNS:
        want = getattr(rule, name)
        if want is None:
            continue
        have = group.get(name, "")
        if not (fnmatch.fnmatchcase(have, want) if name == "operation" else have == want):
            return False
    return True


def _merge_into(total: dict[str, Any], part: dict[str, Any], sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) ``part``'s additive figures to ``total``."""
    for k, v in part.items():
        if v is None or k == "max_ms":
            continue
        if k == "hist":
            hist = total.setdefault("hist", {})
            for bin_, n in v.items():
                left = hist.get(bin_, 0) + sign * n
                if left:
                    hist[bin_] = left
                else:
                    hist.pop(bin_, None)
        else:
            total[k] = (total.get(k) or 0) + sign * v


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if v is None:
            continue
        old = out.get(k)
        if old is None:
            out[k] = dict(v) if k == "hist" else v
        elif k == "max_ms":
            out[k] = max(old, v)
        elif k == "hist":
            merged = dict(old)
            for bin_, n in v.items():
                merged[bin_] = merged.get(bin_, 0) + n
            out[k] = merged
        else:
            out[k] = old + v
    return out


def figure(metric: str, p: dict[str, Any]) -> float | None:
    """``metric`` of merged partials ``p`` (latencies in seconds)."""
    n = int(p.get("n") or 0)
    if metric == "volume":
        return float(n)
    if metric == "errors":
        return float(p.get("errors") or 0)
    if metric == "error_rate":
        return None if n == 0 else float(p.get("errors") or 0) / n
    if metric == "cost":
        return float(p.get("cost") or 0.0)
    if metric == "tokens":
        return float(p.get("tokens") or 0)
    if metric == "input_tokens":
        return float(p.get("in_tok") or 0)
    if metric == "output_tokens":
        return float(p.get("out_tok") or 0)
    if metric == "latency_avg":
        timed = int(p.get("timed") or 0)
        return None if timed == 0 else float(p.get("ms") or 0.0) / timed / 1000.0
    if metric == "latency_max":
        m = p.get("max_ms")
        return None if m is None else float(m) / 1000.0
    q = _QUANTILES[metric]
    hist: dict[int, int] = p.get("hist") or {}
    return None if not hist else quantile(hist, q) / 1000.0


def quantile(hist: dict[int, int], q: float) -> float:
    """The ``q`` quantile (ms) of a log-binned histogram: the geometric middle of its bin."""
    total = sum(hist.values())
    rank = q * (total - 1)
    seen = 0
    for bin_ in sorted(hist):
        seen += hist[bin_]
        if seen > rank:
            return float(HIST_BASE ** (bin_ + 0.5))
    return float(HIST_BASE ** (max(hist) + 0.5))  # pragma: no cover - rank < total


def _compare(value: float, comparison: str, threshold: float) -> bool:
    if comparison == ">":
        return value > threshold
    if comparison == ">=":
        return value >= threshold
    if comparison == "<":
        return value < threshold
    return value <= threshold
