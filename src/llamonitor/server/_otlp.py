"""``POST /v1/traces``: OTLP/HTTP traces into the served store.

Protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
plain or ``Content-Encoding: gzip``; answered in the request's encoding with
an ``ExportTraceServiceResponse`` (``partial_success`` when spans were
rejected) or a ``google.rpc.Status``: 400 malformed, 413 too large, 415 wrong
type or encoding, 503 (``Retry-After``) when the writer's queue is full. The
Guard in front checks the token and the declared length; the body is read here
with the same bound, so a chunked body without a length stops at it too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from llamonitor.server._deps import state
from llamonitor.server._ingest import Ingestor, error_body
from llamonitor.server._settings import OTLP_PATH

router = APIRouter(tags=["otlp"])


@router.post(OTLP_PATH, include_in_schema=False)
async def traces(request: Request) -> Response:
    s = state(request)
    ingestor: Ingestor | None = s.extras.get("otlp")
    if ingestor is None:
        return JSONResponse(
            {"error": "this server does not receive OTLP (server.otlp is off, or its store "
             "has no writer: serve a Parquet directory or a database)"},
            404,
        )
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    encoding = request.headers.get("content-encoding", "")
    limit = s.config.otlp_max_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # a chunked body: no length for the Guard to check
            ingestor.count("refused_too_large")
            kind, text = error_body(
                413, f"the body is larger than {limit:,} bytes (server.otlp_max_body_bytes)",
                content_type == "application/json",
            )
            return Response(text, 413, media_type=kind, headers={"connection": "close"})
    reply = await run_in_threadpool(ingestor.handle_http, bytes(body), content_type, encoding)
    return Response(reply.body, reply.status, media_type=reply.content_type,
                    headers=dict(reply.headers))
