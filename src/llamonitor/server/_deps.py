"""What the routes share: the store, the settings, the live hub, the writer's health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from llamonitor.server._settings import ServerConfig
from llamonitor.server._store import ServerStore


@dataclass
class ServerState:
    store: ServerStore
    config: ServerConfig
    writer_health: Callable[[], Any] | None = None
    """The running writer's ``health_check`` when the server is in its process."""
    hub: Any = None
    """The live hub (``llamonitor.server._live.Hub``), once started."""
    extras: dict[str, Any] = field(default_factory=dict)

    def live_clients(self) -> int:
        count = getattr(self.hub, "client_count", None)
        return int(count()) if callable(count) else 0


def state(request: Request) -> ServerState:
    s: ServerState = request.app.state.llamonitor
    return s
