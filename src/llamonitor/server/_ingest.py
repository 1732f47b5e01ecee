"""The OTLP receiver's core, shared by OTLP/HTTP and OTLP/gRPC: decode a trace
request, map its spans (:func:`llamonitor.otel.rows_from_request`), apply the
content policy (``llamonitor.otel._redact``), queue the rows in a writer,
count everything.

What a success means: every span that was not rejected is in the writer's
queue, the lossless part of the pipeline (from there on a failing store is
retried and spooled to disk, never dropped silently). The queue's bounds are
``max_queue_size`` rows and ``max_queue_bytes`` of their real size (each
row's share of the request's Arrow table). When the queue has no room for a
request's spans within :data:`QUEUE_WAIT_SECONDS`, none is queued and the
request is refused as retryable (HTTP 503 with ``Retry-After``, gRPC
``UNAVAILABLE``): the client keeps the spans and sends them again. So are
requests that arrive while others being decoded and mapped already hold
``max_queue_bytes`` of request bytes (one request is always let in). A
request larger than half the queue (in rows or bytes) is queued in parts; if
a later part finds no room, the spans not queued are reported as rejected
(``queue_full``) in the partial success -- the only case where accepted data
is not all-or-nothing.

The scores of a request's ``gen_ai.evaluation.result`` span events are
stored after its spans are queued, best-effort: a score that is not stored
(a store that failed, none that holds scores, an event that is not a score)
never costs the spans; it is counted (``scores_failed``, ``scores_dropped``,
``scores_rejected``) and said in the partial success's message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from llamonitor._records import row_bytes, table_row_bytes
from llamonitor.otel import rows_from_request
from llamonitor.otel._redact import ContentPolicy, apply_to_columns, redact_request
from llamonitor.server._otlp_json import hex_ids_to_base64

logger = logging.getLogger("llamonitor.server")

QUEUE_WAIT_SECONDS = 2.0
"""How long a request waits for room in the writer's queue before a 503."""

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of a 503 (the OTLP exporters honour it)."""

IDLE_WRITE_SECONDS = 0.05
"""With no request in hand for this long, the receiver has its writer start
on what it queued, instead of waiting for a full batch or the writer's
``flush_interval_seconds`` (the last spans of a burst are written at once)."""

IDLE_WRITE_GAP_SECONDS = 0.2
"""At most one such early write this often (requests that come one by one,
a little apart, still share Parquet files)."""

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class Refused(Exception):
    """A request answered with an error status (its message says why)."""

    def __init__(self, status: int, message: str, counter: str) -> None:
        super().__init__(message)
        self.status = status
        self.counter = counter


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    accepted: int
    rejected: int
    message: str


class Ingestor:
    """Queues mapped spans in ``writer`` and counts requests and spans.

    Args:
        writer: a running ``MonitoringWriter`` (``record_rows``, ``queue_capacity``).
        owned: stop the writer (flushing it) in :meth:`close`.
        max_decompressed_bytes: the most a compressed body may expand to.
        content: what is kept of prompts and completions; default: the
            writer's ``MonitorConfig`` (``capture_content``, ``redact_*``).
    """

    def __init__(
        self, writer: Any, owned: bool, max_decompressed_bytes: int,
        content: ContentPolicy | None = None,
    ) -> None:
        self.writer = writer
        self.owned = owned
        self.max_decompressed_bytes = max_decompressed_bytes
        if content is None:
            config = getattr(writer, "config", None)
            content = ContentPolicy() if config is None else ContentPolicy.of(config)
        self.content = content
        self._inflight = 0  # bytes of the requests being mapped and queued
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            ("requests", "spans_received", "spans_accepted", "spans_rejected",
             "refused_busy", "refused_malformed", "refused_too_large",
             "refused_unsupported", "refused_unauthenticated", "dropped_attributes",
             "truncated_values", "scores_accepted", "scores_rejected", "scores_failed",
             "scores_dropped"),
            0,
        )
        self._reasons: dict[str, int] = {}
        self._closed = False
        self._warned_scores = False
        self._idle = threading.Event()  # set when the last request in hand ended
        self._last_end = 0.0
        self._watcher: threading.Thread | None = None

    # -- the core ------------------------------------------------------------

    def export(self, request: Any, now_ns: int | None = None, wire: bytes | None = None) -> Outcome:
        """Map and queue the spans of a decoded ``ExportTraceServiceRequest``
        (``wire``: the protobuf bytes it was parsed from, when at hand).

        Raises:
            Refused: 503, the queue had no room for any of them, or the
                requests in hand hold the queue's byte bound (nothing queued).
        """
        size = len(wire) if wire is not None else request.ByteSize()
        self._admit(size, request)
        try:
            return self._export(request, now_ns, wire)
        finally:
            with self._lock:
                self._inflight -= size
                idle = not self._inflight
                if idle:
                    self._last_end = time.monotonic()
                    if self._watcher is None and not self._closed:
                        self._watcher = threading.Thread(
                            target=self._watch, name="llamonitor-otlp-idle", daemon=True)
                        self._watcher.start()
            if idle:
                self._idle.set()

    def _watch(self) -> None:
        """Wake the writer once the receiver has been idle for
        :data:`IDLE_WRITE_SECONDS` (at most every :data:`IDLE_WRITE_GAP_SECONDS`)."""
        wake = getattr(self.writer, "wake", None)
        if wake is None:
            return
        while not self._closed:
            if not self._idle.wait(1.0):
                continue
            self._idle.clear()
            while not self._closed:
                time.sleep(IDLE_WRITE_SECONDS)
                with self._lock:
                    busy = self._inflight > 0
                    quiet = time.monotonic() - self._last_end >= IDLE_WRITE_SECONDS
                if busy:  # that request's end sets _idle again
                    break
                if quiet:
                    try:
                        wake()
                    except Exception as exc:  # never a reason to stop receiving
                        logger.debug("llamonitor: waking the writer failed: %r", exc)
                    time.sleep(IDLE_WRITE_GAP_SECONDS)
                    break

    def _admit(self, size: int, request: Any) -> None:
        """Take ``size`` bytes of the in-hand bound, or refuse (503)."""
        limit = self.writer.queue_byte_capacity
        with self._lock:
            if not self._inflight or self._inflight + size <= limit:
                self._inflight += size
                return
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.count("refused_busy", spans=spans)
        raise Refused(
            503,
            f"the receiver holds {limit:,} bytes of requests already (max_queue_bytes): "
            "nothing was accepted; retry later",
            "refused_busy",
        )

    def _export(self, request: Any, now_ns: int | None, wire: bytes | None) -> Outcome:
        if redact_request(request, self.content):  # whole texts, before the mapping cuts
            wire = None  # the bytes say what was sent, not what is kept
        # The evaluation events' kept attributes: dropped with capture off; their
        # text was redacted above (in the request) with capture on.
        mapped = rows_from_request(request, now_ns=now_ns, wire=wire,
                                   content=ContentPolicy(self.content.capture))
        apply_to_columns(mapped.columns, self.content)
        n = len(mapped)
        total = n + mapped.rejected
        table = _table_or_none(mapped) if n else None
        rows = mapped.rows if n and table is None else []
        step = self._step(n, table, rows)
        accepted = 0
        for start in range(0, n, step):
            if table is None:  # the row-dict path: the worker converts them one by one
                part: Any = rows[start : start + step]
                queued = self.writer.record_rows(part, QUEUE_WAIT_SECONDS)
            else:
                part = table if n <= step else table.slice(start, step)
                queued = self.writer.record_table(part, QUEUE_WAIT_SECONDS)
            if not queued:
                if accepted == 0:
                    self.count("refused_busy", spans=total)
                    raise Refused(
                        503,
                        "the writer's queue is full (or the writer is stopping): nothing "
                        "was accepted; retry later",
                        "refused_busy",
                    )
                left = n - accepted
                mapped.rejected += left
                mapped.reasons["queue_full"] = mapped.reasons.get("queue_full", 0) + left
                mapped.errors.insert(0, f"{left} span(s) found the writer's queue full")
                break
            accepted += len(part)
        with self._lock:
            c = self._counts
            c["requests"] += 1
            c["spans_received"] += total
            c["spans_accepted"] += accepted
            c["spans_rejected"] += mapped.rejected
            c["dropped_attributes"] += mapped.dropped_attributes
            c["truncated_values"] += mapped.truncated_values
            for reason, n in mapped.reasons.items():
                self._reasons[reason] = self._reasons.get(reason, 0) + n
        message = "; ".join(m for m in (mapped.error_message(), mapped.score_message(),
                                        self._store_scores(mapped)) if m)
        return Outcome(accepted, mapped.rejected, message)

    def _store_scores(self, mapped: Any) -> str:
        """Store the scores of the request's evaluation events, once its spans
        are queued: what was not stored is counted and said, never raised."""
        if mapped.scores_rejected:
            with self._lock:
                self._counts["scores_rejected"] = (
                    self._counts.get("scores_rejected", 0) + mapped.scores_rejected)
        if not mapped.scores:
            return ""
        from llamonitor.server._otlp_logs import ScoresStored, store_scores

        try:
            result = store_scores(self.writer, mapped.scores)
        except Exception as exc:  # a bug there must not cost the spans
            n = len(mapped.scores)
            result = ScoresStored(0, n, "scores_failed", False,
                                  f"{n} score(s) not stored: {type(exc).__name__}: {exc}")
        with self._lock:
            c = self._counts
            c["scores_accepted"] = c.get("scores_accepted", 0) + result.stored
            if result.lost:
                c[result.counter] = c.get(result.counter, 0) + result.lost
        if result.message:
            self.warn_scores(result.message + " (the spans were accepted)")
        return result.message

    def warn_scores(self, message: str) -> None:
        """Log why received scores were not all stored: a warning the first
        time, then at debug level (``/api/health``'s ``otlp`` counts them)."""
        if self._warned_scores:
            logger.debug("llamonitor: %s", message)
            return
        self._warned_scores = True
        logger.warning("llamonitor: %s; said once, counted in /api/health's otlp", message)

    def _step(self, n: int, table: Any, rows: list[dict[str, Any]]) -> int:
        """Rows queued at a time: at most half the queue, by count and by bytes."""
        step: int = max(1, self.writer.queue_capacity // 2)
        if not n:
            return step
        each = table_row_bytes(table) if table is not None else (
            sum(map(row_bytes, rows)) // n + 1)
        by_bytes: int = self.writer.queue_byte_capacity // 2 // each
        return max(1, min(step, by_bytes))

    def count(self, counter: str, spans: int = 0) -> None:
        """Count a refused request (``refused_*``), and the spans it held if known."""
        with self._lock:
            self._counts["requests"] += 1
            self._counts[counter] = self._counts.get(counter, 0) + 1
            self._counts["spans_received"] += spans

    def health(self) -> dict[str, Any]:
        """The counters, for ``/api/health``'s ``otlp`` (and ``bytes_in_hand``:
        of the requests being mapped and queued now)."""
        with self._lock:
            return {**self._counts, "rejected_by_reason": dict(self._reasons),
                    "bytes_in_hand": self._inflight}

    def close(self, timeout: float = 10.0) -> None:
        """Stop receiving; an owned writer is flushed and stopped."""
        if self._closed:
            return
        self._closed = True
        self._idle.set()
        if self.owned:
            self.writer.stop(timeout)

    # -- OTLP/HTTP -----------------------------------------------------------

    def handle_http(
        self, body: bytes, content_type: str, encoding: str, now_ns: int | None = None
    ) -> Reply:
        """Answer one ``POST /v1/traces`` whose body was read (within its cap)."""
        as_json = content_type == JSON
        try:
            if content_type not in (PROTOBUF, JSON):
                raise Refused(
                    415,
                    f"unsupported Content-Type {content_type or '(none)'!r}: send "
                    f"{PROTOBUF} or {JSON}",
                    "refused_unsupported",
                )
            raw = self.decompress(body, encoding)
            request = parse_json(raw) if as_json else parse_protobuf(raw)
            outcome = self.export(request, now_ns, None if as_json else raw)
        except Refused as exc:
            if exc.counter != "refused_busy":  # export counted its own
                self.count(exc.counter)
            headers = (("retry-after", str(RETRY_AFTER_SECONDS)),) if exc.status == 503 else ()
            return Reply(exc.status, *error_body(exc.status, str(exc), as_json), headers)
        return Reply(200, *response_body(outcome, as_json))

    def decompress(self, body: bytes, encoding: str) -> bytes:
        """``body`` decoded per ``Content-Encoding``, at most ``max_decompressed_bytes``.

        Raises:
            Refused: 413 past the bound, 400 for a corrupt stream, 415 for another encoding.
        """
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise Refused(415, f"unsupported Content-Encoding {encoding!r}: use gzip",
                          "refused_unsupported")
        limit = self.max_decompressed_bytes
        parts: list[bytes] = []
        size = 0
        data = body
        while True:  # a gzip body may hold several members, one after the other
            inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
            try:
                out = inflater.decompress(data, limit + 1 - size)  # never past the bound + 1
            except zlib.error as exc:
                raise Refused(400, f"the {encoding} body is corrupt: {exc}",
                              "refused_malformed") from None
            size += len(out)
            parts.append(out)
            if size > limit or inflater.unconsumed_tail:
                raise Refused(
                    413,
                    f"the body decompresses to more than {limit:,} bytes "
                    "(server.otlp_max_decompressed_bytes)",
                    "refused_too_large",
                )
            if not inflater.eof:
                raise Refused(400, f"the {encoding} body is truncated", "refused_malformed")
            data = inflater.unused_data
            if not data or encoding != "gzip":
                return parts[0] if len(parts) == 1 else b"".join(parts)


def _table_or_none(mapped: Any) -> Any:
    """The request's rows as one table, or ``None`` if a value does not convert
    (then the rows go as dicts, and the worker isolates the one that fails)."""
    try:
        return mapped.table()
    except Exception as exc:
        logger.warning("llamonitor: an OTLP request's rows did not make a table: %r", exc)
        return None


def parse_protobuf(raw: bytes) -> Any:
    """An ``ExportTraceServiceRequest`` from its protobuf bytes.

    Raises:
        Refused: 400, not a valid message (a truncated one, another message...).
    """
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        return ExportTraceServiceRequest.FromString(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise Refused(
            400, f"the body is not a valid OTLP ExportTraceServiceRequest (protobuf): {exc}",
            "refused_malformed",
        ) from None


def parse_json(raw: bytes) -> Any:
    """An ``ExportTraceServiceRequest`` from OTLP/JSON: hex ids (not protobuf's
    base64), camelCase or snake_case keys, enums as numbers or names, unknown
    fields ignored (as the OTLP specification asks of receivers).

    Raises:
        Refused: 400, not JSON or not that message.
    """
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}", "refused_malformed") from None
    if not isinstance(doc, dict):
        raise Refused(400, "the body is not a JSON object", "refused_malformed")
    hex_ids_to_base64(doc)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Refused(
            400, f"the JSON is not an OTLP ExportTraceServiceRequest: {exc}", "refused_malformed"
        ) from None


def export_response(outcome: Outcome) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if outcome.rejected or outcome.message:
        response.partial_success.rejected_spans = outcome.rejected
        response.partial_success.error_message = outcome.message
    return response


def response_body(outcome: Outcome, as_json: bool) -> tuple[str, bytes]:
    """An ``ExportTraceServiceResponse`` (with ``partial_success`` when spans
    were rejected) in the request's encoding."""
    response = export_response(outcome)
    if as_json:
        from google.protobuf import json_format

        return JSON, json_format.MessageToJson(response, indent=None).encode()
    return PROTOBUF, response.SerializeToString()


def error_body(status: int, message: str, as_json: bool) -> tuple[str, bytes]:
    """A ``google.rpc.Status`` (what OTLP/HTTP answers errors with), in the
    request's encoding."""
    from google.rpc.status_pb2 import Status

    error = Status(code=_GRPC_CODES.get(status, 2), message=message)
    if as_json:
        from google.protobuf import json_format

        return JSON, json_format.MessageToJson(error, indent=None).encode()
    return PROTOBUF, error.SerializeToString()


# HTTP status -> the google.rpc.Code the OTLP spec pairs with it.
_GRPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}
