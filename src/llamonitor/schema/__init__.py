"""The span model, its columnar schema and the configuration models."""

from llamonitor.schema._columns import (
    COLUMN_NAMES,
    IMAGE_METRICS,
    SCHEMA,
    SCHEMA_VERSION,
    TEXT_METRICS,
)
from llamonitor.schema.config import ConfigurationError, MonitorConfig, StorageConfig
from llamonitor.schema.events import MetricEvent

__all__ = [
    "COLUMN_NAMES",
    "IMAGE_METRICS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TEXT_METRICS",
    "ConfigurationError",
    "MetricEvent",
    "MonitorConfig",
    "StorageConfig",
]
