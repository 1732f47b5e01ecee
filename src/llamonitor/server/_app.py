"""The ASGI app: the API routers, the UI's files, and the guard around them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from llamonitor.server._deps import ServerState
from llamonitor.server._errors import ERROR_RESPONSES, HANDLERS
from llamonitor.server._health import package_version
from llamonitor.server._security import Guard
from llamonitor.server._settings import OTLP_PATH, ServerConfig, is_loopback
from llamonitor.server._store import ServerStore

STATIC_DIR = Path(__file__).parent / "static"

ROUTERS = (
    "_health",
    "_spans",
    "_traces",
    "_sessions",
    "_aggregates",
    "_live",
    "_otlp",
    "_otlp_logs",
    "_metrics",
    "_metrics_api",
    "_retention",
    "_alerts",
    "_anomalies",
    "_agents",
    "_scores",
)
"""Modules of this package whose ``router`` the app includes, in order."""

COLLECT_ROUTERS = ("_health", "_otlp", "_otlp_logs")
"""The routers of ``llamonitor collect`` (a receiver with no UI)."""

UI_ROUTES = (
    "/",
    "/traces",
    "/traces/{rest:path}",
    "/sessions",
    "/sessions/{rest:path}",
    "/report",
    "/agents",
    "/alerts",
    "/live",
    "/spans/{rest:path}",
    "/series",
    "/series/{rest:path}",
)
"""Pages of the UI: each answers with ``index.html``, whose script reads the URL."""


def create_app(
    store: ServerStore,
    config: ServerConfig | None = None,
    writer_health: Callable[[], Any] | None = None,
    ingestor: Any = None,
    routers: tuple[str, ...] = ROUTERS,
) -> Guard:
    """The app serving ``store``: the FastAPI app (``.app``) inside the :class:`Guard`.

    ``ingestor`` (a ``llamonitor.server._ingest.Ingestor``) receives OTLP at
    ``/v1/traces``; ``routers`` other than :data:`ROUTERS` leave the UI out.

    Raises:
        ConfigurationError: ``config`` binds off loopback without a token.
    """
    config = (config or ServerConfig()).check()
    app = FastAPI(
        title="llamonitor",
        version=package_version(),
        summary="Spans, traces, sessions, cost and latency of an LLM application; read-only.",
        docs_url=None,  # Swagger UI loads from a CDN: the schema is at /api/openapi.json
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=ERROR_RESPONSES,
    )
    app.state.llamonitor = ServerState(store=store, config=config, writer_health=writer_health)
    if ingestor is not None:
        app.state.llamonitor.extras["otlp"] = ingestor
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    for name in routers:
        module = importlib.import_module(f"llamonitor.server.{name}")
        app.include_router(module.router)

    @app.get("/api/{rest:path}", include_in_schema=False)
    def unknown_api(rest: str) -> JSONResponse:
        return JSONResponse({"error": f"no such endpoint: /api/{rest}", "parameter": None}, 404)

    if routers == ROUTERS:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        def page() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

        for route in UI_ROUTES:
            app.add_api_route(route, page, methods=["GET"], include_in_schema=False)

    def refused(path: str, status: int) -> None:
        if ingestor is not None and path == OTLP_PATH:
            ingestor.count(_REFUSALS.get(status, "refused_other"))

    routes: dict[str, Any] = {}
    if ingestor is not None and "_otlp" in routers:
        from llamonitor.server._otlp import TracesRoute

        routes[OTLP_PATH] = TracesRoute(ingestor, config.otlp_max_body_bytes, app)
    return Guard(
        app,
        config.token_value,
        loopback_only=is_loopback(config.host),
        body_limits={OTLP_PATH: config.otlp_max_body_bytes,
                     "/v1/logs": config.otlp_max_body_bytes},
        on_refuse=refused,
        routes=routes,
    )


_REFUSALS = {401: "refused_unauthenticated", 413: "refused_too_large", 421: "refused_host"}
