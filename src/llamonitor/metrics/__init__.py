"""Seed 003's metrics: instruments, metric points, their store, rollups and rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.metrics._schema import (
        KINDS,
        METRIC_SCHEMA,
        METRIC_SCHEMA_VERSION,
        RESOLUTIONS,
        labels_text,
        parse_labels,
    )
    from llamonitor.metrics._store import read_points, write_points

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "KINDS": "llamonitor.metrics._schema",
    "METRIC_SCHEMA": "llamonitor.metrics._schema",
    "METRIC_SCHEMA_VERSION": "llamonitor.metrics._schema",
    "RESOLUTIONS": "llamonitor.metrics._schema",
    "labels_text": "llamonitor.metrics._schema",
    "parse_labels": "llamonitor.metrics._schema",
    "read_points": "llamonitor.metrics._store",
    "write_points": "llamonitor.metrics._store",
}

__all__ = [
    "KINDS",
    "METRIC_SCHEMA",
    "METRIC_SCHEMA_VERSION",
    "RESOLUTIONS",
    "labels_text",
    "parse_labels",
    "read_points",
    "write_points",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
