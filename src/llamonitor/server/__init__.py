"""``llamonitor serve``: the web UI, the REST API and the live tail (the
``[server]`` extra: FastAPI and uvicorn).

::

    from llamonitor.server import start_server

    handle = start_server()          # the running writer's store, on 127.0.0.1:8585
    print(handle.url)
    handle.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.server._app import create_app
    from llamonitor.server._run import ServerHandle, start_server
    from llamonitor.server._settings import ServerConfig
    from llamonitor.server._store import ServerStore, open_server_store

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "ServerConfig": "llamonitor.server._settings",
    "ServerHandle": "llamonitor.server._run",
    "ServerStore": "llamonitor.server._store",
    "create_app": "llamonitor.server._app",
    "open_server_store": "llamonitor.server._store",
    "start_server": "llamonitor.server._run",
}

__all__ = [
    "ServerConfig",
    "ServerHandle",
    "ServerStore",
    "create_app",
    "open_server_store",
    "start_server",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
