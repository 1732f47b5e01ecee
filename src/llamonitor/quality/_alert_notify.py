"""Delivering notifications: webhooks (generic JSON, Slack-compatible) and the log.

Each notifier has a thread of its own that takes its notifications from the
state's outbox in order. A request is bounded by the notifier's ``timeout``;
a failure (an error, a non-2xx answer, a timeout) is retried with exponential
backoff, up to :data:`GIVE_UP_SECONDS` after the notification was made. The
evaluation never waits for any of it, and a hanging webhook holds back only
its own notifications. A webhook's URL may hold a secret (Slack's do): logs
show its scheme and host only; headers are never logged. An error's text is
passed through :func:`redact` before it is logged, kept in the state file or
shown (``/api/alerts``, the UI): every URL in it is cut to its scheme and host,
and the notifier's own path, query, credentials and header values are taken
out wherever they appear (``http.client`` quotes a bad path without its host).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from llamonitor.quality._alert_rules import Notifier
from llamonitor.quality._alert_state import Delivery, StateStore

logger = logging.getLogger("llamonitor.alerts")

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
GIVE_UP_SECONDS = 24 * 3600.0
"""A notification still not delivered this long after it was made is dropped (logged)."""
_COLORS = {"firing": "#d93025", "resolved": "#188038"}


def safe_url(url: str) -> str:
    """``https://hooks.slack.com/…``: the URL without its path, query or credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number: said by the host alone
        port = None
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(port) if port else ''}/…"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_HIDDEN = "[redacted]"
_MIN_SECRET_CHARS = 4
"""Shorter pieces of a notifier (a path ``/x``, a header ``1``) are not taken out."""


def _safe(match: re.Match[str]) -> str:
    try:
        return safe_url(match.group(0))
    except ValueError:  # urlsplit refuses it (a bad IPv6 host): nothing of it is kept
        return f"{match.group(0).split(':', 1)[0]}://…"


def redact(text: str, notifier: Notifier | None = None) -> str:
    """``text`` (an error's) fit to log, store and show: every URL cut to its
    scheme and host (:func:`safe_url`); with ``notifier``, its URL's path,
    query, user and password and its header values also where they appear
    alone. Never raises."""
    text = _URL.sub(_safe, text)
    pieces: list[str] = []
    if notifier is not None:
        if notifier.url:
            try:
                parts = urlsplit(notifier.url)
                pieces += [parts.path, parts.query, parts.fragment, parts.username or "",
                           parts.password or ""]
                if parts.query:
                    pieces.append(f"{parts.path}?{parts.query}")
            except ValueError:
                pass
        pieces += [v.strip() for v in notifier.resolved_headers().values()]
    for piece in sorted({p for p in pieces if len(p) >= _MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(piece, _HIDDEN)
    return text


def _slack_text(text: Any) -> str:
    """Slack's control characters escaped: span data (a model name, an operation)
    cannot ping ``<!channel>`` or smuggle a ``<url|label>`` link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body (``text`` plus one attachment)."""
    fields = [
        {"title": _slack_text(k), "value": _slack_text(v), "short": True}
        for k, v in n["group"].items()
    ]
    if n.get("value") is not None:
        fields.append({"title": "value", "value": f"{n['value']:.6g}", "short": True})
    return {
        "text": _slack_text(n["summary"]),
        "attachments": [{
            "color": _COLORS.get(n["status"], "#888888"),
            "fallback": _slack_text(n["summary"]),
            "fields": fields,
            "footer": f"llamonitor · incident {n['incident']}",
        }],
    }


def body_of(notifier: Notifier, n: dict[str, Any]) -> bytes:
    payload = slack_payload(n) if notifier.type == "slack" else n
    return json.dumps(payload, allow_nan=False, default=str).encode()


def post(notifier: Notifier, n: dict[str, Any]) -> None:
    """Send ``n`` once. Raises ``OSError`` (or ``ValueError``) on any failure."""
    if notifier.type == "log":
        level = logging.WARNING if n["status"] == "firing" else logging.INFO
        logger.log(level, "%s", n["summary"])
        return
    assert notifier.url is not None
    request = urllib.request.Request(
        notifier.url, data=body_of(notifier, n), method="POST",
        headers={"content-type": "application/json", "user-agent": "llamonitor-alerts",
                 **notifier.resolved_headers()},
    )
    # No redirects followed (urllib's default handler would: a POST turned GET, headers sent on).
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=notifier.timeout) as response:
        response.read(65536)
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 1, 2, 4, ... 300."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, attempts - 1)))


class Deliverer:
    """The thread that delivers one notifier's notifications from ``state``'s outbox."""

    def __init__(
        self, notifier: Notifier, state: StateStore,
        send: Callable[[Notifier, dict[str, Any]], None] = post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.notifier = notifier
        self.state = state
        self.send = send
        self.clock = clock
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        """The last failure (shown in the UI's alerts page), kept after a later success."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-alerts-{notifier.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self.state.lock:
            self.state.changed.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.state.lock:
                d = self.state.due(self.notifier.name)
                wait = None if d is None else d.next_at - self.clock()
                if d is None or (wait is not None and wait > 0):
                    self.state.changed.wait(timeout=1.0 if wait is None else min(wait, 1.0))
                    continue
            self._deliver(d)

    def _deliver(self, d: Delivery) -> None:
        try:
            self.send(self.notifier, d.payload)
        except Exception as exc:  # any failure of the receiver: retried, never raised
            self.failures += 1
            now = self.clock()
            give_up = now - d.created >= GIVE_UP_SECONDS
            error = redact(_describe(exc), self.notifier)
            self.last_error, self.last_error_at = error, now
            if give_up:
                logger.error("alerts: notifier %r gave up on %s after %d attempts: %s",
                             self.notifier.name, d.id, d.attempts + 1, error)
            else:
                logger.warning("alerts: notifier %r (%s) failed (%s); retrying in %.0f s",
                               self.notifier.name, self._where(), error, backoff(d.attempts + 1))
            self.state.failed(d, error, now + backoff(d.attempts + 1), give_up)
            return
        self.sent += 1
        self.state.delivered(d)

    def _where(self) -> str:
        return "log" if self.notifier.url is None else safe_url(self.notifier.url)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
