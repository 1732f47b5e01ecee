"""``GET /metrics``: Prometheus metrics of the spans that reach this server.

The spans come the way the live tail gets them (``_feeds``): from the
in-process tap when the server runs in the writer's process and serves its
store, and from the store's poller (new Parquet files, recent SQL rows) for
what other processes write. The feeds start at the first scrape, so the
metrics count the spans that land from then on (counters start at zero, as a
restarted exporter's do: ``rate()`` and ``increase()`` are unaffected); a
span seen by both feeds counts once. In the writer's process the pipeline's
own metrics (``llamonitor_*``) are served too.

The poller's limits apply (docs/server.md): a SQL span longer than
``SQL_LOOKBACK_SECONDS``, or written long after it ended, is not counted.
Needs the ``[prometheus]`` extra (else a 503 naming it). The server's guard
applies: a token off loopback, sent by Prometheus as ``authorization``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from llamonitor.export._metric_names import COLUMNS
from llamonitor.export._metric_state import SpanMetrics
from llamonitor.export._prometheus import require_client
from llamonitor.server._deps import ServerState, state
from llamonitor.server._live import DEDUPE_CAPACITY, Hub

__all__ = ["MetricsHub", "ServeMetrics", "router"]

class MetricsHub(Hub):
    """The live feeds' hub, feeding a :class:`SpanMetrics`: always a client
    (the feeds run from the first scrape on), a span counted once by event id.

    Deduplication is per batch with set operations (no Python step per span):
    the ids of the last ``dedupe_capacity`` spans or so are remembered, in
    batches, the oldest batch forgotten first.
    """

    def __init__(self, metrics: SpanMetrics, dedupe_capacity: int = DEDUPE_CAPACITY) -> None:
        super().__init__(max_clients=0, dedupe_capacity=dedupe_capacity)
        self.metrics = metrics
        self.has_clients.set()
        self._ids: set[str] = set()
        self._batches: deque[set[str]] = deque()

    def client_count(self) -> int:
        return 1

    def wants_text(self) -> bool:
        return False

    def columns(self) -> tuple[str, ...]:
        return ("event_id", *COLUMNS)

    def _keep(self, ids: set[str]) -> None:
        """Remember ``ids`` (lock held), forgetting the oldest batches past the capacity."""
        self._ids |= ids
        self._batches.append(ids)
        while len(self._ids) > self.dedupe_capacity and len(self._batches) > 1:
            self._ids -= self._batches.popleft()

    def mark_seen(self, event_ids: Iterable[str]) -> None:
        with self.lock:
            self._keep({str(e) for e in event_ids})

    def publish_table(self, table: Any) -> int:
        if table is None or table.num_rows == 0:
            return 0
        ids = table.column("event_id")
        with self.lock:
            fresh = set(ids.to_pylist()) - self._ids
            if not fresh:
                self.duplicates += table.num_rows
                return 0
            self._keep(fresh)
        if len(fresh) < table.num_rows:
            table = table.filter(pc.is_in(ids, value_set=pa.array(list(fresh), pa.string())))
            self.duplicates += len(ids) - table.num_rows
        self.metrics.update(table)
        self.published += table.num_rows
        return int(table.num_rows)


class ServeMetrics:
    """The metrics of one app: the state, its feeds and its registry."""

    def __init__(self, s: ServerState) -> None:
        from llamonitor.export._collectors import PipelineCollector, SpanMetricsCollector
        from llamonitor.export._exposition import MetricsRegistry
        from llamonitor.metrics import prometheus_collector
        from llamonitor.server._feeds import start_feeds

        self.metrics = SpanMetrics()
        self.hub = MetricsHub(self.metrics)
        self.registry = MetricsRegistry()
        self.registry.register(SpanMetricsCollector(self.metrics))
        self.registry.register(prometheus_collector())  # this process's metric instruments
        if s.writer_health is not None:  # in the writer's process: its pipeline too
            self.registry.register(PipelineCollector())
        self.feeds = start_feeds(self.hub, s)

    def render(self) -> bytes:
        return self.registry.render()

    def stop(self) -> None:
        for feed in self.feeds:
            feed.stop()


_lock = threading.Lock()


def _metrics(s: ServerState) -> ServeMetrics:
    with _lock:
        found = s.extras.get("metrics")
        if not isinstance(found, ServeMetrics):
            found = s.extras["metrics"] = ServeMetrics(s)
        return found


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        s: ServerState = app.state.llamonitor
        with _lock:
            found = s.extras.pop("metrics", None)
        if isinstance(found, ServeMetrics):
            found.stop()


router = APIRouter(tags=["metrics"], lifespan=lifespan)


@router.get("/metrics", include_in_schema=False, response_model=None)
def metrics(request: Request) -> Response:
    """The span metrics (and, in the writer's process, the pipeline's) in the
    Prometheus text format."""
    try:
        require_client()
    except ImportError as exc:
        return JSONResponse(
            {"error": f"/metrics: {exc}", "parameter": None},
            status_code=503,
            headers={"cache-control": "no-store"},
        )
    from llamonitor.export._exposition import CONTENT_TYPE

    body = _metrics(state(request)).render()
    return Response(body, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
