"""``llmops_monitoring.instrumentation.collectors.text``."""

from llmops_monitoring.instrumentation.collectors._legacy import MultiTextCollector, TextCollector

__all__ = ["MultiTextCollector", "TextCollector"]
