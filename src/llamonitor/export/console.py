"""The console sink: one readable line per span, for development.

::

    MonitorConfig.for_local_dev(exporters=[ConsoleExporterConfig()])

prints, to standard error, as the worker writes each batch::

    07:12:27.120 3f2a91c0 9b1e04aa agent_workflow answer 903.2ms
    07:12:27.123 3f2a91c0   5d0c7a12 llm_call summarize 812.4ms gpt-4o-mini 120→48 tok $0.000047
    07:12:27.131 3f2a91c0   1c9d33e0 tool search 3.1ms ERROR TimeoutError: upstream

Time (UTC, the span's start), the first 8 hex characters of the trace and
span ids, indented under the span's parent when the parent is known to the
sink (it started in the same batch, or was printed before), else followed by
``↖`` and the parent's short id; the operation's type and name, its
duration, model, input→output tokens, cost, and the error. Spans of a batch
are printed in start order.

``target="logger"`` logs each line to the ``llamonitor.console`` logger
instead (``INFO``; ``WARNING`` for a failed span), as seed 001's
``SyncConsoleEventHandler`` did: route it with the application's logging
configuration. Colour (ANSI) only when the stream is a terminal and
``NO_COLOR`` is unset, never in logger mode. Control characters in names and
messages are replaced, so a span cannot rewrite the terminal.

The sink never raises: a stream that cannot be written to is counted
(``failed_writes``) and logged once, and the batch is let go (it has no
spool: the console is not a store).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TextIO

import pyarrow as pa

from llamonitor.schema._ids import short_id
from llamonitor.schema.config import ExporterConfig

logger = logging.getLogger("llamonitor.export.console")

CONSOLE_LOGGER = "llamonitor.console"
"""The logger of ``target="logger"``."""

MAX_MESSAGE_CHARS = 200
"""Error messages and names are cut to this many characters on the line."""

DEPTH_CACHE_SIZE = 4096
"""Spans whose depth the sink remembers across batches (to indent their children)."""

_COLUMNS = (
    "timestamp",
    "trace_id",
    "span_id",
    "parent_span_id",
    "operation_name",
    "operation_type",
    "duration_ms",
    "model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "error",
    "error_type",
    "error_message",
)

# C0 controls, DEL and the C1 range (ESC starts ANSI sequences; CSI is 0x9b).
_CONTROL = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}

_DIM, _RED, _CYAN, _YELLOW, _RESET = "\x1b[2m", "\x1b[31m", "\x1b[36m", "\x1b[33m", "\x1b[0m"


class ConsoleExporterConfig(ExporterConfig):
    """Print one line per span (see :mod:`llamonitor.export.console`).

    Args:
        target: ``"stderr"`` (default), ``"stdout"``, or ``"logger"`` (the
            ``llamonitor.console`` logger, or ``logger_name``).
        stream: a text stream to write to instead (anything with ``write``);
            wins over ``target``.
        logger_name: the logger of ``target="logger"``.
        color: ``None`` (default): ANSI colour when the stream is a terminal
            and ``NO_COLOR`` is unset; ``True``/``False`` to force it.
        spool: off: a console that cannot be written to is not worth keeping
            spans on disk for.
    """

    kind: ClassVar[str] = "console"

    spool: bool = False
    target: Literal["stderr", "stdout", "logger"] = "stderr"
    stream: Any = None
    logger_name: str = CONSOLE_LOGGER
    color: bool | None = None

    def create_backend(self) -> ConsoleWriter:
        """The sink's backend (``write_table``)."""
        return ConsoleWriter(self)

    def spool_identity(self) -> dict[str, Any]:
        return {"target": self.target}


