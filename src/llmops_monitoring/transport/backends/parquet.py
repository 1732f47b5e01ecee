"""``llmops_monitoring.transport.backends.parquet``: the Parquet backend."""

from llamonitor.storage.parquet import ParquetBackend

__all__ = ["ParquetBackend"]
