"""The application collector reports the pipeline's own counters and the
rates of the spans the primary sink wrote."""

from __future__ import annotations

from pathlib import Path

import llamonitor
from llamonitor import MetricEvent, MonitorConfig
from llamonitor.metrics import ApplicationCollector

from ._points import value


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_pipeline_counters_and_span_rates(tmp_path: Path) -> None:
    """Spans written to Parquet show as totals, per-second rates and $/hour;
    the pipeline's counters match health_check()."""
    clock = Clock()
    writer = llamonitor.initialize_monitoring(MonitorConfig.for_local_dev(tmp_path / "store"))
    c = ApplicationCollector(clock=clock)
    try:
        for i in range(20):
            writer.record(MetricEvent(session_id="s", trace_id="t" * 32, span_id=f"{i:016x}",
                                      operation_name="op", error=i % 4 == 0,
                                      input_tokens=10, output_tokens=5, cost_usd=0.01))
        llamonitor.flush()
        clock.t = 10.0
        m = c.collect()
    finally:
        c.close()
    health = writer.health_check()
    assert value(m, "llamonitor_spans_total") == 20
    assert value(m, "llamonitor_span_errors_total") == 5
    assert value(m, "llamonitor_tokens_total", type="input") == 200
    assert value(m, "llamonitor_spans_per_second") == 2.0
    assert value(m, "llamonitor_errors_per_second") == 0.5
    assert value(m, "llamonitor_tokens_per_second") == 30.0
    assert abs(value(m, "llamonitor_cost_usd_per_hour") - 0.2 * 360) < 1e-9
    assert value(m, "llamonitor_events_received_total") == health["events_received"] == 20
    sink = next(iter(health["sinks"]))
    assert value(m, "llamonitor_events_total", sink=sink) == 20
    assert value(m, "llamonitor_running") == 1
    clock.t = 20.0
    assert value(c.collect(), "llamonitor_spans_per_second") == 0.0  # nothing new


def test_without_a_writer_only_rates_are_reported() -> None:
    """With no monitoring running the collector reports zero rates, and no error."""
    c = ApplicationCollector(["spans"], clock=Clock())
    c._clock = lambda: 5.0  # type: ignore[method-assign]
    try:
        m = c.collect()
    finally:
        c.close()
    assert value(m, "llamonitor_spans_per_second") == 0.0
