"""``llmops_monitoring.schema.events``: llamonitor's event model."""

from llamonitor import MetricEvent

__all__ = ["MetricEvent"]
