"""The web UI as a person uses it, in real Chromium against a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from _helpers import span_row

from .conftest import shot, write_rows

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
PAYLOAD = SCRIPT + IMG


def _url(server: Any, path: str) -> str:
    return str(server.url.rstrip("/") + path)


def test_dashboard_with_a_picked_range(page: Any, demo_server: Any) -> None:
    page.goto(_url(demo_server, "/"))
    page.wait_for_selector("canvas", timeout=15_000)  # the charts drew
    assert page.get_by_text("Most expensive operations").is_visible()
    page.click('[data-range="24h"]')
    page.wait_for_url(re.compile(r"since=1d"))
    page.wait_for_selector("canvas")
    shot(page, "dashboard")
    assert page.problems == []


def test_filter_the_traces_open_one_expand_a_span_and_read_its_prompt(
    page: Any, demo_server: Any
) -> None:
    page.goto(_url(demo_server, "/traces?status=error"))
    page.wait_for_selector('a[href^="/traces/"]', timeout=15_000)
    api = httpx.get(_url(demo_server, "/api/traces?status=error&limit=500")).json()
    shown = page.eval_on_selector_all(
        'table a[href^="/traces/"]', "els => [...new Set(els.map(e => e.getAttribute('href')))]"
    )
    assert {f"/traces/{t['trace_id']}" for t in api["traces"]} >= set(shown) and shown
    shot(page, "traces-filtered")
    # A trace whose LLM spans have a captured prompt.
    spans = httpx.get(_url(demo_server, "/api/spans?q=&limit=1000")).json()["spans"]
    trace_id = next(s["trace_id"] for s in spans if s["operation_type"] == "llm_call")
    page.goto(_url(demo_server, f"/traces/{trace_id}"))
    page.wait_for_selector("[data-span-row]", timeout=15_000)
    rows_before = page.locator("[data-span-row]").count()
    page.click("text=Collapse all")
    assert page.locator("[data-span-row]:visible").count() < rows_before
    page.click("text=Expand all")
    assert page.locator("[data-span-row]:visible").count() == rows_before
    tree = httpx.get(_url(demo_server, f"/api/traces/{trace_id}")).json()
    llm = next(s for s in tree["spans"] if s["operation_type"] == "llm_call")
    detail = httpx.get(_url(demo_server, f"/api/traces/{trace_id}/spans/{llm['span_id']}")).json()
    page.click(f'[data-span-row][data-span-id="{llm["span_id"]}"]')
    panel = page.locator("aside.panel")
    panel.wait_for(timeout=10_000)
    if detail.get("prompt_content"):
        assert detail["prompt_content"][:40] in panel.inner_text()
    assert llm["operation_name"] in panel.inner_text()
    shot(page, "trace-with-span")
    # Follow the link to its session.
    session = tree["session_id"]
    page.click(f'a[href="/sessions/{session}"] >> nth=0')
    page.wait_for_url(re.compile(f"/sessions/{re.escape(session)}"))
    page.wait_for_selector("ol.timeline", timeout=15_000)
    assert trace_id[:8] in page.inner_text("body") or page.locator(
        f'a[href="/traces/{trace_id}"]'
    ).count()
    shot(page, "session")
    assert page.problems == []


def test_sessions_report_and_live_pages_render(page: Any, demo_server: Any) -> None:
    for name, path, ready in (
        ("sessions", "/sessions", 'a[href^="/sessions/"]'),
        ("report", "/report", "text=Suggestions"),
        ("live", "/live", "table.grid.live"),
    ):
        page.goto(_url(demo_server, path))
        page.wait_for_selector(ready, timeout=20_000)
        shot(page, name)
    assert page.problems == []


def test_a_live_span_arrives_in_the_open_page(page: Any, demo_server: Any) -> None:
    page.goto(_url(demo_server, "/live"))
    page.wait_for_selector("table.grid.live", timeout=15_000)
    page.wait_for_timeout(1500)  # the stream is open and the poller took the store as seen
    now = datetime.now(timezone.utc)
    write_rows(
        demo_server.directory,
        [span_row(0, event_id="live-1", operation_name="live.arrived", session_id="live-s",
                  trace_id="a" * 32, timestamp=now)],
    )
    page.wait_for_selector("text=live.arrived", timeout=15_000)
    shot(page, "live-arrived")


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from llamonitor.server import ServerConfig, start_server

    d = tmp_path_factory.mktemp("hostile")
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    common = dict(
        session_id="s" + PAYLOAD, trace_id="t" + PAYLOAD, model=PAYLOAD, provider=PAYLOAD,
        agent_name=PAYLOAD, project_name=PAYLOAD, error_type=PAYLOAD, error_message=PAYLOAD,
        prompt_content=PAYLOAD, completion_content=PAYLOAD, operation_type=PAYLOAD,
        custom_attributes=json.dumps({PAYLOAD: PAYLOAD}), input_tokens=10, output_tokens=5,
        total_tokens=15, cost_usd=0.001,
    )
    write_rows(d, [
        span_row(0, operation_name="root" + PAYLOAD, timestamp=now, duration_ms=50.0,
                 span_id="0" * 16, error=True, **common),
        span_row(1, operation_name="child" + PAYLOAD, timestamp=now + timedelta(milliseconds=5),
                 span_id="1" * 16, parent_span_id="0" * 16, duration_ms=20.0, **common),
    ])
    handle = start_server(ServerConfig(port=0), directory=d)
    handle.directory = d
    yield handle
    handle.stop()


def test_hostile_text_in_every_field_stays_text(page: Any, hostile_server: Any) -> None:
    from urllib.parse import quote

    trace = quote("t" + PAYLOAD, safe="")
    session = quote("s" + PAYLOAD, safe="")
    pages = ["/", "/traces", f"/traces/{trace}", f"/traces/{trace}?span={'1' * 16}", "/sessions",
             f"/sessions/{session}", "/report", "/live"]
    for i, path in enumerate(pages):
        page.goto(_url(hostile_server, path))
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("script:not([src])").count() == 0, path  # no script got in
        assert page.locator("img[src='x']").count() == 0, path
        shot(page, f"hostile-{i}")
    # The payload shows as text where the page shows names.
    page.goto(_url(hostile_server, f"/traces/{trace}"))
    page.wait_for_selector("[data-span-row]", timeout=15_000)
    assert "<script>window.__xss=1</script>" in page.inner_text("body")
    assert page.evaluate("window.__xss") is None
    assert [p for p in page.problems if "Content Security Policy" in p] == []


@pytest.fixture(scope="module")
def big_trace_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from llamonitor.server import ServerConfig, start_server

    d: Path = tmp_path_factory.mktemp("big")
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    rows = [span_row(0, span_id=f"{0:016x}", trace_id="b" * 32, operation_name="root",
                     timestamp=t0, duration_ms=10_000.0)]
    for i in range(1, 10_000):
        rows.append(span_row(i, span_id=f"{i:016x}", parent_span_id=f"{0:016x}",
                             trace_id="b" * 32, operation_name=f"step.{i}",
                             timestamp=t0 + timedelta(milliseconds=i), duration_ms=1.0))
    write_rows(d, rows)
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


def test_a_trace_of_10000_spans_is_a_virtualized_list(page: Any, big_trace_server: Any) -> None:
    page.goto(_url(big_trace_server, "/traces/" + "b" * 32))
    page.wait_for_selector("[data-span-row]", timeout=30_000)
    in_dom = page.locator("[data-span-row]").count()
    assert 0 < in_dom < 500, in_dom
    assert page.locator("text=step.9999").count() == 0
    page.eval_on_selector("[data-virtual-scroll]", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_selector("text=step.9999", timeout=10_000)
    assert page.locator("[data-span-row]").count() < 500
    shot(page, "trace-10000")
    assert page.problems == []
