"""The span model, its columnar schema and the configuration models."""

from llamonitor.schema._columns import (
    COLUMN_NAMES,
    GEN_AI_ATTRIBUTES,
    IMAGE_METRICS,
    SCHEMA,
    SCHEMA_VERSION,
    TEXT_METRICS,
)
from llamonitor.schema._extensions import MetricGroup, register_metrics
from llamonitor.schema.config import (
    ConfigurationError,
    ModelPrice,
    MonitorConfig,
    StorageConfig,
)
from llamonitor.schema.events import ImageMetrics, MetricEvent, TextMetrics

__all__ = [
    "COLUMN_NAMES",
    "GEN_AI_ATTRIBUTES",
    "IMAGE_METRICS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TEXT_METRICS",
    "ConfigurationError",
    "ImageMetrics",
    "MetricEvent",
    "MetricGroup",
    "ModelPrice",
    "MonitorConfig",
    "StorageConfig",
    "TextMetrics",
    "register_metrics",
]
