"""Running the app: in the foreground (``llamonitor serve``) or on a thread of
the instrumented process (``start_server()``, ``initialize_monitoring(serve=True)``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamonitor.schema.config import ConfigurationError
from llamonitor.server._app import ROUTERS, create_app
from llamonitor.server._receive import Receivers, own_writer, receivers
from llamonitor.server._security import Guard
from llamonitor.server._settings import ServerConfig
from llamonitor.server._store import ServerStore, open_server_store

logger = logging.getLogger("llamonitor.server")

__all__ = ["ServerHandle", "bind", "serve_forever", "start_server", "url_of"]

STARTUP_TIMEOUT_SECONDS = 10.0
"""How long ``start_server`` waits for the server to be up."""


def bind(config: ServerConfig) -> socket.socket:
    """The listening socket (so a taken port fails now, naming the setting).

    Raises:
        ConfigurationError: the address cannot be bound (names ``server.port``).
    """
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host.strip("[]"), config.port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            "server.port", f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, config: ServerConfig) -> str:
    port = sock.getsockname()[1]
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _state(app: Guard) -> Any:
    """The app's ``ServerState``."""
    return getattr(app.app, "state").llamonitor  # noqa: B009 - Guard.app is an ASGI callable


def _close_live(app: Guard) -> None:
    """End the live streams, so that the connections close and the shutdown
    does not wait ``timeout_graceful_shutdown`` for them."""
    hub = getattr(_state(app), "hub", None)
    if hub is not None:
        hub.close()


def _uvicorn_server(app: Guard, config: ServerConfig) -> Any:
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError(
            "llamonitor serve needs the server extra: pip install 'llamonitor[server]'"
        ) from exc

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            _close_live(app)  # before uvicorn waits for the connections to finish
            await super().shutdown(sockets)

    return Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            ws_max_size=64 * 1024,
        )
    )


