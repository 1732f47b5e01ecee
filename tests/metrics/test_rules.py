"""Recording rules: config validation, values over the trailing window, and the
worker evaluating and storing them."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from llamonitor import metrics
from llamonitor.metrics import RecordingRule, evaluate_rule, read_points, write_points
from llamonitor.metrics._registry import Registry
from llamonitor.metrics._rules import evaluate_due
from llamonitor.schema.config import ConfigurationError, MonitorConfig, StorageConfig

T0 = 1_780_000_000 - 1_780_000_000 % 3600


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, timezone.utc)


def _fill(storage: StorageConfig, registry: Registry, name: str) -> None:
    """30 minutes of 10-s snapshots: cost by model, a queue gauge, a latency histogram."""
    c = metrics.counter(f"{name}_cost_total", labels=["model"], registry=registry)
    g = metrics.gauge(f"{name}_queue", labels=["worker"], registry=registry)
    h = metrics.histogram(f"{name}_seconds", labels=["service"], registry=registry)
    batches = []
    for i in range(180):
        c.labels(model="a").inc(0.5)
        c.labels(model="b").inc(1.5)
        g.labels(worker="1").set(i % 10)
        g.labels(worker="2").set(10)
        for v in range(1, 101):
            h.labels(service="api").observe(v / 100)
        batches.append(registry.collect(now=T0 + 10 * i + 10))
    write_points(storage, pa.concat_tables(batches))


def test_rules_are_validated_as_configuration() -> None:
    """A rule with an unknown aggregate or a bad window fails early, naming it."""
    ok = MonitorConfig(
        metrics_rules=[
            {
                "record": "llm:cost_usd:rate1h",
                "metric": "cost_total",
                "agg": "rate",
                "by": ["model"],
                "window": "1h",
            }
        ]
    )
    assert ok.metrics_rules[0].window == 3600
    with pytest.raises(ValueError):
        MonitorConfig(metrics_rules=[{"record": "x", "metric": "y", "agg": "median"}])
    with pytest.raises(ConfigurationError, match=r"metrics_rules\[0\]"):
        metrics.configure(rules=[{"record": "x", "metric": "y", "agg": "sum", "window": "soon"}])


def test_rule_values_over_the_trailing_window(
    parquet: StorageConfig, name: str, registry: Registry
) -> None:
    """rate/increase by label, gauge avg and last-sum, a histogram's p99 and rate."""
    _fill(parquet, registry, name)
    at = _at(1800)

    def value(**rule: object) -> dict[str, float]:
        t = evaluate_rule(parquet, RecordingRule(record="r:x", **rule), at)  # type: ignore[arg-type]
        return {r["labels"]: r["value"] for r in t.to_pylist()}

    by_model = value(metric=f"{name}_cost_total", agg="increase", by=["model"], window="5m")
    assert by_model == {'{"model":"a"}': pytest.approx(15.0), '{"model":"b"}': pytest.approx(45.0)}
    rate = value(metric=f"{name}_cost_total", agg="rate", window="5m")
    assert rate == {"{}": pytest.approx(60.0 / 300)}
    assert value(metric=f"{name}_queue", agg="sum", window="5m") == {
        "{}": 10 + (178 % 10)
    }  # the last point before t
    avg = value(
        metric=f"{name}_queue", agg="avg", by=["worker"], match={"worker": "2"}, window="5m"
    )
    assert avg == {'{"worker":"2"}': 10}
    p99 = value(metric=f"{name}_seconds", agg="p99", by=["service"], window="5m")
    assert p99['{"service":"api"}'] == pytest.approx(0.99, rel=0.0101)
    assert value(metric=f"{name}_seconds", agg="rate", window="5m") == {"{}": 3000 / 300}
    assert value(metric=f"{name}_queue", agg="p99", window="5m") == {}  # not for a gauge


def test_the_worker_evaluates_due_rules_and_stores_them(
    parquet: StorageConfig, name: str, registry: Registry
) -> None:
    """evaluate_due gives each rule's due times once; the points are gauges of source 'rule'."""
    _fill(parquet, registry, name)
    rule = RecordingRule(
        record=f"{name}:cost:rate5m", metric=f"{name}_cost_total", agg="rate", window=300, every=60
    )
    first = evaluate_due(parquet, [rule], now=T0 + 1200 + 15)
    assert [t.num_rows for t in first] == [1]
    assert evaluate_due(parquet, [rule], now=T0 + 1200 + 30) == []  # not due again yet
    later = evaluate_due(parquet, [rule], now=T0 + 1380 + 15)  # three minutes later
    assert len(later) == 3
    write_points(parquet, pa.concat_tables(first + later))
    stored = read_points(parquet, name=rule.record)
    assert stored.column("source").to_pylist() == ["rule"] * 4
    assert stored.column("kind").to_pylist() == ["gauge"] * 4
    assert stored.column("value").to_pylist() == [pytest.approx(0.2)] * 4