class ConsoleWriter:
    """Formats each table it is given, a line per row (the sink's backend)."""

    def __init__(self, config: ConsoleExporterConfig) -> None:
        self.config = config
        self.failed_writes = 0
        self.lines = 0
        self._depths: dict[str, int] = {}
        self._lock = threading.Lock()  # one batch at a time, lines never interleaved

    def write_table(self, table: pa.Table) -> None:
        """Print the spans of ``table``; never raises."""
        try:
            names = [c for c in _COLUMNS if c in table.column_names]
            rows = table.select(names).to_pylist()
            with self._lock:
                self._write(rows)
        except Exception as exc:
            self.failed_writes += 1
            if self.failed_writes == 1:
                try:
                    logger.warning(
                        "llamonitor: the console sink could not print a batch (further "
                        "failures are counted, not logged): %r",
                        exc,
                    )
                except Exception:
                    pass

    def _write(self, rows: list[dict[str, Any]]) -> None:
        rows.sort(key=_start)
        cfg = self.config
        if cfg.target == "logger" and cfg.stream is None:
            log = logging.getLogger(cfg.logger_name)
            for row in rows:
                line = format_span(row, depth=self._depth(row), parent_known=self._known(row))
                log.log(logging.WARNING if row.get("error") else logging.INFO, "%s", line)
                self.lines += 1
            return
        stream = cfg.stream or (sys.stdout if cfg.target == "stdout" else sys.stderr)
        color = _color_on(stream) if cfg.color is None else cfg.color
        out = []
        for row in rows:
            known = self._known(row)
            out.append(format_span(row, depth=self._depth(row), parent_known=known, color=color))
        stream.write("\n".join(out) + "\n")
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()
        self.lines += len(out)

    def _known(self, row: Mapping[str, Any]) -> bool:
        parent = row.get("parent_span_id")
        return parent is None or parent in self._depths

    def _depth(self, row: Mapping[str, Any]) -> int:
        """The span's depth under the spans this sink has seen (remembered)."""
        parent = row.get("parent_span_id")
        depth = 0 if parent is None else self._depths.get(parent, -1) + 1
        span = row.get("span_id")
        if span is not None:
            if len(self._depths) >= DEPTH_CACHE_SIZE:
                self._depths.clear()
            self._depths[span] = depth
        return depth


def _start(row: Mapping[str, Any]) -> Any:
    ts = row.get("timestamp")
    return (ts is None, ts if isinstance(ts, datetime) else datetime.min)


def _color_on(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except Exception:
        return False


def _clean(value: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.translate(_CONTROL)


def _short(value: Any) -> str:
    """An id in 8 characters (a 32-hex id by its random end, see ``schema._ids``)."""
    return "-" if not value else short_id(str(value)).translate(_CONTROL)


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 10_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms:.1f}ms"


def format_span(
    row: Mapping[str, Any], *, depth: int = 0, parent_known: bool = True, color: bool = False
) -> str:
    """One span as the console sink prints it.

    Args:
        row: a stored row (``llamonitor.SCHEMA`` column names; missing ones
            are left out of the line).
        depth: indentation (two spaces a level).
        parent_known: when False, the parent's short id follows the span's.
        color: wrap parts in ANSI colour codes.

    Returns:
        The line, without a newline.
    """

    def paint(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    ts = row.get("timestamp")
    when = ts.strftime("%H:%M:%S.%f")[:-3] if isinstance(ts, datetime) else "--:--:--.---"
    trace = _short(row.get("trace_id"))
    span = _short(row.get("span_id"))
    parts = [paint(_DIM, when), paint(_DIM, trace), "  " * max(depth, 0) + span]
    parent = row.get("parent_span_id")
    if parent is not None and not parent_known:
        parts.append(paint(_DIM, "↖" + _short(parent)))
    parts.append(paint(_CYAN, _clean(row.get("operation_type") or "-", 40)))
    parts.append(_clean(row.get("operation_name") or "-", 80))
    parts.append(_duration(row.get("duration_ms")))
    model = row.get("response_model") or row.get("model")
    if model:
        parts.append(paint(_YELLOW, _clean(model, 60)))
    i, o = row.get("input_tokens"), row.get("output_tokens")
    if i is not None or o is not None:
        parts.append(f"{'-' if i is None else i}→{'-' if o is None else o} tok")
    cost = row.get("cost_usd")
    if cost is not None:
        parts.append(f"${cost:.6f}" if cost < 0.01 else f"${cost:.4f}")
    if row.get("error"):
        kind = row.get("error_type") or "error"
        msg = row.get("error_message")
        text = f"ERROR {_clean(kind, 80)}" + (f": {_clean(msg)}" if msg else "")
        parts.append(paint(_RED, text))
    return " ".join(parts)
