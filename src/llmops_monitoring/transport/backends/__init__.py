"""``llmops_monitoring.transport.backends``: the storage backends."""

from llmops_monitoring.transport.backends.base import StorageBackend

__all__ = ["StorageBackend"]
