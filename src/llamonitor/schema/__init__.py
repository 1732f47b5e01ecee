"""The span model, its columnar schema and the configuration models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
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
        ExporterConfig,
        ModelPrice,
        MonitorConfig,
        StorageConfig,
    )
    from llamonitor.schema.events import ImageMetrics, MetricEvent, TextMetrics

# Imported at first use (see llamonitor._lazy): importing the package costs nothing more.
_EXPORTS: dict[str, str] = {
    "COLUMN_NAMES": "llamonitor.schema._columns",
    "ConfigurationError": "llamonitor.schema.config",
    "ExporterConfig": "llamonitor.schema.config",
    "GEN_AI_ATTRIBUTES": "llamonitor.schema._columns",
    "IMAGE_METRICS": "llamonitor.schema._columns",
    "ImageMetrics": "llamonitor.schema.events",
    "MetricEvent": "llamonitor.schema.events",
    "MetricGroup": "llamonitor.schema._extensions",
    "ModelPrice": "llamonitor.schema.config",
    "MonitorConfig": "llamonitor.schema.config",
    "SCHEMA": "llamonitor.schema._columns",
    "SCHEMA_VERSION": "llamonitor.schema._columns",
    "StorageConfig": "llamonitor.schema.config",
    "TEXT_METRICS": "llamonitor.schema._columns",
    "TextMetrics": "llamonitor.schema.events",
    "register_metrics": "llamonitor.schema._extensions",
}

__all__ = [
    "COLUMN_NAMES",
    "GEN_AI_ATTRIBUTES",
    "IMAGE_METRICS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TEXT_METRICS",
    "ConfigurationError",
    "ExporterConfig",
    "ImageMetrics",
    "MetricEvent",
    "MetricGroup",
    "ModelPrice",
    "MonitorConfig",
    "StorageConfig",
    "TextMetrics",
    "register_metrics",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
