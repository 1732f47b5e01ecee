"""The report page in real Chromium shows the scores: feedback clicked on a
trace appears in the report's Scores section, by model; a score name holding
markup stays text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .conftest import off_loop, shot, write_rows

TRACE = "e" * 32
HOSTILE = "tone<img src=x onerror=window.__xss=1>"


@pytest.fixture(scope="module")
def scored_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import llamonitor
    from llamonitor.schema._scores import make_score, scores_table
    from llamonitor.schema.config import StorageConfig
    from llamonitor.server import ServerConfig, start_server
    from llamonitor.storage._scores import write_scores

    d = tmp_path_factory.mktemp("report-scores-store")
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    rows = []
    for i in range(2):
        row: dict[str, Any] = dict.fromkeys(llamonitor.SCHEMA.names)
        row.update(event_id=f"e{i}", session_id="s1", trace_id=TRACE, span_id=f"{i + 1:016x}",
                   parent_span_id=None if i == 0 else f"{1:016x}", operation_name=f"op{i}",
                   operation_type="llm_call", timestamp=t0 + timedelta(seconds=i),
                   duration_ms=100.0, model="gpt-4o", provider="openai", process_id=1)
        rows.append(row)
    write_rows(d, rows)
    score = make_score(HOSTILE, 0.5, label="<b>polite</b>", span_id=f"{2:016x}",
                       span_trace_id=TRACE)
    off_loop(write_scores, StorageConfig(output_dir=d), scores_table([score]))
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


def test_feedback_on_a_trace_shows_in_the_report(page: Any, scored_server: Any) -> None:
    base = scored_server.url.rstrip("/")
    page.goto(base + f"/traces/{TRACE}")
    page.wait_for_selector("section.feedback", timeout=15_000)
    page.click("button.thumb.up")
    page.wait_for_selector("text=Thanks: feedback saved.", timeout=15_000)
    page.goto(base + "/report")
    heading = page.wait_for_selector("section.card h2:text-is('Scores')", timeout=30_000)
    section = heading.evaluate_handle("h => h.parentElement").as_element()
    assert section is not None
    text = section.text_content() or ""
    assert "user_feedback" in text and "gpt-4o" in text
    assert HOSTILE in text and "<b>polite</b> 100.0%" in text  # markup shown as text
    assert section.query_selector("img") is None and section.query_selector("b") is None
    assert page.evaluate("window.__xss") is None
    # every score table fits its box: nothing cut off at the right edge
    clipped = section.evaluate(
        "s => [...s.querySelectorAll('.sub')].filter(b => b.scrollWidth > b.clientWidth + 1)"
        ".map(b => b.querySelector('h3').textContent)")
    assert clipped == []
    shot(page, "report-scores")
    assert page.problems == []
