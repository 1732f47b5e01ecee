"""Feedback on a trace in real Chromium: thumbs down with a comment is stored
(seen in GET /api/scores) and shown; a comment holding markup stays text."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .conftest import shot, write_rows

TRACE = "f" * 32


@pytest.fixture(scope="module")
def trace_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import llamonitor
    from llamonitor.server import ServerConfig, start_server

    d = tmp_path_factory.mktemp("feedback-store")
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    rows = []
    for i in range(3):
        row: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
        row.update(event_id=f"e{i}", session_id="s1", trace_id=TRACE, span_id=f"{i + 1:016x}",
                   parent_span_id=None if i == 0 else f"{1:016x}", operation_name=f"op{i}",
                   operation_type="llm_call", timestamp=t0 + timedelta(seconds=i),
                   duration_ms=100.0, model="gpt-4o", process_id=1)
        rows.append(row)
    write_rows(d, rows)
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


def _get(server: Any, path: str) -> Any:
    with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=10) as r:
        return json.loads(r.read())


def test_thumbs_down_with_a_comment_is_stored_and_shown(page: Any, trace_server: Any) -> None:
    page.goto(trace_server.url.rstrip("/") + f"/traces/{TRACE}")
    page.wait_for_selector("section.feedback", timeout=15_000)
    assert page.text_content("ul.scores") == "No scores yet."
    hostile = "cites the wrong <b>year</b><img src=x onerror=window.__xss=1>"
    page.fill("textarea.feedback-comment", hostile)
    page.click("button.thumb.down")
    page.wait_for_selector("text=Thanks: feedback saved.", timeout=15_000)
    item = page.text_content('ul.scores li[data-name="user_feedback"]') or ""
    assert "✗ bad" in item and "<b>year</b>" in item  # markup shown as text
    assert page.evaluate("window.__xss") is None
    shot(page, "trace-feedback")
    stored = _get(trace_server, f"/api/scores?trace_id={TRACE}")["scores"]
    assert [(s["name"], s["value"], s["source"], s["target_found"]) for s in stored] == [
        ("user_feedback", 0.0, "human", True)
    ]
    assert stored[0]["comment"].startswith("cites the wrong")
    page.reload()
    page.wait_for_selector('ul.scores li[data-name="user_feedback"]', timeout=15_000)
    page.click("button.thumb.up")  # changing one's mind replaces the thumb
    page.wait_for_selector("text=✓ good", timeout=15_000)
    stored = _get(trace_server, f"/api/scores?trace_id={TRACE}")["scores"]
    assert [s["value"] for s in stored] == [1.0]
    assert page.problems == []
