"""``OTLPSender``: one OTLP request at a time to a receiver, over HTTP
(protobuf or OTLP/JSON, with a keep-alive ``requests`` session) or gRPC (opentelemetry-proto's
stubs), for traces or metrics.

How a receiver's answer is taken (the OTLP spec's retry rules):

- accepted: the response is returned (its ``partial_success`` counted);
- the receiver is unavailable or busy (HTTP 408/429/5xx, gRPC UNAVAILABLE,
  RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED...; a connection refused, a timeout) or
  refuses *us* (HTTP 401/403/404/407, gRPC UNAUTHENTICATED, PERMISSION_DENIED,
  UNIMPLEMENTED): ``ExportUnavailable``, a transient error: the sink retries,
  then keeps the data in its spool until the receiver takes it;
- the receiver refuses the *data* (HTTP 400 and other 4xx, gRPC
  INVALID_ARGUMENT...): ``ExportRejected``: not retried.

A ``Retry-After`` header (HTTP) or ``RetryInfo`` (gRPC) is honoured: a short
one (at most ``INLINE_RETRY_AFTER_MAX_SECONDS``) is waited for once within the
call; a longer one (up to ``RETRY_AFTER_MAX_SECONDS``) makes every call until
then fail at once as unavailable, without a request.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

from llamonitor.export._otlp_config import Resolved, without_credentials

logger = logging.getLogger("llamonitor.export")

INLINE_RETRY_AFTER_MAX_SECONDS = 2.0
"""A Retry-After up to this long is waited for within the call (once)."""

RETRY_AFTER_MAX_SECONDS = 300.0
"""A longer Retry-After is cut to this."""

GZIP_LEVEL = 6

_RETRYABLE_HTTP = frozenset((408, 429, 500, 502, 503, 504))
_REFUSES_US_HTTP = frozenset((401, 403, 404, 405, 407))

_SIGNALS: dict[str, tuple[str, str, str]] = {
    # signal -> (module, request/response prefix, stub)
    "traces": (
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        "ExportTraceService",
        "TraceServiceStub",
    ),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        "ExportMetricsService",
        "MetricsServiceStub",
    ),
    "logs": (  # scores, as gen_ai.evaluation.result events (see _otlp_scores)
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        "ExportLogsService",
        "LogsServiceStub",
    ),
}


class ExportUnavailable(ConnectionError):
    """The receiver cannot take the data now (transient: retry, then spool)."""

    llamonitor_transient = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExportRejected(Exception):
    """The receiver refused the data itself (not retried)."""

    llamonitor_transient = False


def _import_extra() -> None:
    try:
        import google.protobuf  # noqa: F401
        import opentelemetry.proto  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"OTLP export needs the otlp extra: pip install 'llamonitor[otlp]' ({exc})"
        ) from exc


def _response_type(signal: str) -> Any:
    import importlib

    module, prefix, _ = _SIGNALS[signal]
    return getattr(importlib.import_module(module), prefix + "Response")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OTLPSender:
    """Sends OTLP export requests (``traces`` or ``metrics``) with one config.

    Thread-safe; one connection pool (HTTP) or channel (gRPC), opened at the
    first send.

    Args:
        config: the resolved settings (``OTLPExporterConfig(...).resolve()``).

    Raises:
        ImportError: the ``otlp`` extra is missing (naming it).
    """

    def __init__(self, config: Resolved) -> None:
        _import_extra()
        if config.protocol == "grpc":
            try:
                import grpc  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    f"OTLP over gRPC needs grpcio: pip install 'llamonitor[otlp]' ({exc})"
                ) from exc
        else:
            try:
                import requests  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    f"OTLP over HTTP needs requests: pip install 'llamonitor[otlp]' ({exc})"
                ) from exc
        self.config = config
        self._lock = threading.Lock()
        self._session: Any = None
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._not_before = 0.0  # monotonic: a Retry-After still running
        self.requests = 0
        self.bytes_sent = 0

    # -- public ---------------------------------------------------------------

    def send(self, signal: str, message: Any) -> Any:
        """Send one export request; the receiver's response message.

        Args:
            signal: ``traces`` or ``metrics``.
            message: an ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``.

        Raises:
            ExportUnavailable: try again later (transient).
            ExportRejected: the receiver refused the data.
        """
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be traces, metrics or logs, not {signal!r}")
        wait = self._not_before - time.monotonic()
        if wait > 0:
            raise ExportUnavailable(
                f"{self._where(signal)} asked to wait {wait:.1f} s more (Retry-After)", wait
            )
        for attempt in (0, 1):
            try:
                if self.config.protocol == "grpc":
                    return self._send_grpc(signal, message)
                return self._send_http(signal, message)
            except ExportUnavailable as exc:
                delay = exc.retry_after
                if delay is None:
                    raise
                delay = min(delay, RETRY_AFTER_MAX_SECONDS)
                if attempt == 0 and delay <= INLINE_RETRY_AFTER_MAX_SECONDS:
                    time.sleep(delay)
                    continue
                self._not_before = time.monotonic() + delay
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connections (idempotent)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
            if self._channel is not None:
                self._channel.close()
                self._channel = None
                self._stubs.clear()

    def _where(self, signal: str) -> str:
        return without_credentials(self.config.endpoints[signal])

    # -- HTTP -----------------------------------------------------------------

    def _http(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests

                from llamonitor import __version__

                session = requests.Session()
                kind = (
                    "application/json"
                    if self.config.protocol == "http/json"
                    else "application/x-protobuf"
                )
                session.headers.update(
                    {
                        "Content-Type": kind,
                        "User-Agent": f"llamonitor/{__version__}",
                    }
                )
                if self.config.compression == "gzip":
                    session.headers["Content-Encoding"] = "gzip"
                session.headers.update(self.config.headers)
                if self.config.certificate_file:
                    session.verify = self.config.certificate_file
                if self.config.client_certificate_file and self.config.client_key_file:
                    session.cert = (
                        self.config.client_certificate_file,
                        self.config.client_key_file,
                    )
                self._session = session
            return self._session

    def _send_http(self, signal: str, message: Any) -> Any:
        import requests

        as_json = self.config.protocol == "http/json"
        if as_json:
            from llamonitor.export import _otlp_json

            body = _otlp_json.encode(self._message(signal, message))
        else:
            body = message if isinstance(message, bytes) else message.SerializeToString()
        if self.config.compression == "gzip":
            body = gzip.compress(body, GZIP_LEVEL)
        url = self.config.endpoints[signal]
        try:
            resp = self._http().post(
                url, data=body, timeout=self.config.timeout_seconds, allow_redirects=False
            )  # a redirect would replay the credential headers to another host
        except requests.Timeout as exc:
            raise ExportUnavailable(f"{self._where(signal)} timed out: {exc}") from exc
        except requests.RequestException as exc:
            raise ExportUnavailable(f"{self._where(signal)} unreachable: {exc}") from exc
        self.requests += 1
        self.bytes_sent += len(body)
        status = resp.status_code
        if 200 <= status < 300:
            out = _response_type(signal)()
            kind = resp.headers.get("Content-Type", "json" if as_json else "protobuf")
            try:
                if resp.content and "json" in kind:
                    from llamonitor.export import _otlp_json

                    _otlp_json.decode(resp.content, out)
                elif resp.content and "protobuf" in kind:
                    out.ParseFromString(resp.content)
            except Exception:  # a receiver that answers 200 with junk took the data
                logger.debug("llamonitor: unreadable OTLP response from %s", url)
            return out
        detail = _http_detail(resp)
        text = f"{self._where(signal)} answered HTTP {status}{detail}"
        if 300 <= status < 400:  # not followed: kept (spooled) until the endpoint is fixed
            where = resp.headers.get("Location", "?")
            raise ExportUnavailable(f"{text}; redirected to {where}: set that endpoint")
        if status in _RETRYABLE_HTTP or status in _REFUSES_US_HTTP:
            retry_after = None
            if status in (429, 502, 503, 504):
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise ExportUnavailable(text, retry_after)
        raise ExportRejected(text)

    @staticmethod
    def _message(signal: str, message: Any) -> Any:
        """``message`` as the export request message (a spooled one is bytes)."""
        if not isinstance(message, bytes):
            return message
        import importlib

        module, prefix, _ = _SIGNALS[signal]
        return getattr(importlib.import_module(module), prefix + "Request").FromString(message)

    # -- gRPC -----------------------------------------------------------------

    def _stub(self, signal: str) -> Any:
        with self._lock:
            stub = self._stubs.get(signal)
            if stub is not None:
                return stub
            import importlib

            import grpc

            if self._channel is None:
                from urllib.parse import urlsplit

                parts = urlsplit(self.config.endpoints["traces"])
                port = parts.port or (443 if parts.scheme == "https" else 80)
                host = parts.hostname or "localhost"
                target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                compression = (
                    grpc.Compression.Gzip
                    if self.config.compression == "gzip"
                    else grpc.Compression.NoCompression
                )
                if self.config.insecure:
                    self._channel = grpc.insecure_channel(target, compression=compression)
                else:
                    self._channel = grpc.secure_channel(
                        target, self._credentials(), compression=compression
                    )
            module, _, stub_name = _SIGNALS[signal]
            grpc_module = importlib.import_module(module + "_grpc")
            stub = self._stubs[signal] = getattr(grpc_module, stub_name)(self._channel)
            return stub

    def _credentials(self) -> Any:
        import grpc

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.config.certificate_file),
            private_key=read(self.config.client_key_file),
            certificate_chain=read(self.config.client_certificate_file),
        )

    def _send_grpc(self, signal: str, message: Any) -> Any:
        import grpc

        message = self._message(signal, message)
        metadata = [(k.lower(), v) for k, v in self.config.headers.items()]
        try:
            out = self._stub(signal).Export(
                message, timeout=self.config.timeout_seconds, metadata=metadata or None
            )
        except grpc.RpcError as exc:
            self.requests += 1
            raise _grpc_error(exc, self._where(signal)) from exc
        self.requests += 1
        return out


_GRPC_UNAVAILABLE = frozenset(
    (
        "CANCELLED",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNAVAILABLE",
        "DATA_LOSS",
        # the receiver refuses us, not the data: kept until it is set right
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "UNIMPLEMENTED",
        "NOT_FOUND",
    )
)


def _grpc_error(exc: Any, where: str) -> Exception:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    name = getattr(code, "name", str(code))
    details = exc.details() if callable(getattr(exc, "details", None)) else ""
    text = f"{where} answered gRPC {name}" + (f": {details}" if details else "")
    if name not in _GRPC_UNAVAILABLE:
        return ExportRejected(text)
    retry_after = None
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    for key, value in trailing or ():
        if key == "google.rpc.retryinfo-bin":
            try:
                from google.rpc.error_details_pb2 import RetryInfo

                info = RetryInfo.FromString(value)
                retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            except Exception:
                retry_after = None
    return ExportUnavailable(text, retry_after)


def _http_detail(resp: Any) -> str:
    """The receiver's message (a ``google.rpc.Status`` or text), short."""
    body = resp.content or b""
    if not body:
        return ""
    if "json" in resp.headers.get("Content-Type", ""):
        from llamonitor.export._otlp_json import status_message

        message = status_message(body)
        if message:
            return f": {message[:300]}"
    if "protobuf" in resp.headers.get("Content-Type", ""):
        try:
            from google.rpc.status_pb2 import Status

            message = Status.FromString(body).message
            if message:
                return f": {message[:300]}"
        except Exception:
            pass
    text = body[:300].decode("utf-8", "replace").strip()
    return f": {text}" if text and text.isprintable() else ""
