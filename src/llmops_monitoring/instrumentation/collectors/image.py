"""``llmops_monitoring.instrumentation.collectors.image``."""

from llmops_monitoring.instrumentation.collectors._legacy import ImageCollector

__all__ = ["ImageCollector"]
