"""What every request passes before the app sees it (a pure ASGI middleware,
so WebSockets pass it too):

- the ``Host`` header must name this machine while the server listens on
  loopback only (a page on another site cannot reach it by DNS rebinding);
- with a token, every request carries it: ``Authorization: Bearer <token>``,
  the ``llamonitor_token`` cookie, or ``?token=`` once (the page then sets the
  cookie, HttpOnly and SameSite=Strict, and drops the token from the URL);
- a WebSocket must come from the server's own origin, and a browser's call to
  ``/api/`` from another site's page (``Sec-Fetch-Site``) is refused;
- query strings and bodies are bounded;
- every response carries a Content-Security-Policy that forbids inline script,
  ``nosniff``, no framing and no referrer.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from llamonitor.server._settings import MAX_BODY_BYTES, MAX_QUERY_STRING_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE_NAME = "llamonitor_token"
TOKEN_PARAM = "token"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_name(host: str) -> str:
    """``localhost:8585`` -> ``localhost``; ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cross_site_api_call(scope: Scope, kind: str) -> bool:
    """A browser's request to ``/api/`` or a WebSocket made by another site's page
    (``Sec-Fetch-Site: cross-site`` or ``same-site``), other than the user following
    a link. Clients that are not browsers send no such header."""
    if kind == "http" and not scope.get("path", "").startswith("/api/"):
        return False
    site = _header(scope, b"sec-fetch-site")
    if site not in ("cross-site", "same-site"):
        return False
    navigates = _header(scope, b"sec-fetch-mode") == "navigate" and scope.get("method") == "GET"
    return not navigates


class Guard:
    """The checks above around ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        loopback_only: bool,
        body_limits: dict[str, int] | None = None,
        on_refuse: Callable[[str, int], None] | None = None,
        routes: dict[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only
        self.body_limits = body_limits or {}
        """Path -> its body bound, instead of ``MAX_BODY_BYTES`` (the OTLP receiver's)."""
        self.on_refuse = on_refuse
        """Called with (path, status) for each refused request (the receiver's counters)."""
        self.routes = routes or {}
        """Path -> a plain ASGI app that serves it instead of ``app`` (past the same
        checks): the OTLP receiver's ``/v1/traces``, without the framework's stack."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > MAX_QUERY_STRING_BYTES:
            await self._refuse(scope, receive, send, 414, "the query string is too long")
            return
        length = _header(scope, b"content-length")
        bad_length = length is not None and not (length.isascii() and length.isdecimal())
        limit = self.body_limits.get(scope.get("path", ""), MAX_BODY_BYTES)
        if bad_length or (length is not None and int(length) > limit):
            await self._refuse(scope, receive, send, 413, "the request body is too large")
            return
        host = _header(scope, b"host")
        if self.loopback_only and (host is None or _host_name(host).lower() not in LOOPBACK_HOSTS):
            await self._refuse(
                scope, receive, send, 421, "this server answers to localhost / 127.0.0.1 only"
            )
            return
        if kind == "websocket":
            origin = _header(scope, b"origin")
            if origin is not None and (host is None or urlsplit(origin).netloc != host):
                await self._refuse(scope, receive, send, 403, "cross-origin WebSocket refused")
                return
        if _cross_site_api_call(scope, kind):
            await self._refuse(scope, receive, send, 403, "a cross-site request to the API refused")
            return
        if self.token is not None:
            given = self._given_token(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await self._refuse(
                    scope, receive, send, 401,
                    "a token is required: Authorization: Bearer <token>, or open the page "
                    "once with ?token=<token>",
                )
                return
            if kind == "http" and self._token_in_query(scope) and scope["method"] == "GET":
                await self._set_cookie_and_redirect(scope, send)
                return
        if kind == "http":
            route = self.routes.get(scope.get("path", ""))
            await (route or self.app)(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, send)

    def _given_token(self, scope: Scope) -> str | None:
        auth = _header(scope, b"authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        cookie = _header(scope, b"cookie")
        if cookie:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(cookie)
            except Exception:
                jar = SimpleCookie()
            if COOKIE_NAME in jar:
                return str(jar[COOKIE_NAME].value)
        query: bytes = scope.get("query_string", b"")
        for key, value in parse_qsl(query.decode("latin-1")):
            if key == TOKEN_PARAM:
                return value
        return None

    @staticmethod
    def _token_in_query(scope: Scope) -> bool:
        query = scope.get("query_string", b"").decode("latin-1")
        return any(k == TOKEN_PARAM for k, _ in parse_qsl(query))

    async def _set_cookie_and_redirect(self, scope: Scope, send: Send) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != TOKEN_PARAM]
        path = "/" + quote(scope.get("path", "/")).lstrip("/")  # never //host: off this site
        location = path + (("?" + urlencode(kept)) if kept else "")
        assert self.token is not None
        cookie = f"{COOKIE_NAME}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, why: str
    ) -> None:
        if self.on_refuse is not None:
            try:
                self.on_refuse(scope.get("path", ""), status)
            except Exception:  # counting must not change the answer
                pass
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
            return
        body = json.dumps({"error": why}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() not in _OURS]
            message["headers"] = [*headers, *SECURITY_HEADERS]
        await send(message)

    return wrapped


_OURS = frozenset(name for name, _ in SECURITY_HEADERS)
