"""``GET /api/health``: the server's version, its store, the row count, and the
writer's counters when the server runs in the instrumented process."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from llamonitor.server._deps import ServerState, state

router = APIRouter(tags=["health"])


def package_version() -> str:
    try:
        return version("llamonitor")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class StoreHealth(BaseModel):
    label: str
    kind: str
    rows: int


class Health(BaseModel):
    status: str
    version: str
    store: StoreHealth
    writer: dict[str, Any] | None = None
    live_clients: int = 0
    otlp: dict[str, Any] | None = None
    """The OTLP receiver's counters (requests, spans received / accepted /
    rejected, ``rejected_by_reason``, refusals by kind), when it receives."""


@router.get("/api/health", response_model=Health)
def health(request: Request) -> Health:
    """The server, its store and (in the instrumented process) the writer's counters."""
    s: ServerState = state(request)
    table = s.store.run("SELECT count(*) AS n FROM {rel}")
    rows = 0 if table is None else int(table.column("n")[0].as_py())
    writer = None
    if s.writer_health is not None:
        try:
            writer = dict(s.writer_health())
        except Exception as exc:  # the writer is the user's process: never fail health
            writer = {"error": repr(exc)}
    return Health(
        status="ok",
        version=package_version(),
        store=StoreHealth(label=s.store.info.label, kind=s.store.info.kind, rows=rows),
        writer=writer,
        live_clients=s.live_clients(),
        otlp=_otlp_health(s),
    )


def _otlp_health(s: ServerState) -> dict[str, Any] | None:
    ingestor = s.extras.get("otlp")
    return None if ingestor is None else dict(ingestor.health())
