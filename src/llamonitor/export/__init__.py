"""Exporters: sinks fed every batch of spans beside storage (``MonitorConfig.exporters``):
OTLP, console...

``OTLPExporterConfig`` needs the ``otlp`` extra only when it starts sending
(``pip install 'llamonitor[otlp]'``); importing this package needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.export._otlp_backend import OTLPSpanBackend
    from llamonitor.export._otlp_config import OTLPExporterConfig
    from llamonitor.export._otlp_send import ExportRejected, ExportUnavailable, OTLPSender
    from llamonitor.export._otlp_spans import SpanEncoder
    from llamonitor.export.console import ConsoleExporterConfig, format_span

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "ConsoleExporterConfig": "llamonitor.export.console",
    "ExportRejected": "llamonitor.export._otlp_send",
    "ExportUnavailable": "llamonitor.export._otlp_send",
    "OTLPExporterConfig": "llamonitor.export._otlp_config",
    "OTLPSender": "llamonitor.export._otlp_send",
    "OTLPSpanBackend": "llamonitor.export._otlp_backend",
    "SpanEncoder": "llamonitor.export._otlp_spans",
    "format_span": "llamonitor.export.console",
}

__all__ = [
    "ConsoleExporterConfig",
    "ExportRejected",
    "ExportUnavailable",
    "OTLPExporterConfig",
    "OTLPSender",
    "OTLPSpanBackend",
    "SpanEncoder",
    "format_span",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
