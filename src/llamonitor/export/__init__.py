"""Exporters: sinks that send spans, or metrics computed from them, elsewhere.

- Prometheus (the ``[prometheus]`` extra): :class:`PrometheusConfig`,
  :func:`start_metrics_server`, :func:`metrics_registry`,
  :func:`metrics_server`; the OTLP form :func:`metrics_request` (``[otlp]``).
  See docs/prometheus.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.export._metric_state import SpanMetrics
    from llamonitor.export._metrics_server import MetricsServer, start_metrics_server
    from llamonitor.export._otlp_metrics import metrics_request
    from llamonitor.export._prometheus import PrometheusConfig, metrics_registry, metrics_server

# Imported at first use (see llamonitor._lazy): importing the package costs nothing more.
_EXPORTS: dict[str, str] = {
    "MetricsServer": "llamonitor.export._metrics_server",
    "PrometheusConfig": "llamonitor.export._prometheus",
    "SpanMetrics": "llamonitor.export._metric_state",
    "metrics_registry": "llamonitor.export._prometheus",
    "metrics_request": "llamonitor.export._otlp_metrics",
    "metrics_server": "llamonitor.export._prometheus",
    "start_metrics_server": "llamonitor.export._metrics_server",
}

__all__ = [
    "MetricsServer",
    "PrometheusConfig",
    "SpanMetrics",
    "metrics_registry",
    "metrics_request",
    "metrics_server",
    "start_metrics_server",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
