"""``start_metrics_server``: ``GET /metrics`` from a thread of this process.

This process's metrics registry in the text format (``_exposition``), or
another registry by ``prometheus_client``'s WSGI app (content negotiation,
gzip, OpenMetrics), behind the project's rules for anything reaching a port: 127.0.0.1 by
default; while it listens on loopback only, the ``Host`` header must name
this machine (a page elsewhere cannot read it by DNS rebinding); another
address needs a token (sent as ``Authorization: Bearer``) or an explicit
``allow_remote=True``; only ``GET /metrics``, with a bounded query string.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from pydantic import SecretStr

from llamonitor.schema.config import ConfigurationError

__all__ = ["MetricsServer", "check_listen", "is_loopback", "start_metrics_server"]

logger = logging.getLogger("llamonitor.export")

MIN_TOKEN_CHARS = 16
MAX_QUERY_STRING_BYTES = 8192
PATH = "/metrics"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret(token: str | SecretStr | None) -> str | None:
    if isinstance(token, SecretStr):
        return token.get_secret_value() or None
    return token or None


def check_listen(
    addr: str, token: str | SecretStr | None, allow_remote: bool, setting: str = "metrics"
) -> None:
    """Refuse a short token, and an address off loopback without a token or
    ``allow_remote``.

    Raises:
        ConfigurationError: names ``<setting>.token`` or ``<setting>.addr``.
    """
    secret = _secret(token)
    if secret is not None and len(secret) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"{setting}.token", f"a token must be at least {MIN_TOKEN_CHARS} characters"
        )
    if not is_loopback(addr) and secret is None and not allow_remote:
        raise ConfigurationError(
            f"{setting}.addr",
            f"serving metrics on {addr!r} (not 127.0.0.1) needs a token (every scrape then "
            "sends Authorization: Bearer <token>) or allow_remote=True (anyone who reaches "
            "the port reads the metrics)",
        )


def _host_name(host: str) -> str:
    """``localhost:9464`` -> ``localhost``; ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Guard:
    """The checks of the module docstring around ``prometheus_client``'s app."""

    def __init__(self, app: WsgiApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def refuse(status: str, why: str, *extra: tuple[str, str]) -> list[bytes]:
            body = f"{why}\n".encode()
            start_response(
                status,
                [("Content-Type", "text/plain; charset=utf-8"),
                 ("Content-Length", str(len(body))), ("Cache-Control", "no-store"), *extra],
            )
            return [body]

        if len(environ.get("QUERY_STRING", "")) > MAX_QUERY_STRING_BYTES:
            return refuse("414 URI Too Long", "the query string is too long")
        host = environ.get("HTTP_HOST")
        if self.loopback_only and (host is None or _host_name(host).lower() not in LOOPBACK_HOSTS):
            return refuse("421 Misdirected Request", "this server answers to 127.0.0.1 only")
        if self.token is not None:
            auth = environ.get("HTTP_AUTHORIZATION", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return refuse(
                    "401 Unauthorized", "a token is required: Authorization: Bearer <token>",
                    ("WWW-Authenticate", "Bearer"),
                )
        if environ.get("PATH_INFO") != PATH:
            return refuse("404 Not Found", f"the metrics are at {PATH}")

        def with_headers(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            return start_response(
                status, [*headers, ("X-Content-Type-Options", "nosniff")], *args
            )

        return self.app(environ, with_headers)


def _fast_app(registry: Any) -> WsgiApp:
    """A ``MetricsRegistry``'s text (``_exposition``), whatever the scraper accepts."""
    from llamonitor.export._exposition import CONTENT_TYPE

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = registry.render()
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        )
        return [body] if environ["REQUEST_METHOD"] == "GET" else [b""]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """A metrics server running on a thread; :meth:`stop` ends it.

    Attributes:
        port: the port it listens on (the one picked, for ``port=0``).
        url: ``http://<addr>:<port>/metrics``.
    """

    def __init__(self, httpd: Any, thread: threading.Thread, addr: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_address[1]
        host = f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        self.url = f"http://{host}:{self.port}{PATH}"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout)
        self._httpd.server_close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r}, running={self.running})"


def start_metrics_server(
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    token: str | SecretStr | None = None,
    allow_remote: bool = False,
    registry: Any = None,
    setting: str = "metrics",
) -> MetricsServer:
    """Serve ``GET /metrics`` (the Prometheus text format) from a thread.

    What it serves is :func:`~llamonitor.export.metrics_registry` by default:
    the pipeline's own metrics, and the span metrics of the running Prometheus
    exporter (``MonitorConfig(prometheus=...)``, which starts this server
    itself when its ``port`` is set).

    Args:
        port: the port (``0``: a free one, see ``.port``).
        addr: the address; loopback only unless ``token`` or ``allow_remote``.
        token: every request must send ``Authorization: Bearer <token>``
            (16 characters or more).
        allow_remote: listen off loopback without a token (anyone who
            reaches the port reads the metrics).
        registry: a ``prometheus_client.CollectorRegistry`` to serve instead
            (by ``prometheus_client``, which also speaks OpenMetrics).
        setting: the name errors give the settings (``prometheus`` from the config).

    Returns:
        The running server: ``.port``, ``.url``, ``.stop()``.

    Raises:
        ConfigurationError: a bad ``addr`` or ``token``, or the port cannot be
            bound (names ``<setting>.port``).
        ImportError: ``prometheus_client`` is missing (names the extra).
    """
    from llamonitor.export._prometheus import metrics_registry, require_client

    client = require_client()
    from llamonitor.export._exposition import MetricsRegistry

    check_listen(addr, token, allow_remote, setting)
    served = registry if registry is not None else metrics_registry()
    app = _fast_app(served) if isinstance(served, MetricsRegistry) else client.make_wsgi_app(served)
    guarded = _Guard(app, _secret(token), loopback_only=is_loopback(addr))
    server_class = client.exposition.ThreadingWSGIServer
    if ":" in addr:
        server_class = type("Server6", (server_class,), {"address_family": socket.AF_INET6})
    try:
        httpd = make_server(
            addr.strip("[]"), port, guarded, server_class, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise ConfigurationError(
            f"{setting}.port", f"cannot listen on {addr}:{port}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(
        target=httpd.serve_forever, name="llamonitor-metrics", daemon=True
    )
    thread.start()
    server = MetricsServer(httpd, thread, addr)
    logger.info("llamonitor: metrics at %s", server.url)
    return server
