"""``llmops_monitoring.instrumentation.decorators``: ``@monitor_llm`` (llamonitor's)."""

from llamonitor import monitor_llm

__all__ = ["monitor_llm"]
