"""``llmops_monitoring.schema``: the event model and the configuration."""

from llmops_monitoring.schema.config import MonitorConfig, StorageConfig
from llmops_monitoring.schema.events import MetricEvent

__all__ = ["MetricEvent", "MonitorConfig", "StorageConfig"]