def serve_forever(
    store: ServerStore,
    config: ServerConfig,
    announce: Callable[[str], None] = print,
    receive: Receivers | None = None,
    routers: tuple[str, ...] = ROUTERS,
) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM); ``receive`` (the OTLP
    receiver's parts) is closed after the last request: its writer flushed."""
    try:
        writer_health = None
        if receive is not None and receive.ingestor.owned:
            writer_health = receive.ingestor.writer.health_check
        app = create_app(
            store, config, writer_health,
            ingestor=None if receive is None else receive.ingestor, routers=routers,
        )
        # The receiver's writer taps the live tail: received spans show at once.
        _state(app).extras["live_tap"] = receive is not None
        sock = bind(config)
        server = _uvicorn_server(app, config)
        announce(url_of(sock, config))
        previous = _exit_on_sigterm()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    finally:
        if receive is not None:
            receive.close()


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _exit_on_sigterm() -> Any:
    """SIGTERM ends the command through ``SystemExit`` (so the ``finally`` that
    flushes the receiver's writer runs): uvicorn handles the signal, shuts down,
    then raises it again with the handler found before it -- this one. Returns
    the handler replaced (``None`` off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _sigterm)


class ServerHandle:
    """A server running on a thread of this process; :meth:`stop` ends it."""

    def __init__(
        self,
        server: Any,
        thread: threading.Thread,
        url: str,
        app: Guard,
        receive: Receivers | None = None,
    ) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.app = app
        self.receive = receive
        """The OTLP receiver (``receive.grpc.port`` is the gRPC port), if any."""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread (at most ``timeout`` seconds);
        live clients are disconnected."""
        _close_live(self.app)
        self._server.should_exit = True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        receive, self.receive = self.receive, None
        if receive is not None:
            receive.close()  # after the last request: its own writer is flushed

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"ServerHandle({self.url!r}, running={self.running})"


def _is_writer_store(directory: Path) -> bool:
    """Is ``directory`` the Parquet store the running writer writes?"""
    from llamonitor.transport.writer import MonitoringWriter

    writer = MonitoringWriter.get_instance_sync()
    if writer is None or writer.config.storage.backend != "parquet":
        return False
    try:
        return Path(writer.config.storage.output_dir).resolve() == directory.resolve()
    except OSError:
        return False


def _writer_store() -> tuple[Path, str | None, Callable[[], Any] | None]:
    """The directory / DSN the running writer writes, and its ``health_check``."""
    from llamonitor.transport.writer import MonitoringWriter

    writer = MonitoringWriter.get_instance_sync()
    if writer is None:
        return Path("./monitoring_data"), None, None
    storage = writer.config.storage
    backend = storage.backend if isinstance(storage.backend, str) else ""
    if backend in ("postgres", "postgresql", "mysql", "mariadb", "sqlite"):
        dsn = storage.connection_string
        if dsn is None:
            raise ConfigurationError("storage.connection_string", "the store has none")
        return Path(storage.output_dir), dsn.get_secret_value(), writer.health_check
    if backend == "jsonl":
        name = str(storage.options.get("file_name", "events.jsonl"))  # as JSONLBackend names it
        return Path(storage.output_dir) / name, None, writer.health_check
    if backend != "parquet":
        raise ConfigurationError(
            "storage.backend",
            f"the server reads Parquet, JSON Lines and SQL stores, not {storage.backend!r}: "
            "pass directory= or dsn= to start_server()",
        )
    return Path(storage.output_dir), None, writer.health_check


def start_server(
    config: ServerConfig | None = None,
    directory: str | Path | None = None,
    dsn: str | None = None,
    table: str | None = None,
) -> ServerHandle:
    """Serve the UI and API from a thread of this process.

    Without ``directory`` or ``dsn``, it serves the store the running writer
    (``initialize_monitoring``) writes, with the writer's counters in
    ``/api/health`` and every span written shown live at once (the writer's
    primary sink taps the live tail; so does a ``directory`` that is the
    writer's Parquet store). Spans other processes write to the store show
    within ``poll_interval_seconds``.

    Args:
        config: host, port, token... (default: ``LLMOPS_SERVER__*``; port 8585).
        directory: a Parquet output directory to serve instead.
        dsn: a database to serve instead.
        table: the span table of ``dsn``.

    Returns:
        The running server: ``.url``, ``.stop()``.

    Raises:
        ConfigurationError: a bad setting (named), or the port is taken.
    """
    config = (config or ServerConfig()).check()
    writer_health: Callable[[], Any] | None = None
    if directory is None and dsn is None:
        where, dsn, writer_health = _writer_store()
        tap = writer_health is not None
    else:
        where = Path(directory) if directory is not None else Path("./monitoring_data")
        tap = dsn is None and _is_writer_store(where)
    store = open_server_store(
        where, dsn, table, config.query_workers, config.query_timeout_seconds
    )
    receive = None
    try:
        if config.otlp:
            receive = _receivers_for(config, directory, dsn, table, where, tap)
        app = create_app(
            store, config, writer_health, ingestor=None if receive is None else receive.ingestor
        )
        # Not for the receiver's own writer: taps hear every writer of the
        # process, and the application's may write another store. Its spans
        # reach the live tail through the store's poller.
        _state(app).extras["live_tap"] = tap
        sock = bind(config)
    except BaseException:
        store.close()
        if receive is not None:
            receive.close()
        raise
    server = _uvicorn_server(app, config)

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except Exception:  # pragma: no cover - logged, never raised into the app
            logger.exception("llamonitor server stopped")
        finally:
            sock.close()
            store.close()

    thread = threading.Thread(target=run, name="llamonitor-server", daemon=True)
    thread.start()
    # Serving (the lifespan ran: the live tail's feeds are up) when this returns.
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    return ServerHandle(server, thread, url_of(sock, config), app, receive)


def _receivers_for(
    config: ServerConfig,
    directory: str | Path | None,
    dsn: str | None,
    table: str | None,
    where: Path,
    writers_store: bool,
) -> Receivers | None:
    """The OTLP receiver of ``start_server``: into the running writer when the
    server serves its store, else into a writer of its own."""
    from llamonitor.transport.writer import MonitoringWriter

    if (directory is None and dsn is None) or writers_store:
        return receivers(config, MonitoringWriter.get_instance_sync(), owned=False)
    return receivers(config, own_writer(where, dsn, table), owned=True)
