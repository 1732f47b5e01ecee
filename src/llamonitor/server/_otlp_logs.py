"""``POST /v1/logs``: OTLP logs whose records are ``gen_ai.evaluation.result``
events, stored as scores; and the scores of span events in ``/v1/traces``.

The body is read and answered as for ``/v1/traces`` (protobuf or OTLP/JSON,
gzip; the same bounds, token and error statuses), with an
``ExportLogsServiceResponse``. Evaluation results become score rows
(:mod:`llamonitor.otel._scores`) and are written to the served store's score
table and every other store of its writer that holds scores, each tried
whatever the others did, before the answer. The answer is what the sender
needs in order to lose nothing (an OTLP sender drops what a 200 answers,
``partial_success`` or not, and sends again what a 503 or ``UNAVAILABLE``
answers):

- every score store holds them: a 200;
- a store failed for now (``StoreError``, a connection or I/O error): a 503
  with ``Retry-After`` (gRPC ``UNAVAILABLE``), counted in ``refused_busy``,
  also when another store took them -- only a retry brings them to the store
  that failed, and scores are upserts by ``score_id``, so a retry adds no row
  to a store that already holds them;
- a store refused them for good (a retry would not help) or no store of this
  server holds scores (``memory``, a custom backend): a 200 whose
  ``partial_success`` counts them in ``rejected_log_records``, its
  ``error_message`` saying where they are (if anywhere) and why not in the
  others; counted in ``scores_failed`` / ``scores_dropped``; a store that
  refused only some of them for their content and wrote the others
  (ClickHouse: a time its ``DateTime`` cannot hold) costs only those, named
  in the ``error_message``.

Log records that are not evaluation results are counted and left alone: this
server keeps spans and scores, not logs. The attributes a score keeps pass
the receiver's content policy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from llamonitor.server._deps import state
from llamonitor.server._ingest import (
    JSON,
    PROTOBUF,
    RETRY_AFTER_SECONDS,
    Refused,
    Reply,
    error_body,
)

OTLP_LOGS_PATH = "/v1/logs"

router = APIRouter(tags=["otlp"])


@dataclass(frozen=True)
class ScoresStored:
    """What :func:`store_scores` did with a request's scores.

    Attributes:
        stored: scores held by every store that holds scores.
        lost: scores missing from at least one of them, perhaps held by
            another (``stored + lost`` is every score).
        counter: ``scores_dropped`` (no store holds scores) or
            ``scores_failed`` (one that does failed), when ``lost``.
        transient: a store failed for now (worth sending them again).
        message: why, for ``partial_success`` (empty when all are stored):
            the stores that hold them, and why the others do not.
    """

    stored: int = 0
    lost: int = 0
    counter: str = ""
    transient: bool = False
    message: str = ""


def _transient(exc: BaseException) -> bool:
    from llamonitor.storage._sql import StoreError

    return isinstance(exc, (StoreError, OSError))  # ConnectionError, TimeoutError: OSErrors


def store_scores(writer: Any, rows: list[dict[str, Any]]) -> ScoresStored:
    """Write ``rows`` (score rows) to every store of ``writer`` that holds
    scores; every one is tried, whatever the others did. Never raises.

    A store that refuses some rows for their content and writes the others
    (``RowsRejected``: ClickHouse and a time a ``DateTime`` cannot hold) costs
    only those: they are lost and named in the message, the others stored."""
    if not rows:
        return ScoresStored()
    from llamonitor.schema._rejected import RowsRejected
    from llamonitor.schema._scores import scores_table
    from llamonitor.storage._scores import store_kind, write_scores

    config = writer.config
    table = scores_table(rows)
    held: list[str] = []
    failures: list[tuple[str, BaseException]] = []
    refusals: list[tuple[str, RowsRejected]] = []
    refused_ids: set[Any] = set()
    for storage in [config.storage, *config.extra_backends]:
        try:
            kind = store_kind(storage)
        except Exception:
            continue  # a memory store, a custom backend: no score table
        name = f"{kind} {storage.output_dir}" if kind == "parquet" else kind  # no DSN
        try:
            write_scores(storage, table)
        except RowsRejected as exc:
            if "score_id" not in exc.rejected.column_names:  # pragma: no cover - defensive
                failures.append((name, exc))
                continue
            refusals.append((name, exc))
            refused_ids.update(exc.rejected.column("score_id").to_pylist())
        except Exception as exc:
            failures.append((name, exc))
            continue
        held.append(name)
    n = len(rows)
    if not held and not failures:
        backends = ", ".join(repr(str(s.backend)) for s in
                             [config.storage, *config.extra_backends])
        return ScoresStored(0, n, "scores_dropped", False,
                            f"{n} score(s) not stored: no store of this server holds scores "
                            f"(backend {backends})")
    if not failures and not refusals:
        return ScoresStored(n, 0)
    parts: list[str] = []
    if failures:
        lost = n
        why = "; ".join(f"{backend}: {type(exc).__name__}: {exc}" for backend, exc in failures)
        # Held by some store but missing from another is not stored: the store that
        # failed never gets them unless the sender sends them again.
        where = f"stored in {', '.join(held)} only, not in {why}" if held else f"not stored: {why}"
        parts.append(f"{n} score(s) {where}")
    else:
        lost = sum(1 for i in table.column("score_id").to_pylist() if i in refused_ids)
    parts += [f"{exc.rejected.num_rows} score(s) not stored in {backend}: {_named(exc)}"
              for backend, exc in refusals]
    transient = any(_transient(exc) for _, exc in failures)
    return ScoresStored(n - lost, lost, "scores_failed", transient, "; ".join(parts))


_NAMED = 5
"""Refused scores named one by one in a message (then "and N more")."""


def _named(exc: Any) -> str:
    """``name (score id): why`` for each refused score (the first few)."""
    names = exc.rejected.column("name").to_pylist() if "name" in exc.rejected.column_names \
        else ["?"] * exc.rejected.num_rows
    ids = exc.rejected.column("score_id").to_pylist()
    said = [f"{name} ({str(sid)[:12]}): {why}"
            for name, sid, why in zip(names, ids, exc.errors, strict=False)][:_NAMED]
    more = exc.rejected.num_rows - len(said)
    return "; ".join(said) + (f"; and {more} more" if more > 0 else "")


def _count(ingestor: Any, **counts: int) -> None:
    with ingestor._lock:
        for key, n in counts.items():
            ingestor._counts[key] = ingestor._counts.get(key, 0) + n


def export_logs(ingestor: Any, request: Any) -> tuple[int, int, str]:
    """Store the evaluation results of a decoded ``ExportLogsServiceRequest``:
    (accepted, rejected, message).

    Raises:
        Refused: 503, a store failed for now, whether or not another took the
            scores (counted in ``refused_busy`` by the caller).
    """
    from llamonitor.otel._scores import scores_from_logs

    mapped = scores_from_logs(request, ingestor.content)
    result = store_scores(ingestor.writer, mapped.rows)
    if result.transient:
        ingestor.warn_scores(f"{result.message} (answered 503: the client sends them again)")
        raise Refused(503, f"a store could not take the scores now, send them again (a score "
                      f"stored twice is one row): {result.message}", "refused_busy")
    if result.message:
        ingestor.warn_scores(result.message)
    counts = {"log_requests": 1, "scores_accepted": result.stored,
              "scores_rejected": mapped.rejected, "log_records_ignored": mapped.other_records}
    if result.lost:
        counts[result.counter] = result.lost
    _count(ingestor, **counts)
    message = "; ".join(m for m in (result.message, mapped.error_message()) if m)
    return result.stored, mapped.rejected + result.lost, message


def parse_logs(raw: bytes, as_json: bool) -> Any:
    """An ``ExportLogsServiceRequest`` from protobuf or OTLP/JSON (hex ids).

    Raises:
        Refused: 400, not such a message.
    """
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    if not as_json:
        try:
            return ExportLogsServiceRequest.FromString(raw)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise Refused(400, f"the body is not a valid OTLP ExportLogsServiceRequest: {exc}",
                          "refused_malformed") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}", "refused_malformed") from None
    if not isinstance(doc, dict):
        raise Refused(400, "the body is not a JSON object", "refused_malformed")
    for rl in _items(doc, "resourceLogs", "resource_logs"):
        for sl in _items(rl, "scopeLogs", "scope_logs"):
            for record in _items(sl, "logRecords", "log_records"):
                _fix_ids(record)
    try:
        return json_format.ParseDict(doc, ExportLogsServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Refused(400, f"the JSON is not an OTLP ExportLogsServiceRequest: {exc}",
                      "refused_malformed") from None


def _items(obj: Any, *keys: str) -> list[Any]:
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), list):
                return list(obj[key])
    return []


def _fix_ids(record: Any) -> None:
    """OTLP/JSON ids are hex; protobuf's JSON mapping reads base64."""
    if not isinstance(record, dict):
        return
    for key, size in (("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8)):
        value = record.get(key)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value) if len(value) == 2 * size else b""
            except ValueError:
                raw = b""
            record[key] = base64.b64encode(raw).decode("ascii")


def handle_logs_http(ingestor: Any, body: bytes, content_type: str, encoding: str) -> Reply:
    """Answer one ``POST /v1/logs`` whose body was read (within its cap)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceResponse,
    )

    as_json = content_type == JSON
    try:
        if content_type not in (PROTOBUF, JSON):
            raise Refused(415, f"unsupported Content-Type {content_type or '(none)'!r}: send "
                          f"{PROTOBUF} or {JSON}", "refused_unsupported")
        request = parse_logs(ingestor.decompress(body, encoding), as_json)
        _accepted, rejected, message = export_logs(ingestor, request)
    except Refused as exc:
        ingestor.count(exc.counter)
        headers = (("retry-after", str(RETRY_AFTER_SECONDS)),) if exc.status == 503 else ()
        return Reply(exc.status, *error_body(exc.status, str(exc), as_json), headers)
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    if as_json:
        from google.protobuf import json_format

        return Reply(200, JSON, json_format.MessageToJson(response, indent=None).encode())
    return Reply(200, PROTOBUF, response.SerializeToString())


@router.post(OTLP_LOGS_PATH, include_in_schema=False)
async def logs(request: Request) -> Response:
    s = state(request)
    ingestor = s.extras.get("otlp")
    if ingestor is None:
        return JSONResponse(
            {"error": "this server does not receive OTLP (server.otlp is off, or its store "
             "has no writer: serve a Parquet directory or a database)"},
            404,
        )
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    limit = s.config.otlp_max_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            ingestor.count("refused_too_large")
            kind, text = error_body(
                413, f"the body is larger than {limit:,} bytes (server.otlp_max_body_bytes)",
                content_type == JSON,
            )
            return Response(text, 413, media_type=kind, headers={"connection": "close"})
    reply = await run_in_threadpool(
        handle_logs_http, ingestor, bytes(body), content_type,
        request.headers.get("content-encoding", ""),
    )
    return Response(reply.body, reply.status, media_type=reply.content_type,
                    headers=dict(reply.headers))


LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


def grpc_logs_handler(grpc: Any, ingestor: Any, token: str | None) -> Any:
    """The OTLP/gRPC ``LogsService`` of the receiver's gRPC port (same token)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    from llamonitor.server._otlp_grpc import _authorized, abort_unavailable

    def parse(raw: bytes) -> Any:
        try:
            return ExportLogsServiceRequest.FromString(raw)
        except Exception as exc:  # answered INVALID_ARGUMENT in export
            return exc

    def export(request: Any, context: Any) -> Any:
        if token is not None and not _authorized(context, token):
            ingestor.count("refused_unauthenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "a token is required: authorization: Bearer <token> metadata")
        if isinstance(request, Exception):
            ingestor.count("refused_malformed")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"not a valid ExportLogsServiceRequest: {request}")
        try:
            _accepted, rejected, message = export_logs(ingestor, request)
        except Refused as exc:
            ingestor.count(exc.counter)
            abort_unavailable(grpc, context, str(exc))
        response = ExportLogsServiceResponse()
        if rejected or message:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
        return response

    return grpc.method_handlers_generic_handler(LOGS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=parse,
            response_serializer=ExportLogsServiceResponse.SerializeToString,
        ),
    })
