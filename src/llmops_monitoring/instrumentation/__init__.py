"""``llmops_monitoring.instrumentation``: the decorator and the collector interface."""

from llmops_monitoring.instrumentation.base import CollectorRegistry, MetricCollector
from llmops_monitoring.instrumentation.decorators import monitor_llm

__all__ = ["CollectorRegistry", "MetricCollector", "monitor_llm"]
