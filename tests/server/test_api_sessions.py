"""``GET /api/sessions`` and ``GET /api/sessions/{session_id}`` over real
Parquet, SQLite and PostgreSQL stores: the totals, the filters (they choose
the spans the totals are over), pages in every order, the conversation view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from _helpers import T0, span_row

from .conftest import RowStore
from .test_api_spans import iso

SORTS = ("last_seen", "first_seen", "spans", "traces", "cost_usd", "errors")
COUNTS = (3, 3, 2, 5, 2, 3, 1, 4)
"""Spans of the sessions of :func:`many_sessions` (ties on purpose)."""


def many_sessions() -> list[dict[str, Any]]:
    """Sessions ``u0``..``u7``: ties on every sort, ``u2`` and ``u6`` never priced."""
    rows = []
    i = 0
    for k, n in enumerate(COUNTS):
        for j in range(n):
            rows.append(span_row(
                i,
                session_id=f"u{k}",
                trace_id=f"{k:030x}{j % 2:02x}",
                timestamp=T0 + timedelta(seconds=(k % 4) * 10 + j),
                model="gpt-4o" if j % 2 == 0 else "claude-3",
                error=True if (k + j) % 4 == 0 else None,
                input_tokens=10 * (j + 1),
                output_tokens=j,
                total_tokens=10 * (j + 1) + j,
                cost_usd=None if k in (2, 6) else 0.25 * (j % 2),
            ))
            i += 1
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the API should say per session, computed here."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(r["session_id"], {
            "session_id": r["session_id"], "spans": 0, "traces": set(), "input_tokens": None,
            "output_tokens": None, "total_tokens": None, "cost_usd": None, "errors": 0,
            "first_seen": r["timestamp"], "last_seen": r["timestamp"],
        })
        s["spans"] += 1
        s["traces"].add(r["trace_id"])
        for c in ("input_tokens", "output_tokens", "total_tokens", "cost_usd"):
            if r[c] is not None:  # a sum over the spans that have one; null: none has
                s[c] = (s[c] or 0) + r[c]
        s["errors"] += bool(r["error"])
        s["first_seen"] = min(s["first_seen"], r["timestamp"])
        s["last_seen"] = max(s["last_seen"], r["timestamp"])
    for s in out.values():
        s["traces"] = len(s["traces"])
        s["first_seen"], s["last_seen"] = iso(s["first_seen"]), iso(s["last_seen"])
    return out


def walk(client: TestClient, params: dict[str, Any], limit: int = 1000) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = client.get("/api/sessions", params={**params, "limit": limit, "cursor": cursor})
        assert page.status_code == 200, page.text
        out.extend(page.json()["sessions"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("the pages never end")


def expected_order(sessions: list[dict[str, Any]], sort: str) -> list[str]:
    column = sort.lstrip("-")
    by_id = sorted(sessions, key=lambda s: s["session_id"])
    known = [s for s in by_id if s[column] is not None]
    known.sort(key=lambda s: s[column], reverse=sort.startswith("-"))
    return [s["session_id"] for s in known + [s for s in by_id if s[column] is None]]


def test_each_session_has_its_totals(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    rows = many_sessions()
    client = client_for(any_store.write(rows))
    got = {s["session_id"]: s for s in walk(client, {})}
    assert got.keys() == totals(rows).keys()
    for sid, want in totals(rows).items():
        cost = got[sid].pop("cost_usd")
        expected_cost = want.pop("cost_usd")
        assert got[sid] == want, sid
        assert cost == pytest.approx(expected_cost) if expected_cost is not None else cost is None


def test_the_filters_choose_the_spans_the_totals_are_over(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    rows = many_sessions()
    client = client_for(any_store.write(rows))
    for params, keep in (
        ({"model": "claude-3"}, lambda r: r["model"] == "claude-3"),
        ({"status": "error"}, lambda r: bool(r["error"])),
        ({"since": iso(T0 + timedelta(seconds=21))}, lambda r: r["timestamp"] >= T0
         + timedelta(seconds=21)),
        ({"session": "u3", "status": "ok"}, lambda r: r["session_id"] == "u3" and not r["error"]),
    ):
        want = totals([r for r in rows if keep(r)])
        got = {s["session_id"]: s for s in walk(client, params)}
        assert got.keys() == want.keys(), params
        for sid in want:
            assert got[sid]["spans"] == want[sid]["spans"], (params, sid)
            assert got[sid]["errors"] == want[sid]["errors"], (params, sid)
            assert got[sid]["first_seen"] == want[sid]["first_seen"], (params, sid)


def test_pages_walk_every_session_once_in_every_order(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    rows = many_sessions()
    client = client_for(any_store.write(rows))
    sessions = list(totals(rows).values())
    for sort in (*SORTS, *(f"-{s}" for s in SORTS)):
        got = [s["session_id"] for s in walk(client, {"sort": sort}, limit=3)]
        assert got == expected_order(sessions, sort), sort
    default = [s["session_id"] for s in walk(client, {}, limit=2)]
    assert default == expected_order(sessions, "-last_seen")


def conversation() -> list[dict[str, Any]]:
    """Session ``chat``: trace ``a`` (a root and two calls), trace ``b`` started
    later (a long prompt and completion, a failure); session ``other``."""
    a, b = "a" * 32, "b" * 32
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    return [
        span_row(0, session_id="chat", trace_id=a, span_id="0" * 16, operation_name="chat.turn",
                 operation_type="agent_workflow", timestamp=at(0), duration_ms=3000.0),
        span_row(1, session_id="chat", trace_id=a, parent_span_id="0" * 16,
                 operation_name="llm.call", timestamp=at(1), duration_ms=500.0,
                 prompt_content="first question", completion_content="draft answer",
                 total_tokens=30, cost_usd=0.5),
        span_row(2, session_id="chat", trace_id=a, parent_span_id="0" * 16,
                 operation_name="llm.call", timestamp=at(2), duration_ms=100.0,
                 prompt_content="follow-up", completion_content="final answer",
                 total_tokens=12, cost_usd=0.25),
        span_row(3, session_id="chat", trace_id=b, parent_span_id="9" * 16,
                 operation_name="tool.search", timestamp=at(10), duration_ms=50.0,
                 error=True),
        span_row(4, session_id="chat", trace_id=b, parent_span_id="9" * 16,
                 operation_name="llm.call", timestamp=at(10.5), duration_ms=None,
                 prompt_content="p" * 2500, completion_content="c" * 2500),
        span_row(5, session_id="other", trace_id="c" * 32, timestamp=at(1)),
    ]


def test_a_session_is_its_totals_and_its_traces_as_a_conversation(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    rows = conversation()
    client = client_for(any_store.write(rows))
    answer = client.get("/api/sessions/chat")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    want = totals(rows)["chat"]
    assert body["session"] == {**want, "cost_usd": pytest.approx(0.75)}
    first, second = body["traces"]
    assert first == {
        "trace_id": "a" * 32, "root_operation": "chat.turn", "start": "2024-05-01T12:00:00Z",
        "duration_ms": 3000.0, "spans": 3, "errors": 0, "cost_usd": 0.75, "total_tokens": 42,
        "prompt": "first question", "completion": "final answer",
    }
    # no root span stored: the first span names it; the content is capped
    assert second["root_operation"] == "tool.search"
    assert second["start"] == "2024-05-01T12:00:10Z"
    assert second["duration_ms"] == pytest.approx(500.0)
    assert (second["spans"], second["errors"], second["cost_usd"]) == (2, 1, None)
    assert second["prompt"] == "p" * 2000 and second["completion"] == "c" * 2000
    other = client.get("/api/sessions/other").json()
    assert [t["trace_id"] for t in other["traces"]] == ["c" * 32]
    assert other["traces"][0]["prompt"] is None and other["traces"][0]["completion"] is None


def test_an_unknown_session_is_a_404(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(any_store.write(conversation()))
    for sid in ("nope", "chat ", "CHAT", "it's; DROP TABLE x", "%", "ch_t"):
        answer = client.get("/api/sessions/" + quote(sid, safe=""))
        assert answer.status_code == 404, sid
        assert answer.json()["error"].startswith("session_id: no session")


def test_a_session_id_of_any_characters_is_found(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    odd = "user 1/it's ünïcode %_?#"
    client = client_for(write_store("parquet", [span_row(0, session_id=odd)]))
    answer = client.get("/api/sessions/" + quote(odd, safe=""))
    assert answer.status_code == 200, answer.text
    assert answer.json()["session"]["session_id"] == odd
    assert [s["session_id"] for s in client.get("/api/sessions").json()["sessions"]] == [odd]


def test_an_empty_store_has_no_sessions(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(any_store)
    assert client.get("/api/sessions").json() == {"sessions": [], "next_cursor": None}
    assert client.get("/api/sessions/anyone").status_code == 404


@pytest.mark.parametrize(("params", "parameter"), [
    ({"sort": "duration_ms"}, "sort"),
    ({"limit": 0}, "limit"),
    ({"limit": 100_000}, "limit"),
    ({"cursor": "e30"}, "cursor"),
    ({"since": "soon"}, "since"),
    ({"min_cost_usd": 2, "max_cost_usd": 1}, "max_cost_usd"),
])
def test_a_bad_parameter_is_a_400_naming_it(
    demo_store: Path, client_for: Callable[..., TestClient], params: dict[str, Any],
    parameter: str,
) -> None:
    answer = client_for(demo_store).get("/api/sessions", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["parameter"] == parameter and parameter in answer.json()["error"]


def test_the_demo_sessions(demo_store: Path, client_for: Callable[..., TestClient]) -> None:
    client = client_for(demo_store)
    sessions = walk(client, {}, limit=1)
    assert sorted(s["session_id"] for s in sessions) == [
        "alice-1", "alice-2", "bob-1", "bob-2", "carol-1", "carol-2"
    ]
    assert sum(s["spans"] for s in sessions) == client.get("/api/health").json()["store"]["rows"]
    one = client.get("/api/sessions/alice-1").json()
    assert one["session"] == next(s for s in sessions if s["session_id"] == "alice-1")
    starts = [t["start"] for t in one["traces"]]
    assert starts == sorted(starts) and len(starts) == one["session"]["traces"]
    assert sum(t["spans"] for t in one["traces"]) == one["session"]["spans"]


def test_a_session_id_holding_nul_is_a_400(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    """No SQL store can hold one (PostgreSQL refuses it): refused, naming session_id."""
    client = client_for(any_store.write(conversation()))
    answer = client.get("/api/sessions/a%00b")
    assert answer.status_code == 400
    assert answer.json()["parameter"] == "session_id"
