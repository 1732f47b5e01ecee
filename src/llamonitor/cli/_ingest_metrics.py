"""An ingest worker's Prometheus metrics (the ``[prometheus]`` extra), read
from its counters at each scrape, served by ``start_metrics_server``'s
guarded server (127.0.0.1 by default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["COUNTERS", "GAUGES", "IngestCollector", "ingest_registry", "serve_metrics"]

COUNTERS = {
    "messages": "Broker messages whose spans were written and acknowledged.",
    "spans": "Spans written to the target.",
    "redeliveries": "Messages received again (taken over from another worker, or redelivered).",
    "dead_letters": "Messages sent to the dead-letter stream.",
    "duplicates": "Spans skipped because their event_id came twice in one write.",
    "write_errors": "Failed writes to the target (each retried).",
    "source_errors": "Failed calls to the broker (each retried).",
}
GAUGES = {
    "lag": "Messages in the stream not yet delivered to the group (Redis lag, NATS pending).",
    "pending": "Messages delivered to the group and not yet acknowledged.",
    "in_flight": "Messages this worker holds now.",
    "healthy": "1 while the last broker call and the last write worked.",
}


class IngestCollector:
    """A ``prometheus_client`` collector of one worker's ``health()``."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h = self.worker.health()
        for name, doc in COUNTERS.items():
            counter = CounterMetricFamily(f"llamonitor_ingest_{name}", doc)
            counter.add_metric([], float(h[name]))
            yield counter
        for name, doc in GAUGES.items():
            yield GaugeMetricFamily(f"llamonitor_ingest_{name}", doc, value=float(h[name]))


def ingest_registry(worker: Any) -> Any:
    """A ``CollectorRegistry`` holding only the worker's metrics."""
    from llamonitor.export._prometheus import require_client

    client = require_client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(worker))
    return registry


def serve_metrics(worker: Any, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve the worker's metrics at ``http://addr:port/metrics``."""
    from llamonitor.export._metrics_server import start_metrics_server

    return start_metrics_server(
        port, addr, registry=ingest_registry(worker), setting="--metrics-port"
    )
