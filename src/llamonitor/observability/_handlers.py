"""Seed 001's built-in handlers: a line per event to the console, a JSONL file.

(The third, events as spans, is :class:`~llamonitor.observability.SpanHandler`.)
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal, TextIO

from llamonitor.export.console import CONSOLE_LOGGER, _color_on, format_span
from llamonitor.observability import _facts as f
from llamonitor.observability._events import to_jsonable
from llamonitor.observability._runner import ObservabilityHandler

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def event_row(event: Any) -> dict[str, Any]:
    """An event as a row for :func:`llamonitor.export.console.format_span`:
    the session as the trace column, the event id as the span's, the event's
    class as its type and what it names (command, tool, model, handler) as
    its operation."""
    kind = f.kind(event)
    name: str | None = None
    row: dict[str, Any] = {}
    if kind in ("command_started", "command_result"):
        name = f.command_type(event)
        if kind == "command_result":
            success, message = f.command_outcome(event)
            if not success:
                error = f.error_of(message or "command failed", "CommandFailed")
                if error is not None:
                    row.update(error=True, error_type=error[0], error_message=error[1])
    elif kind == "tool":
        name = f.text(getattr(event, "tool_name", None))
        if getattr(event, "execution_succeed", None) is False:
            row.update(error=True, error_type="ToolError")
    elif kind in ("llm_call", "llm_response"):
        row["model"] = f.text(getattr(event, "model", None)) or f.text(
            getattr(event, "model_id", None)
        )
        for key in ("input_tokens", "output_tokens", "cost_usd"):
            row[key] = f.number(getattr(event, key, None))
        name = f.text(getattr(event, "operation_name", None)) or "chat"
    elif kind == "handler_failed":
        name = f.text(getattr(event, "handler", None))
        err = f.error_of(getattr(event, "exception", None), "HandlerFailed")
        if err is not None:
            row.update(error=True, error_type=err[0], error_message=err[1])
    if kind in ("session_end", "llm_call", "llm_response", "tool") and "error" not in row:
        err = f.error_of(getattr(event, "error", None), "Error")
        if err is not None:
            row.update(error=True, error_type=err[0], error_message=err[1])
    row.update(
        timestamp=_EPOCH + timedelta(microseconds=f.wall_us(event)),
        trace_id=f.text(getattr(event, "session_id", None)),
        span_id=(f.text(getattr(event, "event_id", None)) or "").replace("-", "")[:8] or None,
        operation_type=type(event).__name__,
        operation_name=name or "",
        duration_ms=f.number(getattr(event, "duration_ms", None)),
    )
    return row


class ConsoleEventHandler(ObservabilityHandler):
    """A line per event (seed 001's ``SyncConsoleEventHandler``), in the console
    sink's format (:func:`llamonitor.export.console.format_span`).

    Args:
        target: ``"logger"`` (default, as seed 001: the ``llamonitor.console``
            logger at ``INFO``, ``WARNING`` for a failure), ``"stderr"`` or
            ``"stdout"``.
        stream: a text stream to write to instead.
        logger_name: the logger of ``target="logger"``.
        color: ANSI colour; ``None``: only on a terminal, never to a logger.
    """

    ordered: ClassVar[bool] = True

    def __init__(
        self,
        target: Literal["logger", "stderr", "stdout"] = "logger",
        stream: TextIO | None = None,
        logger_name: str = CONSOLE_LOGGER,
        color: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.target = target
        self.stream = stream
        self.logger = logging.getLogger(logger_name)
        self.color = color
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "console"

    def handle(self, event: Any) -> None:
        row = event_row(event)
        if self.target == "logger" and self.stream is None:
            level = logging.WARNING if row.get("error") else logging.INFO
            self.logger.log(level, "%s", format_span(row))
            return
        stream = self.stream or (sys.stdout if self.target == "stdout" else sys.stderr)
        color = _color_on(stream) if self.color is None else self.color
        line = format_span(row, color=color) + "\n"
        with self._lock:
            stream.write(line)
            stream.flush()


class JSONLFileEventHandler(ObservabilityHandler):
    """Every event as a JSON line (seed 001's ``SyncFileEventHandler``): its
    fields (``to_dict()``, else its dataclass fields or attributes; values JSON
    cannot hold as strings) and ``event_type``.

    Thread-safe (one lock around each write; lines are never interleaved). The
    file is not rotated: one file per handler, appended to; rotate it with the
    system's tools (``logrotate`` with ``copytruncate``) or start a new handler.

    Args:
        log_dir: the directory (created when missing).
        filename: the file's name; default ``events_YYYYmmdd_HHMMSS.jsonl``.
    """

    ordered: ClassVar[bool] = True

    def __init__(self, log_dir: str | Path = "logs", filename: str | None = None, **kwargs: Any):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if filename is None:
            filename = f"events_{datetime.now().strftime('%Y%m%d_%H%M%S')}.jsonl"
        self.log_file = self.log_dir / filename
        self._lock = threading.Lock()
        self._file: Any = None

    @property
    def name(self) -> str:
        return "jsonl"

    def handle(self, event: Any) -> None:
        line = json.dumps(_event_dict(event), ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._file is None:
                self._file = open(self.log_file, "a", encoding="utf-8")  # noqa: SIM115
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _event_dict(event: Any) -> Any:
    to_dict = getattr(event, "to_dict", None)
    data: Any = None
    if callable(to_dict):
        try:
            data = to_dict()
        except Exception:
            data = None
    if not isinstance(data, dict):
        data = to_jsonable(event)
        if not isinstance(data, dict):
            data = (
                {k: to_jsonable(v) for k, v in vars(event).items()}
                if hasattr(event, "__dict__")
                else {"event_repr": repr(event)}
            )
    else:
        data = to_jsonable(data)
    data.setdefault("event_type", type(event).__name__)
    return data


SyncConsoleEventHandler = ConsoleEventHandler
"""Seed 001's name of :class:`ConsoleEventHandler`."""

SyncFileEventHandler = JSONLFileEventHandler
"""Seed 001's name of :class:`JSONLFileEventHandler`."""
