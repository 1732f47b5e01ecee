"""The Agents page in real Chromium: the coordination graph drawn as an SVG, its tables,
and agent names from the store shown as text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from .conftest import shot, write_rows

HOSTILE = "<img src=x onerror=window.__xss=1>"


@pytest.fixture(scope="module")
def agents_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server over one session: router -> researcher -> critic -> researcher, the
    router calling a writer, and an agent whose name is markup."""
    from _helpers import T0, span_row
    from llamonitor.server import ServerConfig, start_server

    def sp(i: int, sid: str, parent: str | None, start: int, dur: int, agent: str | None,
           **v: Any) -> dict[str, Any]:
        return span_row(i, span_id=sid, parent_span_id=parent, trace_id="t1", session_id="s1",
                        operation_name=sid, agent_name=agent, duration_ms=float(dur),
                        timestamp=T0 + timedelta(milliseconds=start), **v)

    rows = [
        sp(0, "root", None, 0, 400, "router", operation_type="agent"),
        sp(1, "a", "root", 10, 100, "researcher", model="m", input_tokens=900),
        sp(2, "b", "root", 120, 50, "critic", error=True),
        sp(3, "c", "root", 180, 100, "researcher", model="m", input_tokens=2500),
        sp(4, "d", "root", 290, 60, HOSTILE),
    ]
    d = tmp_path_factory.mktemp("agents-store")
    write_rows(d, rows)
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


def test_the_agents_page_draws_the_graph(page: Any, agents_server: Any) -> None:
    """Nav -> Agents (session s1): one SVG circle per agent, arrows for the handoffs,
    the loop researcher -> critic -> researcher listed, markup shown as text."""
    page.goto(agents_server.url.rstrip("/") + "/")
    page.click('#nav a[href="/agents"]')
    page.fill('input[name="session_id"]', "s1")
    page.wait_for_url("**session_id=s1**")
    page.wait_for_selector("svg.agent-graph g.node", timeout=15_000)
    agents = page.eval_on_selector_all("svg.agent-graph g.node",
                                       "els => els.map(e => e.dataset.agent).sort()")
    assert agents == sorted(["router", "researcher", "critic", HOSTILE])
    kinds = page.eval_on_selector_all(
        "svg.agent-graph g.edge",
        "els => els.map(e => e.dataset.source + '>' + e.dataset.target + ':' + e.dataset.kind)",
    )
    assert "router>researcher:call" in kinds and "researcher>critic:sequence" in kinds
    assert page.get_by_text("researcher → critic → researcher").first.is_visible()
    assert page.locator("span.agent-name", has_text=HOSTILE).first.is_visible()
    assert page.locator("svg.agent-graph text.node-label", has_text=HOSTILE).count() == 1
    assert page.evaluate("window.__xss") is None
    shot(page, "agents-graph")
    assert page.problems == []
