"""``llmops_monitoring.schema.events``: llamonitor's event model (seed 000's names)."""

from llamonitor.schema import ImageMetrics, MetricEvent, TextMetrics

__all__ = ["ImageMetrics", "MetricEvent", "TextMetrics"]
