"""``POST /v1/traces``: OTLP/HTTP traces into the served store.

Protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
plain or ``Content-Encoding: gzip``; answered in the request's encoding with
an ``ExportTraceServiceResponse`` (``partial_success`` when spans were
rejected) or a ``google.rpc.Status``: 400 malformed, 413 too large, 415 wrong
type or encoding, 503 (``Retry-After``) when the writer's queue is full. The
Guard in front checks the token and the declared length; the body is read here
with the same bound, so a chunked body without a length stops at it too.

Two ways in, one answer: :class:`TracesRoute`, a plain ASGI app that the
Guard calls for ``POST /v1/traces`` when the server receives OTLP (no
FastAPI routing or middleware on the hot path: the body is read, handed to
a thread, answered), and the FastAPI route below for everything else at
that path (the 404 of a server that does not receive OTLP, 405 for another
method).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from llamonitor.server._deps import state
from llamonitor.server._ingest import Ingestor, Reply, error_body
from llamonitor.server._settings import OTLP_PATH

logger = logging.getLogger("llamonitor.server")

router = APIRouter(tags=["otlp"])

_Message = MutableMapping[str, Any]


def _too_large(ingestor: Ingestor, limit: int, as_json: bool) -> Reply:
    ingestor.count("refused_too_large")
    kind, text = error_body(
        413, f"the body is larger than {limit:,} bytes (server.otlp_max_body_bytes)", as_json
    )
    return Reply(413, kind, text, (("connection", "close"),))


def _media_type(headers: Any) -> tuple[str, str]:
    """(content type without parameters, lowercased; content encoding) of ASGI headers."""
    content_type = encoding = None
    for key, value in headers:  # the first of each, as Starlette's headers.get
        if key == b"content-type" and content_type is None:
            content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
        elif key == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
    return content_type or "", encoding or ""


class TracesRoute:
    """``POST /v1/traces`` as a plain ASGI app (what the Guard calls for it).

    The same answers as the FastAPI route had: the body bound while reading
    (413, ``connection: close``), the receiver's :meth:`Ingestor.handle_http`
    on a thread (its 200 / 400 / 415 / 503 replies), a 500 if that raises.
    Any other method goes to ``fallback`` (the FastAPI app: 405).
    """

    def __init__(self, ingestor: Ingestor, limit: int, fallback: Any) -> None:
        self.ingestor = ingestor
        self.limit = limit
        self.fallback = fallback

    async def __call__(self, scope: _Message, receive: Any, send: Any) -> None:
        if scope.get("method") != "POST":
            await self.fallback(scope, receive, send)
            return
        content_type, encoding = _media_type(scope.get("headers", ()))
        limit = self.limit
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody to answer
                return
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:  # a chunked body: no length for the Guard to check
                    reply = _too_large(self.ingestor, limit, content_type == "application/json")
                    await _answer(send, reply)
                    return
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(
                None, self.ingestor.handle_http, body, content_type, encoding
            )
        except Exception as exc:  # a bug: answer as the server does, 500, and say it
            logger.exception("llamonitor: the OTLP receiver failed on a request")
            reply = Reply(500, "application/json",
                          b'{"error": "internal error: ' + type(exc).__name__.encode() + b'"}')
        await _answer(send, reply)


async def _answer(send: Any, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode("latin-1")),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


@router.post(OTLP_PATH, include_in_schema=False)
async def traces(request: Request) -> Response:
    """The route of a server that does not take the fast way (tests that drive
    the FastAPI app alone), and the 404 of one that does not receive OTLP."""
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
            reply = _too_large(ingestor, limit, content_type == "application/json")
            return Response(reply.body, 413, media_type=reply.content_type,
                            headers=dict(reply.headers))
    reply = await run_in_threadpool(ingestor.handle_http, bytes(body), content_type, encoding)
    return Response(reply.body, reply.status, media_type=reply.content_type,
                    headers=dict(reply.headers))
