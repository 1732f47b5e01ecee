"""The server's settings (pydantic-settings, environment prefix ``LLMOPS_SERVER__``)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from llamonitor.schema.config import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8585
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_QUERY_TIMEOUT_SECONDS = 10.0
MAX_QUERY_STRING_BYTES = 8192
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_POLL_INTERVAL_SECONDS = 0.5
DEFAULT_QUERY_WORKERS = 2
OTLP_PATH = "/v1/traces"
DEFAULT_OTLP_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_OTLP_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerConfig(BaseSettings):
    """How ``llamonitor serve`` (and ``start_server()``) listens and bounds its work.

    Every field can be set from the environment, e.g. ``LLMOPS_SERVER__TOKEN``.
    """

    model_config = SettingsConfigDict(env_prefix="LLMOPS_SERVER__", extra="forbid")

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    token: SecretStr | None = None
    max_page_size: int = Field(default=MAX_PAGE_SIZE, gt=0)
    query_timeout_seconds: float = Field(default=DEFAULT_QUERY_TIMEOUT_SECONDS, gt=0)
    query_workers: int = Field(default=DEFAULT_QUERY_WORKERS, gt=0, le=32)
    poll_interval_seconds: float = Field(default=DEFAULT_POLL_INTERVAL_SECONDS, gt=0)
    max_live_clients: int = Field(default=100, gt=0)
    otlp: bool = True
    """Receive OTLP traces (``POST /v1/traces``) into the served store."""
    otlp_max_body_bytes: int = Field(default=DEFAULT_OTLP_MAX_BODY_BYTES, gt=0)
    """Largest OTLP request body (compressed, as sent; also the gRPC message limit)."""
    otlp_max_decompressed_bytes: int = Field(default=DEFAULT_OTLP_MAX_DECOMPRESSED_BYTES, gt=0)
    """Largest OTLP/HTTP body once gzip-decompressed (a decompression bomb stops here)."""
    otlp_grpc_port: int | None = Field(default=None, ge=0, le=65535)
    """Also receive OTLP/gRPC on this port (on ``host``); none by default."""
    alert_rules: str | None = None
    """An alert rule file (TOML/YAML) evaluated while serving (see docs/alerts.md)."""

    def check(self) -> ServerConfig:
        """Refuse a short token, and any address but loopback without a token.

        Raises:
            ConfigurationError: names ``server.token``.
        """
        token = self.token.get_secret_value() if self.token is not None else ""
        if self.token is not None and len(token) < 16:
            raise ConfigurationError(
                "server.token", "a token must be at least 16 characters (LLMOPS_SERVER__TOKEN)"
            )
        if not is_loopback(self.host) and not token:
            raise ConfigurationError(
                "server.token",
                f"binding to {self.host!r} (not 127.0.0.1) needs a token: pass --token or set "
                "LLMOPS_SERVER__TOKEN (at least 16 characters); every request must carry it",
            )
        return self

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None
