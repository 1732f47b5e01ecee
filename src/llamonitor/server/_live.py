"""The live tail: ``GET /api/live/sse`` and ``WS /api/live/ws``.

A :class:`Hub` fans spans out to the connected clients. Spans reach it from
two feeds (``_feeds``): the in-process tap (what this process's writer has
just written) and the store poller (what other processes write to the same
store). Each client has its filters and a bounded queue: a client that reads
too slowly loses its oldest spans, and is told so by a ``{"dropped": n}``
message; it never slows the feeds or the other clients. The same span may
come from both feeds: the hub remembers the last ``DEDUPE_CAPACITY`` event
ids and sends a span once.

Threads: the feeds publish from their own threads; each client's coroutine
runs on the server's event loop and is woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, get_type_hints

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError, create_model
from starlette.websockets import WebSocketDisconnect, WebSocketState

from llamonitor.server._deps import ServerState, state
from llamonitor.server._errors import BadParameter
from llamonitor.server._query import SpanFilters, span_filters

__all__ = ["SUMMARY_COLUMNS", "Hub", "LiveClient", "TooManyClients", "router", "summarize"]

logger = logging.getLogger("llamonitor.server")

SUMMARY_COLUMNS = (
    "event_id", "session_id", "trace_id", "span_id", "parent_span_id", "operation_name",
    "operation_type", "timestamp", "duration_ms", "error", "error_type", "error_message",
    "provider", "model", "agent_name", "project_name", "input_tokens", "output_tokens",
    "total_tokens", "cost_usd",
)
"""The columns of a ``SpanSummary`` (docs/server.md)."""

TEXT_COLUMNS = ("prompt_content", "completion_content")
"""Read only when a client filters with ``q`` (it searches them too)."""

ERROR_MESSAGE_CHARS = 300
CLIENT_QUEUE_SPANS = 10_000
"""Spans a client may have waiting; past it, its oldest are dropped (and counted).
A writer's batch lands at once: the bound is well above a batch, so that a client
that reads keeps up with a burst (the spans are shared by the clients' queues:
a queue costs a pointer per span)."""
MESSAGE_SPANS = 500
"""Spans per message at most."""
DEDUPE_CAPACITY = 200_000
"""Event ids the hub remembers, to send a span seen by two feeds once."""
PING_SECONDS = 15.0
"""An idle SSE stream gets a ``: ping`` comment this often (an idle WS, a ``{}``)."""


def ping_seconds() -> float:
    return PING_SECONDS  # read at each wait (tests shorten it)


class TooManyClients(Exception):
    """``server.max_live_clients`` clients are connected already."""


def iso(value: datetime) -> str:
    """``2026-12-01T10:00:00.123456Z``: UTC, a ``Z`` (a naive time is UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the store as a JSON-safe ``SpanSummary``."""
    out: dict[str, Any] = {}
    for column in SUMMARY_COLUMNS:
        value = row.get(column)
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[column] = value
    out["error"] = bool(row.get("error"))
    message = out["error_message"]
    if isinstance(message, str) and len(message) > ERROR_MESSAGE_CHARS:
        out["error_message"] = message[:ERROR_MESSAGE_CHARS]
    return out


class LiveClient:
    """One connected client: its filters and its bounded queue of spans.

    The hub pushes from any thread (its lock held); :meth:`next_messages` runs
    on the event loop the client was made on.
    """

    def __init__(self, hub: Hub, filters: SpanFilters, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.filters = filters
        self.loop = loop
        self.spans: deque[dict[str, Any]] = deque()
        self.dropped = 0
        """Spans dropped since the last notice."""
        self.dropped_total = 0
        self.sent = 0
        self.closed = False
        self._event = asyncio.Event()
        self._wake_pending = False  # one call_soon_threadsafe per batch, not per span

    # -- the hub's side (its lock held) --------------------------------------

    def _push(self, span: dict[str, Any]) -> None:
        self.spans.append(span)
        if len(self.spans) > self.hub.queue_spans:
            self.spans.popleft()
            self.dropped += 1
            self.dropped_total += 1

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._set)
        except RuntimeError:  # the loop is closed: the server has stopped
            self.closed = True

    def _set(self) -> None:
        self._wake_pending = False
        self._event.set()

    # -- the client's coroutine --------------------------------------------

    async def next_messages(self, timeout: float) -> list[dict[str, Any]] | None:
        """What is waiting, as messages (``{"dropped": n}`` first, then
        ``{"spans": [...]}``); ``[]`` after ``timeout`` seconds with nothing;
        ``None`` once the client is closed (the server is stopping)."""
        if not self.spans and not self.dropped and not self.closed:
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
                return []
        self._event.clear()
        with self.hub.lock:
            spans = list(self.spans)
            self.spans.clear()
            dropped, self.dropped = self.dropped, 0
        if self.closed and not spans:
            return None
        messages: list[dict[str, Any]] = [{"dropped": dropped}] if dropped else []
        for i in range(0, len(spans), MESSAGE_SPANS):
            messages.append({"spans": spans[i : i + MESSAGE_SPANS]})
        self.sent += len(spans)
        return messages

    def close(self) -> None:
        self.closed = True
        with self.hub.lock:
            self._wake()


class Hub:
    """The connected clients, and the spans published to them."""

    def __init__(
        self,
        max_clients: int = 100,
        queue_spans: int | None = None,
        dedupe_capacity: int | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.queue_spans = CLIENT_QUEUE_SPANS if queue_spans is None else queue_spans
        self.dedupe_capacity = DEDUPE_CAPACITY if dedupe_capacity is None else dedupe_capacity
        self.lock = threading.Lock()
        self.has_clients = threading.Event()
        """Set while at least one client is connected (the poller waits on it)."""
        self._clients: list[LiveClient] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.published = 0
        self.duplicates = 0
        self.closed = False

    def client_count(self) -> int:
        return len(self._clients)

    def subscribe(self, filters: SpanFilters) -> LiveClient:
        """A new client, on the running event loop.

        Raises:
            TooManyClients: ``max_clients`` are connected already.
        """
        client = LiveClient(self, filters, asyncio.get_running_loop())
        with self.lock:
            if self.closed:
                client.closed = True
                return client
            if len(self._clients) >= self.max_clients:
                raise TooManyClients(
                    f"{self.max_clients} live clients are connected already "
                    "(server.max_live_clients, LLMOPS_SERVER__MAX_LIVE_CLIENTS)"
                )
            self._clients.append(client)
            self.has_clients.set()
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        with self.lock:
            if client in self._clients:
                self._clients.remove(client)
            if not self._clients:
                self.has_clients.clear()

    def close(self) -> None:
        """The server is stopping: every client's stream ends (thread-safe)."""
        with self.lock:
            self.closed = True
            clients = list(self._clients)
        for client in clients:
            client.close()

    def wants_text(self) -> bool:
        """Does a client filter on ``q`` (so the feeds read prompts and completions)?"""
        return any(c.filters.q for c in self._clients)

    def columns(self) -> tuple[str, ...]:
        """The columns the pollers read for this hub."""
        return (*SUMMARY_COLUMNS, *(TEXT_COLUMNS if self.wants_text() else ()))

    def mark_seen(self, event_ids: Iterable[str]) -> None:
        """Spans to take as sent already (the store's state when a poller starts)."""
        with self.lock:
            for event_id in event_ids:
                self._remember(event_id)

    def _remember(self, event_id: str) -> bool:
        """False if ``event_id`` was seen already (lock held)."""
        seen = self._seen
        if event_id in seen:
            return False
        seen[event_id] = None
        if len(seen) > self.dedupe_capacity:
            seen.popitem(last=False)
        return True

    def publish_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Send each row not seen before to the clients whose filters it passes
        (any thread). Returns how many rows were new."""
        new = 0
        with self.lock:
            clients = self._clients
            woken: set[int] = set()
            for row in rows:
                event_id = row.get("event_id")
                if event_id is not None and not self._remember(str(event_id)):
                    self.duplicates += 1
                    continue
                new += 1
                if not clients:
                    continue
                summary: dict[str, Any] | None = None
                for i, client in enumerate(clients):
                    if client.filters.matches(row):
                        if summary is None:
                            summary = summarize(row)
                        client._push(summary)
                        woken.add(i)
            for i in woken:
                clients[i]._wake()
            self.published += new
        return new

    def publish_table(self, table: Any) -> int:
        """:meth:`publish_rows` of an Arrow table (the columns clients need only)."""
        if table is None or table.num_rows == 0:
            return 0
        wanted = [*SUMMARY_COLUMNS, *(TEXT_COLUMNS if self.wants_text() else ())]
        names = set(table.column_names)
        rows: list[dict[str, Any]] = table.select([c for c in wanted if c in names]).to_pylist()
        return self.publish_rows(rows)


# -- the lifespan: the hub and its feeds start and stop with the app -----------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from llamonitor.server._feeds import start_feeds

    s: ServerState = app.state.llamonitor
    hub = Hub(s.config.max_live_clients)
    s.hub = hub
    feeds = start_feeds(hub, s)
    s.extras["live_feeds"] = feeds
    try:
        yield
    finally:
        hub.close()
        for feed in feeds:
            feed.stop()


router = APIRouter(tags=["live"], lifespan=lifespan)


def _hub(request: Request | WebSocket) -> Hub:
    hub = state(request).hub  # type: ignore[arg-type]
    if not isinstance(hub, Hub):  # pragma: no cover - the lifespan did not run
        raise RuntimeError("the live hub is not running (the app's lifespan did not start)")
    return hub


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=str)


def _refused(exc: TooManyClients) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc), "parameter": None}, status_code=503,
        headers={"cache-control": "no-store", "retry-after": "5"},
    )


@router.get(
    "/api/live/sse",
    response_class=StreamingResponse,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`event: spans` with `{\"spans\": [SpanSummary...]}` "
                                    "or `{\"dropped\": n}`; a `: ping` every 15 s."},
               503: {"description": "server.max_live_clients clients are connected already."}},
)
async def live_sse(
    request: Request, filters: SpanFilters = Depends(span_filters)  # noqa: B008
) -> StreamingResponse | JSONResponse:
    """Spans passing the filters as they land, as Server-Sent Events."""
    hub = _hub(request)
    try:
        client = hub.subscribe(filters)
    except TooManyClients as exc:
        return _refused(exc)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n\n"
            while True:
                messages = await client.next_messages(ping_seconds())
                if messages is None:
                    return
                if not messages:
                    yield ": ping\n\n"
                for message in messages:
                    kind = "dropped" if "dropped" in message else "spans"
                    yield f"event: {kind}\ndata: {_dumps(message)}\n\n"
        finally:
            hub.unsubscribe(client)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# The WebSocket's filters: the same parameters and checks as span_filters (a
# model made from its signature), answered with a close 1008 naming the
# parameter rather than an HTTP error.
_PARAMETERS = inspect.signature(span_filters).parameters
_HINTS = get_type_hints(span_filters, include_extras=True)
_WsFilters = create_model(  # type: ignore[call-overload]
    "LiveFilters",
    **{name: (_HINTS[name], p.default) for name, p in _PARAMETERS.items()},
)


def ws_filters(query: Iterable[tuple[str, str]]) -> SpanFilters:
    """The span filters of a WebSocket's query string.

    Raises:
        BadParameter: a parameter that is not one of them, or fails its checks.
    """
    given: dict[str, str] = {}
    for key, value in query:
        if key == "token":
            continue  # the guard's
        if key not in _PARAMETERS:
            raise BadParameter(key, "is not a filter of the live tail")
        given[key] = value
    try:
        checked = _WsFilters.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "query"
        raise BadParameter(name, str(first.get("msg", "invalid"))) from None
    return span_filters(**checked.model_dump())


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


@router.websocket("/api/live/ws")
async def live_ws(websocket: WebSocket) -> None:
    """Spans passing the filters (query parameters) as they land: JSON
    messages ``{"spans": [...]}`` (``{"dropped": n}`` when this client was too
    slow). A bad filter closes with 1008, too many clients with 1013."""
    # Accepted before a refusal: a close before the handshake is an HTTP 403
    # to the client, without the reason.
    try:
        filters = ws_filters(websocket.query_params.multi_items())
    except BadParameter as exc:
        await websocket.accept()
        await websocket.close(code=1008, reason=_reason(str(exc)))
        return
    hub = _hub(websocket)
    try:
        client = hub.subscribe(filters)
    except TooManyClients as exc:
        await websocket.accept()
        await websocket.close(code=1013, reason=_reason(str(exc)))
        return
    try:
        await websocket.accept()
        reader = asyncio.ensure_future(_until_disconnect(websocket, client))
        try:
            while True:
                messages = await client.next_messages(ping_seconds())
                if messages is None:
                    break
                for message in messages or ({},):
                    await websocket.send_text(_dumps(message))
        finally:
            reader.cancel()
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.close(code=1001, reason="the server is stopping")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away (a send after its close raises RuntimeError)
    finally:
        hub.unsubscribe(client)


async def _until_disconnect(websocket: WebSocket, client: LiveClient) -> None:
    """Read (and ignore) what the client sends; close the client when it leaves."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except Exception:
        pass
    client.close()
