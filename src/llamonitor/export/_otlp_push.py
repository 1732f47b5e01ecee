"""``MetricsPusher``: the span metrics sent to an OTLP receiver every interval.

``PrometheusConfig(otlp=OTLPExporterConfig(...))`` (or
``LLMOPS_PROMETHEUS__OTLP__ENDPOINT``...): a thread sends the cumulative
``ExportMetricsServiceRequest`` of the exporter's state (``_otlp_metrics``)
through ``OTLPSender`` to ``/v1/metrics`` (or gRPC) every
``otlp_interval_seconds``, and once more when monitoring stops. The metrics are
cumulative: a push that fails is not retried or spooled, the next one carries
everything (failures are counted and logged once per outage).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llamonitor.export._metric_state import SpanMetrics

__all__ = ["MetricsPusher"]

logger = logging.getLogger("llamonitor.export")


class MetricsPusher:
    """Pushes ``state``'s metrics with ``config`` (an ``OTLPExporterConfig``).

    Raises:
        ConfigurationError: a bad OTLP setting (named under ``setting``).
        ImportError: the ``otlp`` extra is missing (naming it).
    """

    def __init__(
        self, state: SpanMetrics, config: Any, interval: float, setting: str = "prometheus.otlp"
    ) -> None:
        from llamonitor.export._otlp_send import OTLPSender

        self.state = state
        self.interval = interval
        self.resolved = config.resolve(setting)
        self.sender = OTLPSender(self.resolved)
        self.pushed = 0
        self.failed = 0
        self.last_error: str | None = None
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llamonitor-otlp-metrics",
                                        daemon=True)

    def start(self) -> MetricsPusher:
        self._thread.start()
        return self

    def push(self) -> bool:
        """Send the metrics now; False (counted, logged once) if the receiver did not take them."""
        from llamonitor.export._otlp_metrics import metrics_request

        resolved = self.resolved
        request = metrics_request(
            self.state,
            service_name=resolved.service_name or resolved.default_service_name,
            resource=resolved.resource_attributes,
        )
        try:
            self.sender.send("metrics", request)
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not self._failing:
                self._failing = True
                logger.warning(
                    "llamonitor: pushing metrics over OTLP failed (the next push, in %g s, "
                    "carries them all): %s", self.interval, self.last_error,
                )
            return False
        if self._failing:
            logger.info("llamonitor: pushing metrics over OTLP works again")
        self._failing = False
        self.pushed += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, push a last time (the spans of the last interval), close."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        try:
            self.push()
        finally:
            self.sender.close()
