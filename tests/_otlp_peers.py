"""Real OTLP receivers for the tests: an HTTP server and a gRPC server that
decode what they get with opentelemetry-proto (protocol peers, not mocks).

Each keeps every request it accepted, and can be told to answer the next
requests with an error (``fail_next``) or to be down.
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as Python."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class ReceivedSpan:
    """One span as a receiver sees it, attributes decoded."""

    span: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: Any

    @property
    def name(self) -> str:
        return str(self.span.name)


@dataclass
class Received:
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            requests = list(self.requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = attributes(span.attributes)
                        out.append(ReceivedSpan(span, attrs, resource, ss.scope))
        return out

    def by_event(self) -> dict[str, ReceivedSpan]:
        return {s.attributes["llamonitor.event_id"]: s for s in self.spans()}


class HTTPReceiver:
    """OTLP/HTTP protobuf at ``/v1/traces`` on 127.0.0.1, on a free port.

    ``fail_next`` holds (status, headers, body) answers for the next requests
    (``None``: take that one); ``always`` answers every request so;
    ``partial`` makes every accepted request report that many spans rejected.
    """

    def __init__(self, port: int = 0) -> None:
        self.received = Received()
        self.fail_next: deque[tuple[int, dict[str, str], bytes] | None] = deque()  # None: accept
        self.always: tuple[int, dict[str, str], bytes] | None = None
        self.partial = 0
        self.answered: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path == "/v1/metrics":
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    with receiver.received.lock:
                        receiver.received.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    ok = ExportMetricsServiceResponse().SerializeToString()
                    self._answer(200, {"Content-Type": "application/x-protobuf"}, ok)
                    return
                if self.path != "/v1/traces":
                    self._answer(404, {}, b"not here")
                    return
                answer = receiver.always or (
                    receiver.fail_next.popleft() if receiver.fail_next else None
                )
                if answer is not None:
                    self._answer(*answer)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.received.lock:
                    receiver.received.requests.append(request)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.headers.append(headers)
                response = ExportTraceServiceResponse()
                if receiver.partial:
                    response.partial_success.CopyFrom(
                        ExportTracePartialSuccess(
                            rejected_spans=receiver.partial, error_message="too old"
                        )
                    )
                self._answer(200, {"Content-Type": "application/x-protobuf"},
                             response.SerializeToString())

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                receiver.answered.append(status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> HTTPReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> HTTPReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class GRPCReceiver:
    """OTLP/gRPC TraceService on 127.0.0.1, on a free port (no TLS)."""

    def __init__(self, port: int = 0) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.received = Received()
        self.fail_next: deque[Any] = deque()  # grpc.StatusCode values
        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                if receiver.fail_next:
                    context.abort(receiver.fail_next.popleft(), "told to fail")
                with receiver.received.lock:
                    receiver.received.requests.append(request)
                    receiver.received.headers.append(dict(context.invocation_metadata()))
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with receiver.received.lock:
                    receiver.received.metrics.append(request)
                return ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GRPCReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop(0).wait()
