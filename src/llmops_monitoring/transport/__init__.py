"""``llmops_monitoring.transport``: the writer and the storage backend interface."""

from llmops_monitoring.transport.backends.base import StorageBackend
from llmops_monitoring.transport.writer import MonitoringWriter

__all__ = ["MonitoringWriter", "StorageBackend"]
