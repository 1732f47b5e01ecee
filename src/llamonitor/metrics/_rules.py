"""Recording rules: aggregates of a metric precomputed on an interval and stored.

A rule (:class:`~llamonitor.schema._metrics_config.RecordingRule`) says
*record* this name as *agg* of *metric* over the trailing *window*, by these
labels, every *every* seconds -- seed 003's Prometheus example
(``instance:request_rate5m = rate(http_requests_total[5m])``) as data:

    {record: "instance:request_rate5m", metric: "http_requests_total",
     agg: "rate", window: "5m"}
    {record: "service:request_duration:p99", metric: "request_duration_seconds",
     agg: "p99", by: ["service"], window: "5m"}

Each evaluation at time ``t`` (a multiple of ``every``) reads the raw points
of ``[t - window, t)`` (and, for counters, the point before), aggregates each
series (see ``_aggregate``), combines the series of each ``by`` group and
writes one ``gauge`` point per group: ``name`` the rule's ``record``,
``timestamp`` ``t``, ``source`` ``"rule"``. The metrics worker evaluates the
rules of ``MonitorConfig.metrics_rules`` (or :func:`configure`'s) as their
times come, once the interval's points are written;
:func:`evaluate` computes one rule at one time (backfills, tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from llamonitor.metrics import _sketch
from llamonitor.metrics._aggregate import merge_series, window_aggregates
from llamonitor.metrics._schema import METRIC_SCHEMA, labels_text
from llamonitor.metrics._store import aware, read_points
from llamonitor.schema._metrics_config import RecordingRule
from llamonitor.schema.config import ConfigurationError, StorageConfig

SOURCE = "rule"
SETTLE_SECONDS = 15.0
"""A rule's time ``t`` is evaluated once ``t`` is this far in the past (the
points of the interval ending at ``t`` are written by then)."""

_COUNTER_LOOKBACK = timedelta(hours=1)
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
_ONE_WINDOW = 100 * 365 * 86400  # a step that puts every point in one bucket

_last: dict[str, float] = {}
_last_lock = threading.Lock()


def parse_rules(rules: Sequence[Any]) -> list[RecordingRule]:
    """Rules from ``RecordingRule`` objects or dicts.

    Raises:
        ConfigurationError: a bad rule, naming ``metrics_rules[i]``.
    """
    out: list[RecordingRule] = []
    for i, rule in enumerate(rules):
        if isinstance(rule, RecordingRule):
            out.append(rule)
            continue
        try:
            out.append(RecordingRule.model_validate(rule))
        except Exception as exc:
            raise ConfigurationError(f"metrics_rules[{i}]", str(exc)) from None
    return out


def _value(rule: RecordingRule, kind: str, g: dict[str, Any]) -> float | None:
    v = _raw_value(rule, kind, g)
    return None if v is None else float(v)


def _raw_value(rule: RecordingRule, kind: str, g: dict[str, Any]) -> Any:
    agg = rule.agg
    count, total = g["count"], g["sum"]
    if kind == "counter":
        if agg == "increase":
            return total
        if agg == "rate":
            return None if total is None else total / rule.window
        if agg in ("last", "sum"):
            return g["value"]
        return None
    if kind == "gauge":
        if agg == "avg":
            return None if not count else total / count
        if agg in ("last", "sum"):
            return g["value"]
        if agg == "min":
            return g["min"]
        if agg == "max":
            return g["max"]
        if agg == "count":
            return float(count or 0)
        return None
    # histogram / summary
    if agg == "count":
        return float(count or 0)
    if agg == "sum":
        return total
    if agg == "avg":
        return None if not count else total / count
    if agg == "rate":
        return float(count or 0) / rule.window
    if agg == "min":
        return g["min"]
    if agg == "max":
        return g["max"]
    if agg in _QUANTILES:
        return _sketch.quantiles(g["sketch"], [_QUANTILES[agg]])[0]
    return None


def evaluate(storage: StorageConfig, rule: RecordingRule, at: datetime) -> pa.Table:
    """The points of ``rule`` at time ``at`` (over ``[at - window, at)``).

    A rule whose ``agg`` does not apply to the metric's kind (``p99`` of a
    gauge) yields no points.
    """
    end = aware(at)
    start = end - timedelta(seconds=rule.window)
    points = read_points(
        storage,
        name=rule.metric,
        labels=rule.match or None,
        start=start - _COUNTER_LOOKBACK,
        end=end,
        resolution=0,
    )
    rows: list[dict[str, Any]] = []
    if points.num_rows:
        windows = window_aggregates(points, _ONE_WINDOW, start=start, resolution=0)
        if windows.num_rows:
            kind = windows.column("kind")[0].as_py()
            for g in merge_series(windows, rule.by):
                value = _value(rule, kind, g)
                if value is None:
                    continue
                rows.append(
                    {
                        "timestamp": end,
                        "name": rule.record,
                        "kind": "gauge",
                        "labels": labels_text(g["labels"]),
                        "resolution_seconds": 0,
                        "value": float(value),
                        "source": SOURCE,
                    }
                )
    if not rows:
        return METRIC_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=METRIC_SCHEMA)


def evaluate_due(
    storage: StorageConfig, rules: Sequence[RecordingRule], now: float | None = None
) -> list[pa.Table]:
    """The points of every rule whose next time has come (the worker's call).

    A rule's first evaluation in a process is its latest due time; after that
    each due time once (a worker that was stalled catches up, at most 60
    times a rule).
    """
    current = (time.time() if now is None else now) - SETTLE_SECONDS
    out: list[pa.Table] = []
    for rule in rules:
        every = rule.every
        latest = (current // every) * every
        with _last_lock:
            last = _last.get(rule.record)
        due = [latest] if last is None else _times_after(last, latest, every)[-60:]
        for t in due:
            table = evaluate(storage, rule, datetime.fromtimestamp(t, timezone.utc))
            if table.num_rows:
                out.append(table)
        if due:
            with _last_lock:
                _last[rule.record] = due[-1]
    return out


def _times_after(last: float, latest: float, every: float) -> list[float]:
    times = []
    t = last + every
    while t <= latest:
        times.append(t)
        t += every
    return times


def reset() -> None:
    """Forget when each rule ran (tests)."""
    with _last_lock:
        _last.clear()


evaluate_rule = evaluate
"""Public name of :func:`evaluate` (``llamonitor.metrics.evaluate_rule``)."""
