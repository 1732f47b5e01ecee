"""``PrometheusConfig``: GenAI and pipeline metrics for Prometheus.

The exporter is a sink like any other (its own thread, fed every batch the
worker converts): its backend folds each Arrow batch into a
:class:`~llamonitor.export._metric_state.SpanMetrics` with a few numpy passes,
so the decorated call pays nothing for it. The metrics are read at scrape time
by ``prometheus_client`` collectors registered in this process's private
registry (:func:`metrics_registry`), or in the one given as ``registry``, and
served by :func:`~llamonitor.export.start_metrics_server` when ``port`` is set.

This module imports ``prometheus_client`` only when a backend is made, so a
configuration can name the exporter without the extra installed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from llamonitor.export._metric_state import (
    DEFAULT_MAX_LABEL_VALUES,
    DEFAULT_MAX_SERIES,
    SpanMetrics,
)
from llamonitor.export._otlp_config import OTLPExporterConfig
from llamonitor.schema.config import ConfigurationError, ExporterConfig

__all__ = [
    "DEFAULT_PORT",
    "PrometheusConfig",
    "PrometheusSink",
    "metrics_registry",
    "metrics_server",
    "require_client",
]

logger = logging.getLogger("llamonitor.export")

DEFAULT_PORT = 9464
"""The port OpenTelemetry's Prometheus exporters listen on by default."""

EXTRA = "pip install 'llamonitor[prometheus]'"


def require_client() -> Any:
    """The ``prometheus_client`` module.

    Raises:
        ImportError: it is not installed (the message names the extra).
    """
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(f"Prometheus metrics need prometheus_client: {EXTRA}") from exc
    return prometheus_client


class PrometheusConfig(ExporterConfig):
    """Metrics for Prometheus, computed from the spans on a sink's thread.

    ``MonitorConfig(prometheus=PrometheusConfig(...))`` (or ``prometheus=True``
    for the defaults, or ``LLMOPS_PROMETHEUS__PORT=9464`` & co), or one of
    ``MonitorConfig.exporters``. See docs/prometheus.md for the metrics.

    Args:
        port: serve ``GET /metrics`` on this port while monitoring runs
            (``0``: a free one; ``None``: no server, e.g. with ``registry``).
        addr: the address to listen on; only loopback unless ``token`` or
            ``allow_remote`` is given.
        token: every scrape must send ``Authorization: Bearer <token>``
            (Prometheus: ``authorization: {credentials: ...}``); at least 16
            characters.
        allow_remote: listen off loopback without a token (the metrics name
            models, agents and operations, and their cost: only on a network
            you trust).
        max_label_values: values a label (model, agent, operation...) holds
            before new ones fold into ``other`` (counted in
            ``llamonitor_metrics_label_values_folded_total``).
        max_series: label sets a metric holds before new ones fold into the
            set whose labels are all ``other`` (counted in
            ``llamonitor_metrics_series_folded_total``).
        registry: a ``prometheus_client.CollectorRegistry`` to register the
            collectors in (e.g. ``prometheus_client.REGISTRY``, to serve them
            with the application's own metrics); default: this process's
            private one (:func:`metrics_registry`).
        otlp: also push the same metrics (``gen_ai.client.*``) to an OTLP
            receiver every ``otlp_interval_seconds`` and when monitoring stops
            (its ``metrics_endpoint``, else ``endpoint`` + ``/v1/metrics``, or
            ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``...; the ``[otlp]`` extra);
            with ``port=None`` this is an OTLP metrics exporter alone.
        otlp_interval_seconds: seconds between two pushes.
        spool: not useful here (the metrics are computed in memory): off.
    """

    kind: ClassVar[str] = "prometheus"

    spool: bool = False
    port: int | None = Field(default=DEFAULT_PORT, ge=0, le=65535)
    addr: str = "127.0.0.1"
    token: SecretStr | None = None
    allow_remote: bool = False
    max_label_values: int = Field(default=DEFAULT_MAX_LABEL_VALUES, gt=0, le=100_000)
    max_series: int = Field(default=DEFAULT_MAX_SERIES, gt=0, le=1_000_000)
    registry: Any = None
    otlp: OTLPExporterConfig | None = None
    otlp_interval_seconds: float = Field(default=60.0, gt=0)

    def check(self, setting: str = "prometheus") -> None:
        """Refuse an address off loopback without a token or ``allow_remote``,
        and a short token.

        Raises:
            ConfigurationError: naming ``<setting>.addr`` or ``<setting>.token``.
        """
        from llamonitor.export._metrics_server import check_listen

        if self.port is not None:
            check_listen(self.addr, self.token, self.allow_remote, setting)
        if self.otlp is not None:
            self.otlp.resolve(f"{setting}.otlp")

    def create_backend(self) -> PrometheusSink:
        """The sink's backend (checks the settings and the extra first).

        Raises:
            ConfigurationError: a bad ``addr``/``token`` (named).
            ImportError: ``prometheus_client`` is missing (names the extra).
        """
        require_client()
        self.check()
        return PrometheusSink(self)

    def spool_identity(self) -> dict[str, Any]:
        return {"port": self.port}


