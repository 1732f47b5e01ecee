"""The instruments exposed to Prometheus through a prometheus_client registry."""

from __future__ import annotations

import pytest

from llamonitor import metrics
from llamonitor.metrics._registry import Registry

prom = pytest.importorskip("prometheus_client")


def test_live_values_in_the_text_format(registry: Registry) -> None:
    """Counters, gauges, histograms (cumulative buckets) and summaries as a scrape sees them."""
    c = metrics.counter(
        "evaluations_total", "Total evaluations", labels=["model"], registry=registry
    )
    c.labels(model="gpt-4o").inc(3)
    metrics.gauge("queue_depth", "Queue depth", registry=registry).set(4)
    h = metrics.histogram("eval_seconds", "Duration", buckets=[0.1, 1], registry=registry)
    for v in (0.05, 0.5, 5):
        h.observe(v)
    s = metrics.summary("resp_seconds", registry=registry)
    s.observe(2)
    reg = prom.CollectorRegistry()
    reg.register(metrics.prometheus_collector(registry))
    text = prom.generate_latest(reg).decode()
    assert 'evaluations_total{model="gpt-4o"} 3.0' in text
    assert "queue_depth 4.0" in text
    assert 'eval_seconds_bucket{le="0.1"} 1.0' in text
    assert 'eval_seconds_bucket{le="1.0"} 2.0' in text
    assert 'eval_seconds_bucket{le="+Inf"} 3.0' in text
    assert "eval_seconds_sum 5.55" in text and "eval_seconds_count 3.0" in text
    assert "resp_seconds_count 1.0" in text and "resp_seconds_sum 2.0" in text
    # a scrape does not take the worker's interval: the points still hold them
    (row,) = [r for r in registry.collect().to_pylist() if r["name"] == "eval_seconds"]
    assert row["count"] == 3
