"""The console sink: a readable line per span, to a stream or a logger, never raising."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import llamonitor
from llamonitor import MonitorConfig, monitor_llm
from llamonitor.analysis import analyze
from llamonitor.export import ConsoleExporterConfig, format_span


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Closed(io.StringIO):
    def write(self, s: str) -> int:
        raise ValueError("I/O operation on closed file")


@monitor_llm("lookup", operation_type="tool")
def lookup(q: str) -> str:
    return q


@monitor_llm("answer", operation_type="agent_workflow")
def answer(q: str) -> str:
    return lookup(q)


@monitor_llm("explode")
def explode() -> None:
    raise KeyError("missing")


def _run(tmp_path: Path, sink: ConsoleExporterConfig) -> dict[str, Any]:
    """Record a parent with a child and a failed span, printed by ``sink``; the health."""
    writer = llamonitor.initialize_monitoring(
        MonitorConfig.for_local_dev(tmp_path, exporters=[sink])
    )
    answer("q")
    with pytest.raises(KeyError):
        explode()
    assert writer.flush(10)
    health: dict[str, Any] = writer.health_check()
    llamonitor.shutdown_monitoring()
    return health


def test_each_span_is_a_line_with_its_child_indented_under_its_parent(tmp_path: Path) -> None:
    """Every span the application records is printed once, in start order, a child indented
    under its parent, with its type, name, duration and error; the sink shows in health_check."""
    out = io.StringIO()
    health = _run(tmp_path, ConsoleExporterConfig(stream=out))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    parent, child, failed = lines
    assert " agent_workflow answer " in parent and " tool lookup " in child
    assert child.index("tool") > parent.index("agent_workflow")  # indented by two
    assert "ms" in parent and "ERROR KeyError: 'missing'" in failed
    assert "\x1b[" not in out.getvalue()  # not a terminal: no colour
    assert "console" in health["sinks"]


def test_logger_target_logs_info_lines_and_warnings_for_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """target="logger" logs to llamonitor.console: INFO per span, WARNING for a failed one."""
    with caplog.at_level(logging.INFO, logger="llamonitor.console"):
        _run(tmp_path, ConsoleExporterConfig(target="logger"))
    records = [r for r in caplog.records if r.name == "llamonitor.console"]
    assert sorted(r.levelno for r in records) == [logging.INFO, logging.INFO, logging.WARNING]
    assert "ERROR KeyError" in next(r for r in records if r.levelno == logging.WARNING).message


def test_colour_only_on_a_terminal_and_never_with_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ANSI colour is used when the stream is a terminal, and not when NO_COLOR is set."""
    tty = Terminal()
    _run(tmp_path / "a", ConsoleExporterConfig(stream=tty))
    assert "\x1b[31mERROR" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    _run(tmp_path / "b", ConsoleExporterConfig(stream=plain))
    assert "\x1b[" not in plain.getvalue() and "ERROR" in plain.getvalue()


def test_a_stream_that_fails_is_counted_and_storage_keeps_every_span(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A console that cannot be written to never raises into monitoring: the failure is logged
    once, and the store still gets every span."""
    sink = ConsoleExporterConfig(stream=Closed())
    with caplog.at_level(logging.WARNING, logger="llamonitor.export.console"):
        _run(tmp_path, sink)
    warned = [r for r in caplog.records if "console sink could not print" in r.getMessage()]
    assert len(warned) == 1
    assert analyze(tmp_path).overview.spans == 3


def test_a_line_holds_the_llm_facts_and_no_control_characters() -> None:
    """format_span shows time, short ids, the parent when unknown, model, tokens and cost, and
    replaces control characters (a name cannot rewrite the terminal)."""
    row = {
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "parent_span_id": "c" * 16,
        "operation_type": "llm_call",
        "operation_name": "evil\x1b[2Jname\n",
        "duration_ms": 812.44,
        "model": "gpt-4o-mini",
        "input_tokens": 120,
        "output_tokens": 48,
        "cost_usd": 0.0000468,
        "error": True,
        "error_type": "openai.RateLimitError",
        "error_message": "slow down\r\n",
    }
    line = format_span(row, parent_known=False)
    assert line == (
        "03:04:05.678 aaaaaaaa bbbbbbbb ↖cccccccc llm_call evil?[2Jname? 812.4ms gpt-4o-mini "
        "120→48 tok $0.000047 ERROR openai.RateLimitError: slow down??"
    )
