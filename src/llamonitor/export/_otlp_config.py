"""``OTLPExporterConfig``: where and how spans are sent, from arguments or the
``OTEL_EXPORTER_OTLP_*`` environment variables (the OpenTelemetry spec's rules)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from llamonitor.export._otlp_ids import parse_key_values
from llamonitor.export._otlp_semconv import SEMCONV_MODES, semconv_from_env
from llamonitor.schema.config import ConfigurationError, ExporterConfig

PROTOCOLS = ("http/protobuf", "http/json", "grpc")
COMPRESSIONS = ("gzip", "none")
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_SPANS_PER_REQUEST = 1000
SIGNALS = ("traces", "metrics", "logs")


@dataclass(frozen=True)
class Resolved:
    """Every setting of an ``OTLPExporterConfig`` made concrete (see ``resolve``)."""

    protocol: str
    endpoints: dict[str, str]
    headers: dict[str, str]
    compression: str
    timeout_seconds: float
    insecure: bool
    certificate_file: str | None
    client_key_file: str | None
    client_certificate_file: str | None
    semconv: str
    service_name: str | None
    default_service_name: str
    resource_attributes: dict[str, str] = field(default_factory=dict)


def _env(env: Mapping[str, str], *names: str) -> tuple[str | None, str | None]:
    """The first of ``names`` set (non-empty) in ``env``, and which it is."""
    for name in names:
        value = env.get(name)
        if value is not None and value.strip():
            return value.strip(), name
    return None, None


def _otel(signal: str, what: str) -> tuple[str, str]:
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{what}", f"OTEL_EXPORTER_OTLP_{what}"


def without_credentials(url: str) -> str:
    """``url`` without user, password, query and fragment (what may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OTLPExporterConfig(ExporterConfig):
    """Send every span to an OTLP receiver (an OpenTelemetry Collector, Jaeger,
    Tempo, Phoenix, Langfuse, a Datadog Agent...), as a sink beside storage:
    isolated, retried, and spooled to disk while the receiver is down.

    Every setting left ``None`` comes from the OpenTelemetry environment
    variables (the signal-specific ``OTEL_EXPORTER_OTLP_TRACES_*`` first,
    then ``OTEL_EXPORTER_OTLP_*``), else the spec's default.

    Args:
        endpoint: the base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); over HTTP
            ``/v1/traces`` is appended. Default ``http://localhost:4318``
            (HTTP) or ``http://localhost:4317`` (gRPC).
        traces_endpoint: the traces URL, used as it is
            (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``).
        metrics_endpoint: the metrics URL, used as it is
            (``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``), for OTLP metrics sent
            with the same settings.
        logs_endpoint: the logs URL, used as it is
            (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``): where scores go, as
            ``gen_ai.evaluation.result`` events (docs/scores.md).
        scores: send scores (``llamonitor.score()``, evaluators, feedback)
            to the logs endpoint, as a sink of their own (default on).
        protocol: ``http/protobuf`` (default), ``http/json`` (OTLP/JSON:
            hex ids, integer enums, ``Content-Type: application/json``) or
            ``grpc`` (``OTEL_EXPORTER_OTLP_PROTOCOL``).
        headers: sent with every request, e.g. an API key
            (``OTEL_EXPORTER_OTLP_HEADERS``: ``k=v,k2=v2``, URL-encoded).
        compression: ``gzip`` or ``none`` (default; ``OTEL_EXPORTER_OTLP_COMPRESSION``).
        timeout_seconds: of one request (default 10; ``OTEL_EXPORTER_OTLP_TIMEOUT``
            is in milliseconds, as the spec says).
        insecure: gRPC without TLS; default: TLS unless the endpoint is
            ``http://`` (``OTEL_EXPORTER_OTLP_INSECURE``).
        certificate_file: CA bundle to verify the receiver
            (``OTEL_EXPORTER_OTLP_CERTIFICATE``).
        client_key_file: private key of a client certificate
            (``OTEL_EXPORTER_OTLP_CLIENT_KEY``).
        client_certificate_file: client certificate for mTLS
            (``OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE``).
        semconv: ``latest`` GenAI conventions, ``v1.36`` names, or ``both``;
            default from ``OTEL_SEMCONV_STABILITY_OPT_IN`` (see docs/otel.md).
        service_name: ``service.name`` of every span; default: the span's
            ``project_name``, else ``OTEL_SERVICE_NAME``, else ``llamonitor``.
        resource_attributes: more resource attributes, beside those of
            ``OTEL_RESOURCE_ATTRIBUTES``.
        max_spans_per_request: a batch is sent in requests of at most this many spans.
        spool: keep what the receiver could not take and send it when it is back.
    """

    kind: ClassVar[str] = "otlp"

    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    scores: bool = True
    protocol: str | None = None
    headers: dict[str, str] | None = None
    compression: str | None = None
    timeout_seconds: float | None = None
    insecure: bool | None = None
    certificate_file: str | None = None
    client_key_file: str | None = None
    client_certificate_file: str | None = None
    semconv: str | None = None
    service_name: str | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    max_spans_per_request: int = Field(default=DEFAULT_MAX_SPANS_PER_REQUEST, gt=0)

    def check(self, setting: str = "otlp") -> None:
        """Raise ``ConfigurationError`` naming ``<setting>.<field>`` for a bad value.

        Raises:
            ConfigurationError: a setting or its environment variable is invalid.
        """
        self.resolve(setting)

    def resolve(
        self, setting: str = "otlp", environ: Mapping[str, str] | None = None
    ) -> Resolved:
        """Every setting made concrete: the argument, else its environment variable, else
        the default.

        Raises:
            ConfigurationError: a setting or its environment variable is invalid.
        """
        env = os.environ if environ is None else environ

        def bad(name: str, message: str, var: str | None) -> ConfigurationError:
            where = f" (from {var})" if var else ""
            return ConfigurationError(f"{setting}.{name}", message + where)

        protocol, var = self.protocol, None
        if protocol is None:
            protocol, var = _env(env, *_otel("traces", "PROTOCOL"))
        protocol = (protocol or "http/protobuf").strip().lower()
        if protocol not in PROTOCOLS:
            raise bad("protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}", var)

        insecure, var = self.insecure, None
        if insecure is None:
            raw, var = _env(env, *_otel("traces", "INSECURE"))
            if raw is not None and raw.lower() not in ("true", "false"):
                raise bad("insecure", f"{raw!r} is not true or false", var)
            insecure = raw is not None and raw.lower() == "true"
        endpoints = {
            signal: self._endpoint(signal, protocol, insecure, env, bad) for signal in SIGNALS
        }

        headers = self.headers
        if headers is None:
            raw, var = _env(env, *_otel("traces", "HEADERS"))
            try:
                headers = parse_key_values(raw or "", var or "headers")
            except ValueError as exc:
                raise bad("headers", str(exc), None) from None
        for key, text in headers.items():
            if not key or any(c in key for c in "\r\n:") or any(c in text for c in "\r\n"):
                raise bad("headers", f"{key!r} is not a valid header", None)

        compression, var = self.compression, None
        if compression is None:
            compression, var = _env(env, *_otel("traces", "COMPRESSION"))
        compression = (compression or "none").strip().lower()
        if compression not in COMPRESSIONS:
            raise bad(
                "compression", f"{compression!r} is not one of {', '.join(COMPRESSIONS)}", var
            )

        timeout = self.timeout_seconds
        if timeout is None:
            raw, var = _env(env, *_otel("traces", "TIMEOUT"))
            if raw is None:
                timeout = DEFAULT_TIMEOUT_SECONDS
            else:
                try:
                    timeout = float(raw) / 1000.0  # the spec: milliseconds
                except ValueError:
                    raise bad("timeout_seconds", f"{raw!r} is not a number", var) from None
        if not timeout > 0 or timeout == float("inf"):
            raise bad("timeout_seconds", f"{timeout!r} must be a positive number of seconds", None)

        insecure = urlsplit(endpoints["traces"]).scheme == "http"

        files: dict[str, str | None] = {}
        for name, what in (
            ("certificate_file", "CERTIFICATE"),
            ("client_key_file", "CLIENT_KEY"),
            ("client_certificate_file", "CLIENT_CERTIFICATE"),
        ):
            value: str | None = getattr(self, name)
            var = None
            if value is None:
                value, var = _env(env, *_otel("traces", what))
            if value is not None and not os.path.isfile(value):
                raise bad(name, f"{value!r} is not a file", var)
            files[name] = value
        if (files["client_key_file"] is None) != (files["client_certificate_file"] is None):
            raise bad("client_key_file", "a client key needs a client certificate and back", None)

        semconv, var = self.semconv, None
        if semconv is None:
            semconv = semconv_from_env(env)
        if semconv not in SEMCONV_MODES:
            raise bad("semconv", f"{semconv!r} is not one of {', '.join(SEMCONV_MODES)}", var)

        raw, var = _env(env, "OTEL_RESOURCE_ATTRIBUTES")
        try:
            resource = parse_key_values(raw or "", "OTEL_RESOURCE_ATTRIBUTES")
        except ValueError as exc:
            raise bad("resource_attributes", str(exc), None) from None
        resource.update(self.resource_attributes)
        env_service, _ = _env(env, "OTEL_SERVICE_NAME")
        default_service = env_service or resource.pop("service.name", None) or "llamonitor"
        resource.pop("service.name", None)

        return Resolved(
            protocol=protocol,
            endpoints=endpoints,
            headers=dict(headers),
            compression=compression,
            timeout_seconds=float(timeout),
            insecure=bool(insecure),
            certificate_file=files["certificate_file"],
            client_key_file=files["client_key_file"],
            client_certificate_file=files["client_certificate_file"],
            semconv=semconv,
            service_name=self.service_name,
            default_service_name=default_service,
            resource_attributes=resource,
        )

    def _endpoint(
        self, signal: str, protocol: str, insecure: bool, env: Mapping[str, str], bad: Any
    ) -> str:
        """The URL of ``signal``: its own endpoint as it is, else the base one
        (plus ``/v1/<signal>`` over HTTP), else the default."""
        own_name = f"{signal}_endpoint"
        own = getattr(self, own_name)
        base, var, name = self.endpoint, None, "endpoint"
        if own is not None:
            url, var, name, as_is = own, None, own_name, True
        elif base is not None:
            url, as_is = base, False  # an argument beats the environment
        else:
            url, var = _env(env, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
            as_is = url is not None
            if url is not None:
                name = own_name
            else:
                url, var = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
        if url is None:
            url = DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT
        url = url.strip()
        if protocol == "grpc" and "://" not in url:
            url = ("http://" if insecure else "https://") + url  # host:port: INSECURE decides
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad(name, f"{without_credentials(url)!r} is not an http:// or https:// URL", var)
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise bad(name, f"{without_credentials(url)!r} has an invalid port", var) from None
        if any(c.isspace() for c in url):
            raise bad(name, "the URL contains whitespace", var)
        if protocol != "grpc" and not as_is:
            path = parts.path.rstrip("/")
            suffix = f"/v1/{signal}"
            if not path.endswith(suffix):
                url = urlunsplit(parts._replace(path=path + suffix))
        return str(url)

    def spool_identity(self) -> dict[str, Any]:
        """The receiver (its URL without credentials) and the protocol."""
        try:
            got = self.resolve()
        except ConfigurationError:
            return {"endpoint": without_credentials(self.traces_endpoint or self.endpoint or "")}
        return {"endpoint": without_credentials(got.endpoints["traces"]), "protocol": got.protocol}

    def create_backend(self) -> Any:
        """The sink's backend: spans to OTLP requests, sent with an ``OTLPSender``.

        Raises:
            ConfigurationError: a setting is invalid.
            ImportError: the ``otlp`` extra is not installed.
        """
        resolved = self.resolve()
        with _needs_otlp_extra():
            from llamonitor.export._otlp_backend import OTLPSpanBackend
        return OTLPSpanBackend(resolved, self.max_spans_per_request)

    def create_score_backend(self) -> Any:
        """The score sink's backend (``None`` when ``scores`` is off): scores
        to ``gen_ai.evaluation.result`` log records (see ``_otlp_scores``).

        Raises:
            ConfigurationError: a setting is invalid.
            ImportError: the ``otlp`` extra is not installed.
        """
        if not self.scores:
            return None
        resolved = self.resolve()
        with _needs_otlp_extra():
            from llamonitor.export._otlp_scores import OTLPScoreBackend
        return OTLPScoreBackend(resolved, self.max_spans_per_request)

    def score_spool_identity(self) -> dict[str, Any]:
        """The logs receiver (its URL without credentials) and the protocol."""
        try:
            got = self.resolve()
        except ConfigurationError:
            return {"endpoint": without_credentials(self.logs_endpoint or self.endpoint or "")}
        return {"endpoint": without_credentials(got.endpoints["logs"]), "protocol": got.protocol}


@contextlib.contextmanager
def _needs_otlp_extra() -> Iterator[None]:
    """An ImportError inside names the extra that brings the OTLP packages."""
    try:
        yield
    except ImportError as exc:
        raise ImportError(
            f"OTLP export needs the otlp extra: pip install 'llamonitor[otlp]' ({exc})"
        ) from exc
