"""Exporters: sinks that send every span, or metrics computed from them,
elsewhere beside storage.

- OTLP: ``OTLPExporterConfig`` needs the ``otlp`` extra only when it starts
  sending (``pip install 'llamonitor[otlp]'``).
- Prometheus (the ``[prometheus]`` extra): :class:`PrometheusConfig`,
  :func:`start_metrics_server`, :func:`metrics_registry`,
  :func:`metrics_server`; the OTLP form of the metrics :func:`metrics_request`
  (``[otlp]``). See docs/prometheus.md.

Importing this package needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.export._metric_state import SpanMetrics
    from llamonitor.export._metrics_server import MetricsServer, start_metrics_server
    from llamonitor.export._otlp_backend import OTLPSpanBackend
    from llamonitor.export._otlp_config import OTLPExporterConfig
    from llamonitor.export._otlp_metrics import metrics_request
    from llamonitor.export._otlp_send import ExportRejected, ExportUnavailable, OTLPSender
    from llamonitor.export._otlp_spans import SpanEncoder
    from llamonitor.export._prometheus import PrometheusConfig, metrics_registry, metrics_server
    from llamonitor.export.console import ConsoleExporterConfig, format_span

# Imported at first use (see llamonitor._lazy): importing the package costs nothing more.
_EXPORTS: dict[str, str] = {
    "ConsoleExporterConfig": "llamonitor.export.console",
    "ExportRejected": "llamonitor.export._otlp_send",
    "ExportUnavailable": "llamonitor.export._otlp_send",
    "MetricsServer": "llamonitor.export._metrics_server",
    "OTLPExporterConfig": "llamonitor.export._otlp_config",
    "OTLPSender": "llamonitor.export._otlp_send",
    "OTLPSpanBackend": "llamonitor.export._otlp_backend",
    "PrometheusConfig": "llamonitor.export._prometheus",
    "SpanEncoder": "llamonitor.export._otlp_spans",
    "SpanMetrics": "llamonitor.export._metric_state",
    "format_span": "llamonitor.export.console",
    "metrics_registry": "llamonitor.export._prometheus",
    "metrics_request": "llamonitor.export._otlp_metrics",
    "metrics_server": "llamonitor.export._prometheus",
    "start_metrics_server": "llamonitor.export._metrics_server",
}

__all__ = [
    "ConsoleExporterConfig",
    "ExportRejected",
    "ExportUnavailable",
    "MetricsServer",
    "OTLPExporterConfig",
    "OTLPSender",
    "OTLPSpanBackend",
    "PrometheusConfig",
    "SpanEncoder",
    "SpanMetrics",
    "format_span",
    "metrics_registry",
    "metrics_request",
    "metrics_server",
    "start_metrics_server",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
