"""A local HTTP server speaking the OpenAI and Anthropic wire formats, for tests.

The real SDKs are pointed at it (``base_url``) and it answers with scripted
replies: JSON bodies, server-sent event streams (chunked; optionally cut off
mid-stream), error statuses, or a hang (for timeouts). Builders below make the
bodies and events of each API, so a test knows every number it sent.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Event = tuple[str | None, Any]  # (SSE event name, data: a dict (JSON) or a str)


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None  # JSON body
    events: list[Event] | None = None  # SSE stream
    headers: dict[str, str] = field(default_factory=dict)
    first_delay: float = 0.0  # seconds before the first event (time to first token)
    delay: float = 0.0  # seconds between events
    cut_after: int | None = None  # close the connection after this many events
    hang: float = 0.0  # seconds to wait before answering (client timeouts)


@dataclass
class Request:
    path: str
    body: Any
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-stream (the tests of abandoned streams do) is
    expected here: no traceback printed for a broken connection."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LLMServer:
    """``with LLMServer() as server: server.push(Reply(...)); client(base_url=server.url)``."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Small writes go out at once (no Nagle delay on each event).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with server.lock:
                    server.requests.append(Request(self.path, body, dict(self.headers)))
                    reply = server.replies.popleft() if server.replies else None
                if reply is None:
                    reply = Reply(500, {"error": {"message": "no reply scripted"}})
                server.answer(self, reply)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def reset(self) -> None:
        with self.lock:
            self.replies.clear()
            self.requests.clear()

    def __enter__(self) -> LLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.hang:
            self.stopping.wait(reply.hang)
        if reply.events is None:
            data = json.dumps(reply.body).encode()
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            return
        h.send_response(reply.status)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        for i, (name, data) in enumerate(reply.events):
            if reply.cut_after is not None and i == reply.cut_after:
                # Mid-stream failure: the connection drops without the final chunk.
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            time.sleep(reply.first_delay if i == 0 else reply.delay)
            text = data if isinstance(data, str) else json.dumps(data)
            block = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            payload = block.encode()
            try:
                h.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                h.wfile.flush()
            except OSError:
                return  # the client went away (a stream closed early)
        try:
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:
            pass


# -- OpenAI Chat Completions ----------------------------------------------------------


def chat_usage(
    prompt: int, completion: int, cached: int | None = None, reasoning: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


_MISSING: Any = object()


def chat_completion(
    text: str,
    *,
    id: str = "chatcmpl-1",
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str = "stop",
    usage: Any = _MISSING,
) -> dict[str, Any]:
    """A ``/chat/completions`` body; ``usage=None`` sends ``"usage": null``, and
    leaving it out sends a default usage (pass ``usage=...`` to choose)."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "system_fingerprint": "fp_1",
    }
    if usage is not _MISSING:
        body["usage"] = usage
    return body


def chat_chunks(
    pieces: list[str],
    *,
    id: str = "chatcmpl-2",
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    done: bool = True,
) -> list[Event]:
    """The events of a streamed chat completion: a role chunk, one chunk per
    piece, a finish chunk, the usage chunk (when ``usage``), ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    events: list[Event] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": p})) for p in pieces]
    events.append((None, chunk({}, finish_reason)))
    if usage is not None:
        events.append(
            (
                None,
                {
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                },
            )
        )
    if done:
        events.append((None, "[DONE]"))
    return events


def openai_error(status: int, message: str, type_: str) -> Reply:
    return Reply(
        status, {"error": {"message": message, "type": type_, "param": None, "code": None}}
    )


# -- OpenAI Responses -------------------------------------------------------------------


def responses_usage(input: int, output: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    }


def response_body(
    text: str,
    *,
    id: str = "resp_1",
    model: str = "gpt-4.1-2025-04-14",
    status: str = "completed",
    usage: Any = _MISSING,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if status != "in_progress"
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
    }
    if usage is not _MISSING:
        body["usage"] = usage
    return body


def response_events(
    pieces: list[str],
    *,
    id: str = "resp_2",
    model: str = "gpt-4.1-2025-04-14",
    usage: dict[str, Any] | None = None,
) -> list[Event]:
    """``response.created``, the message item and its text part added, one
    ``response.output_text.delta`` per piece, the text, part and item done,
    ``response.completed`` (with ``usage``)."""
    seq = iter(range(1000))
    created = response_body("", id=id, model=model, status="in_progress", usage=None)
    item = {
        "type": "message",
        "id": "msg_1",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[Event] = [
        (
            "response.created",
            {"type": "response.created", "sequence_number": next(seq), "response": created},
        ),
        (
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": item,
            },
        ),
        (
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "sequence_number": next(seq),
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
        ),
    ]
    for p in pieces:
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": next(seq),
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": p,
                    "logprobs": [],
                },
            )
        )
    text = "".join(pieces)
    events.append(
        (
            "response.output_text.done",
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
        )
    )
    done = response_body(text, id=id, model=model, usage=usage)
    events.append(
        (
            "response.content_part.done",
            {
                "type": "response.content_part.done",
                "sequence_number": next(seq),
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": {**part, "text": text},
            },
        )
    )
    events.append(
        (
            "response.output_item.done",
            {
                "type": "response.output_item.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": done["output"][0],
            },
        )
    )
    events.append(
        (
            "response.completed",
            {"type": "response.completed", "sequence_number": next(seq), "response": done},
        )
    )
    return events


# -- Anthropic Messages ----------------------------------------------------------------


def anthropic_usage(
    input: int, output: int, cache_read: int | None = None, cache_write: int | None = None
) -> dict[str, Any]:
    return {
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def message_body(
    text: str,
    *,
    id: str = "msg_01",
    model: str = "claude-sonnet-4-5-20250929",
    stop_reason: str = "end_turn",
    usage: Any = _MISSING,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if usage is not _MISSING:
        body["usage"] = usage
    return body


def message_events(
    pieces: list[str],
    *,
    id: str = "msg_02",
    model: str = "claude-sonnet-4-5-20250929",
    input: int = 25,
    output: int = 12,
    cache_read: int | None = None,
    cache_write: int | None = None,
    stop_reason: str = "end_turn",
    ping: bool = True,
) -> list[Event]:
    """``message_start`` (input usage), a text block with one delta per piece
    (and a ``ping``), ``message_delta`` (stop reason, output usage), ``message_stop``."""
    start = message_body(
        "", id=id, model=model, usage=anthropic_usage(input, 1, cache_read, cache_write)
    )
    start["content"] = []
    start["stop_reason"] = None
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    if ping:
        events.append(("ping", {"type": "ping"}))
    for p in pieces:
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(status: int, message: str, type_: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": type_, "message": message}})
