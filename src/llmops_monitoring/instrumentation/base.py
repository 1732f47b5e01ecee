"""``llmops_monitoring.instrumentation.base``: the collector interface and registry.

Both are llamonitor's: a collector registered here is the one
``llamonitor.monitor_llm(collectors=["name"])`` finds.
"""

from llamonitor import CollectorRegistry, MetricCollector

__all__ = ["CollectorRegistry", "MetricCollector"]
