"""Exporters: sinks fed every batch of spans beside storage (``MonitorConfig.exporters``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.export.console import ConsoleExporterConfig, format_span

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "ConsoleExporterConfig": "llamonitor.export.console",
    "format_span": "llamonitor.export.console",
}

__all__ = ["ConsoleExporterConfig", "format_span"]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
