"""``llmops_monitoring.instrumentation.collectors.cost``."""

from llmops_monitoring.instrumentation.collectors._legacy import CostCollector

__all__ = ["CostCollector"]