class PrometheusSink:
    """The backend of a ``PrometheusConfig`` sink: aggregates every batch,
    registers the collectors at ``initialize`` and serves them if ``port`` is set."""

    def __init__(self, config: PrometheusConfig) -> None:
        from llamonitor.export._collectors import PipelineCollector, SpanMetricsCollector

        self.config = config
        self.state = SpanMetrics(config.max_label_values, config.max_series)
        own = config.registry is not None
        self.registry = config.registry if own else metrics_registry()
        self.collectors: list[Any] = [SpanMetricsCollector(self.state)]
        if own:  # the private registry has the pipeline's collector already
            self.collectors.append(PipelineCollector())
        self.server: Any = None
        self.pusher: Any = None
        self._registered: list[Any] = []

    def initialize(self) -> None:
        """Register the collectors; start the metrics server (if ``port``).

        Raises:
            ConfigurationError: another Prometheus exporter has registered the
                same metrics (``prometheus``), or the port is taken
                (``prometheus.port``).
        """
        from llamonitor.export._metrics_server import start_metrics_server

        for collector in self.collectors:
            try:
                self.registry.register(collector)
            except ValueError as exc:  # "Duplicated timeseries in CollectorRegistry"
                self.close()
                raise ConfigurationError(
                    "prometheus",
                    f"another Prometheus exporter runs with this registry ({exc}): "
                    "configure one per process (or give each its own registry=)",
                ) from None
            self._registered.append(collector)
        cfg = self.config
        if cfg.port is not None:
            try:
                self.server = start_metrics_server(
                    cfg.port,
                    cfg.addr,
                    token=cfg.token,
                    allow_remote=cfg.allow_remote,
                    registry=self.registry,
                    setting="prometheus",
                )
            except ConfigurationError as exc:
                if exc.setting != "prometheus.port" or multiprocessing.parent_process() is None:
                    self.close()
                    raise
                # A multiprocessing child inherits its parent's configuration,
                # port included: the parent's server is no reason to fail.
                logger.warning(
                    "llamonitor: the metrics of this multiprocessing child (pid %d) are not "
                    "served (%s); give each process its own port, or scrape `llamonitor "
                    "serve` over their store", os.getpid(), exc,
                )
            else:
                _servers.append(self.server)
        if cfg.otlp is not None:
            from llamonitor.export._otlp_push import MetricsPusher

            try:
                self.pusher = MetricsPusher(
                    self.state, cfg.otlp, cfg.otlp_interval_seconds
                ).start()
            except BaseException:
                self.close()
                raise

    def write_table(self, table: Any) -> None:
        self.state.update(table)

    def close(self) -> None:
        """Push the metrics a last time (with ``otlp``), stop the server,
        unregister the collectors."""
        pusher, self.pusher = self.pusher, None
        if pusher is not None:
            pusher.stop()
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            if server in _servers:
                _servers.remove(server)
        for collector in self._registered:
            try:
                self.registry.unregister(collector)
            except KeyError:
                pass
        self._registered.clear()

    def __repr__(self) -> str:
        where = f"port {self.config.port}" if self.config.port is not None else "no server"
        return f"PrometheusSink({where})"


_registry: Any = None
_registry_lock = threading.Lock()
_servers: list[Any] = []  # the servers the running Prometheus exporters started


def metrics_server() -> Any:
    """The metrics server the running Prometheus exporter started
    (``MonitorConfig(prometheus=...)`` with a ``port``): ``.url``, ``.port``;
    ``None`` if there is none."""
    return _servers[-1] if _servers else None


def metrics_registry() -> Any:
    """This process's private ``prometheus_client.CollectorRegistry``: the
    pipeline's metrics, and the span metrics of the running Prometheus
    exporter (what ``start_metrics_server`` serves by default).

    Raises:
        ImportError: ``prometheus_client`` is missing (names the extra).
    """
    global _registry
    require_client()
    with _registry_lock:
        if _registry is None:
            from llamonitor.export._collectors import PipelineCollector
            from llamonitor.export._exposition import MetricsRegistry

            registry = MetricsRegistry()
            registry.register(PipelineCollector())
            # This process's metric instruments (llamonitor.metrics): read at
            # scrape time, so instruments made later show too.
            from llamonitor.metrics._prometheus import prometheus_collector

            registry.register(prometheus_collector())
            _registry = registry
        return _registry


def _forget_registry() -> None:
    # A forked child's exporter starts afresh: the parent's collectors (copied
    # into the child with the registry) are not its own.
    global _registry, _registry_lock
    _registry = None
    _registry_lock = threading.Lock()
    _servers.clear()


os.register_at_fork(after_in_child=_forget_registry)
