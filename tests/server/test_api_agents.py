"""GET /api/agents/graph over real Parquet, SQLite and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from _helpers import T0, span_row


def _rows() -> list[dict[str, Any]]:
    from datetime import timedelta

    def sp(i: int, sid: str, parent: str | None, start_ms: int, dur_ms: int,
           agent: str | None, session: str = "s1", **v: Any) -> dict[str, Any]:
        return span_row(i, span_id=sid, parent_span_id=parent, trace_id="t-" + session,
                        session_id=session, operation_name=sid, agent_name=agent,
                        timestamp=T0 + timedelta(milliseconds=start_ms),
                        duration_ms=float(dur_ms), **v)

    return [
        sp(0, "root", None, 0, 100, None),
        sp(1, "p1", "root", 0, 40, "planner"),
        sp(2, "s1", "p1", 5, 20, "search", error=True),
        sp(3, "w1", "root", 50, 30, "writer", model="m", input_tokens=700),
        sp(4, "other", None, 0, 10, "lonely", session="s2"),
    ]


def test_the_graph_of_a_session_on_every_store(
    any_store: Any, client_for: Callable[..., TestClient]
) -> None:
    """Each store answers the same nodes and handoffs; session_id narrows the scope."""
    client = client_for(any_store.write(_rows()))
    r = client.get("/api/agents/graph", params={"session_id": "s1"})
    assert r.status_code == 200, r.text
    g = r.json()
    assert {n["agent"] for n in g["nodes"]} == {"planner", "search", "writer"}
    edges = {(e["source"], e["target"], e["kind"]): e for e in g["edges"]}
    assert set(edges) == {("planner", "search", "call"), ("planner", "writer", "sequence")}
    assert edges[("planner", "search", "call")]["success_rate"] == 0.0
    assert edges[("planner", "search", "call")]["latency_ms"] == 5.0
    assert edges[("planner", "writer", "sequence")]["latency_ms"] == 10.0
    assert edges[("planner", "writer", "sequence")]["context_tokens"] == 700
    everything = client.get("/api/agents/graph", params={"since": "2024-04-30"}).json()
    assert "lonely" in {n["agent"] for n in everything["nodes"]}


def test_bad_parameters_are_named(tmp_path: Any, client_for: Callable[..., TestClient],
                                  write_store: Callable[..., Any]) -> None:
    """A time that does not parse, or until before since, is a 400 naming the parameter."""
    client = client_for(write_store("parquet", _rows()))
    r = client.get("/api/agents/graph", params={"since": "yesterday-ish"})
    assert r.status_code == 400 and r.json()["parameter"] == "since"
    r = client.get("/api/agents/graph", params={"since": "2024-05-02", "until": "2024-05-01"})
    assert r.status_code == 400 and r.json()["parameter"] == "until"
    empty = client.get("/api/agents/graph", params={"session_id": "nobody"}).json()
    assert empty["nodes"] == [] and empty["spans"] == 0
