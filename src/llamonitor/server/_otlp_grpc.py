"""OTLP/gRPC traces (``opentelemetry.proto.collector.trace.v1.TraceService/Export``)
into the same :class:`~llamonitor.server._ingest.Ingestor` as OTLP/HTTP.

A grpcio server on its own threads, bound to the server's host (127.0.0.1 by
default). With a token, every call carries ``authorization: Bearer <token>``
metadata (``UNAUTHENTICATED`` otherwise), as every HTTP request does; binding
off loopback without a token is refused by ``ServerConfig.check``. Messages
past ``otlp_max_body_bytes`` are refused by gRPC itself
(``RESOURCE_EXHAUSTED``), bytes that are not a request are ``INVALID_ARGUMENT``
(counted); gzip-compressed calls are decompressed by gRPC. A full queue
answers ``UNAVAILABLE``, which OTLP clients retry, with a ``RetryInfo`` of
``RETRY_AFTER_SECONDS`` (as the 503's ``Retry-After``): in the trailing
metadata key ``google.rpc.retryinfo-bin`` that the OpenTelemetry Python
exporter reads, and as the details of a ``google.rpc.Status`` in
``grpc-status-details-bin`` (the gRPC rich-error form other clients read).
"""

from __future__ import annotations

import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llamonitor.schema.config import ConfigurationError
from llamonitor.server._ingest import (
    RETRY_AFTER_SECONDS,
    Ingestor,
    Refused,
    export_response,
    parse_protobuf,
)

logger = logging.getLogger("llamonitor.server")

GRPC_WORKERS = 4
"""Threads answering gRPC calls."""

DEFAULT_GRPC_PORT = 4317


SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _grpc() -> Any:
    try:
        import grpc
    except ImportError as exc:
        raise ImportError(
            "OTLP/gRPC needs the otlp extra: pip install 'llamonitor[otlp]'"
        ) from exc
    return grpc


def abort_unavailable(grpc: Any, context: Any, message: str) -> None:
    """End the call with ``UNAVAILABLE`` and a ``RetryInfo`` saying when to
    come back (the OTLP spec's throttling answer)."""
    from google.protobuf.any_pb2 import Any as AnyMessage
    from google.protobuf.duration_pb2 import Duration
    from google.rpc.error_details_pb2 import RetryInfo
    from google.rpc.status_pb2 import Status

    info = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_SECONDS))
    detail = AnyMessage()
    detail.Pack(info)
    status = Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[detail])
    context.set_trailing_metadata((
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
        ("grpc-status-details-bin", status.SerializeToString()),
    ))
    context.abort(grpc.StatusCode.UNAVAILABLE, message)


class _Malformed:
    """What the deserializer hands ``Export`` for bytes that are not a request."""

    def __init__(self, message: str) -> None:
        self.message = message


def _parse(raw: bytes) -> Any:
    try:
        return parse_protobuf(raw)
    except Refused as exc:
        return _Malformed(str(exc))


class GrpcReceiver:
    """A running OTLP/gRPC server; :meth:`stop` ends it."""

    def __init__(self, server: Any, port: int) -> None:
        self._server = server
        self.port = port

    def stop(self, grace_seconds: float = 2.0) -> None:
        """Stop taking calls; calls under way get ``grace_seconds`` to finish."""
        self._server.stop(grace_seconds).wait(grace_seconds + 1.0)


def start_grpc(
    ingestor: Ingestor, host: str, port: int, token: str | None, max_message_bytes: int
) -> GrpcReceiver:
    """Serve OTLP/gRPC on ``host:port`` (0: a free port).

    Raises:
        ConfigurationError: the port cannot be bound (names ``server.otlp_grpc_port``).
        ImportError: the ``otlp`` extra is missing (the message names it).
    """
    grpc = _grpc()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    def export(request: Any, context: Any) -> Any:
        if token is not None and not _authorized(context, token):
            ingestor.count("refused_unauthenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "a token is required: authorization: Bearer <token> metadata")
        if isinstance(request, _Malformed):
            ingestor.count("refused_malformed")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            outcome = ingestor.export(request)
        except Refused as exc:
            abort_unavailable(grpc, context, str(exc))
        return export_response(outcome)

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=_parse,  # a bad message reaches export: counted, explained
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        ),
    })
    server = grpc.server(
        ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="llamonitor-otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    from llamonitor.server._otlp_logs import grpc_logs_handler  # scores (gen_ai.evaluation.result)

    server.add_generic_rpc_handlers((handler, grpc_logs_handler(grpc, ingestor, token)))
    address = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        bound = 0
        logger.debug("gRPC bind failed: %r", exc)
    if not bound:
        server.stop(0)
        raise ConfigurationError(
            "server.otlp_grpc_port", f"cannot listen for OTLP/gRPC on {address}"
        )
    server.start()
    return GrpcReceiver(server, bound)


def _authorized(context: Any, token: str) -> bool:
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return hmac.compare_digest(value[7:].strip().encode(), token.encode())
    return False
