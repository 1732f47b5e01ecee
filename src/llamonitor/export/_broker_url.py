"""Broker addresses: ``redis://host:port[/db][/stream]`` and
``nats://host:port[/stream[/subject]]``, shown without their secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from llamonitor.schema.config import ConfigurationError

__all__ = [
    "DEFAULT_NATS_STREAM",
    "DEFAULT_STREAM",
    "BrokerAddress",
    "parse_broker_url",
]

DEFAULT_STREAM = "llamonitor-spans"
"""The Redis stream (and the NATS JetStream stream) spans go to by default."""
DEFAULT_NATS_STREAM = "LLAMONITOR_SPANS"

_NATS_STREAM = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_NATS_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker is and which stream (and, for NATS, subject) to use."""

    kind: str  # "redis" or "nats"
    url: str  # the server part, for the client library (secrets included)
    shown: str  # the server part without secrets
    stream: str
    subject: str = ""
    db: int = 0
    query: dict[str, str] | None = None


def _shown(scheme: str, netloc: str) -> str:
    host = netloc.rsplit("@", 1)[-1]
    user = netloc.rsplit("@", 1)[0].split(":", 1)[0] if "@" in netloc else ""
    return f"{scheme}://{user + '@' if user else ''}{host}"


def parse_broker_url(
    url: str,
    setting: str,
    stream: str | None = None,
    subject: str | None = None,
) -> BrokerAddress:
    """A broker address from ``url``; ``stream``/``subject`` (given apart) win
    over the URL's path.

    Raises:
        ConfigurationError: an unknown scheme or an invalid stream/subject name.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    segments = [s for s in parts.path.split("/") if s]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme in ("redis", "rediss", "unix"):
        db = 0
        if segments and segments[0].isdigit():
            db = int(segments.pop(0))
        name = stream or (segments[0] if segments else "") or DEFAULT_STREAM
        server = urlunsplit((scheme, parts.netloc, f"/{db}", "", ""))
        return BrokerAddress(
            "redis", server, _shown(scheme, parts.netloc), name, db=db, query=query
        )
    if scheme in ("nats", "tls"):
        name = stream or (segments[0] if segments else "") or DEFAULT_NATS_STREAM
        if not _NATS_STREAM.match(name):
            raise ConfigurationError(
                setting,
                f"{name!r} is not a JetStream stream name (letters, digits, '-' and '_')",
            )
        subj = subject or (segments[1] if len(segments) > 1 else "") or f"llamonitor.{name}"
        if not _NATS_SUBJECT.match(subj):
            raise ConfigurationError(
                setting, f"{subj!r} is not a NATS subject (tokens of letters, digits, '-', '_')"
            )
        server = urlunsplit((scheme, parts.netloc, "", "", ""))
        return BrokerAddress(
            "nats", server, _shown(scheme, parts.netloc), name, subject=subj, query=query
        )
    raise ConfigurationError(
        setting, f"unsupported broker scheme {scheme!r}; use redis://... or nats://..."
    )
