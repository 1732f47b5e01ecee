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


SIX = ("planner", "router", "researcher", "critic", "writer", "coder")


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Six agents handing work back and forth, in both kinds: the planner calls each
    of the others, which then run one after another (researcher <-> critic <->
    writer ping-pong, coder <-> router), and the researcher calls the critic and
    the coder calls the writer."""
    from _helpers import T0, span_row
    from llamonitor.server import ServerConfig, start_server

    rows = []
    order = ("router", "researcher", "critic", "researcher", "critic", "writer", "critic",
             "writer", "coder", "router", "coder", "researcher")
    def sp(trace: str, sid: str, parent: str | None, start: int, dur: int, agent: str) -> None:
        rows.append(span_row(len(rows), span_id=f"{trace}-{sid}", trace_id=trace,
                             parent_span_id=None if parent is None else f"{trace}-{parent}",
                             session_id="busy", operation_name=agent, agent_name=agent,
                             duration_ms=float(dur),
                             timestamp=T0 + timedelta(seconds=10 * int(trace[1:]),
                                                      milliseconds=start)))

    for t in range(4):
        trace = f"t{t}"
        sp(trace, "root", None, 0, 5000, "planner")
        for i, agent in enumerate(order):
            sp(trace, f"c{i}", "root", 10 + 400 * i, 300 + 20 * i, agent)
        sp(trace, "r-critic", "c1", 20, 100, "critic")
        sp(trace, "c-writer", "c8", 3300, 100, "writer")
    d = tmp_path_factory.mktemp("busy-agents")
    write_rows(d, rows)
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


_BOXES = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.left, y: r.top, w: r.width, h: r.height, text: el.textContent}; };
  return {
    labels: [...document.querySelectorAll("svg.agent-graph .edge-label")].map(box),
    nodes: [...document.querySelectorAll("svg.agent-graph g.node circle")].map(box),
    names: [...document.querySelectorAll("svg.agent-graph .node-label")].map(box),
  };
}"""


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_edge_labels_of_a_busy_graph_do_not_overlap(page: Any, busy_server: Any) -> None:
    """Six agents with back-and-forth handoffs of both kinds: every edge has its label,
    and no label covers another label, an agent's circle or an agent's name."""
    page.goto(busy_server.url.rstrip("/") + "/agents?session_id=busy")
    page.wait_for_selector("svg.agent-graph g.node", timeout=15_000)
    edges = page.locator("svg.agent-graph g.edge").count()
    assert edges >= 15
    boxes = page.evaluate(_BOXES)
    labels = boxes["labels"]
    assert len(labels) == edges and len(boxes["nodes"]) == len(SIX)
    clashes = [(a["text"], b["text"]) for i, a in enumerate(labels) for b in labels[i + 1:]
               if _overlap(a, b)]
    covered = [(a["text"], i) for a in labels
               for i, n in enumerate(boxes["nodes"] + boxes["names"]) if _overlap(a, n)]
    shot(page, "agents-graph-busy")
    assert clashes == [] and covered == []
    assert page.problems == []


def test_a_session_page_links_to_its_agents_view(page: Any, busy_server: Any) -> None:
    """Session page -> "Agents view": the Agents page of that session, its graph drawn."""
    page.goto(busy_server.url.rstrip("/") + "/sessions/busy")
    page.click("a.agents-link")
    page.wait_for_url("**/agents?session_id=busy")
    page.wait_for_selector("svg.agent-graph g.node", timeout=15_000)
    assert page.locator('input[name="session_id"]').input_value() == "busy"
    assert page.locator("svg.agent-graph g.node").count() == len(SIX)
    assert page.problems == []
