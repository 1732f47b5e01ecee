"""``GET /api/spans`` as a user relies on it, over real Parquet, SQLite and
PostgreSQL stores: every filter, the text search, pages that walk every row
once in every order, and errors that name the parameter."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from _helpers import T0, span_row
from llamonitor.server._store import ServerStore, StoreInfo
from llamonitor.storage._duckdb import DuckDBQuery, Filters

from .conftest import RowStore

SUMMARY_KEYS = {
    "event_id", "session_id", "trace_id", "span_id", "parent_span_id", "operation_name",
    "operation_type", "timestamp", "duration_ms", "error", "error_type", "error_message",
    "provider", "model", "agent_name", "project_name", "input_tokens", "output_tokens",
    "total_tokens", "cost_usd",
}
SORTS = ("timestamp", "duration_ms", "cost_usd", "total_tokens")
OPS = ("llm.chat", "tool.search", "tool.fetch", "agent.run")


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def sample_rows() -> list[dict[str, Any]]:
    """26 spans: ties on every sort column (two spans per second), NULLs, several
    sessions, traces, models..., and the texts the search looks for."""
    rows = []
    for i in range(26):
        op = OPS[i % 4]
        rows.append(
            span_row(
                i,
                session_id=f"s{i % 3}",
                trace_id=f"{i % 5:032x}",
                parent_span_id=None if i < 5 else f"{i % 5:016x}",
                operation_name=op,
                operation_type="tool" if op.startswith("tool.") else "llm_call",
                timestamp=T0 + timedelta(seconds=i // 2),
                duration_ms=(5.0, 5.0, None, 12.5, 0.25)[i % 5],
                error=True if i % 7 == 3 else None,
                error_type="ValueError" if i % 7 == 3 else None,
                error_message="went wrong" if i % 7 == 3 else None,
                provider=("openai", "anthropic", None)[i % 3],
                model=("gpt-4o", "claude-3", None, "gpt-4o-mini")[i % 4],
                agent_name=("planner", None)[i % 2],
                project_name=("p1", "p2", None)[i % 3],
                input_tokens=(80, None, 80)[i % 3],
                output_tokens=(20, None, 20)[i % 3],
                total_tokens=(100, None, 100)[i % 3],
                cost_usd=(0.01, None, 0.01, 0.2)[i % 4],
            )
        )
    rows[3]["prompt_content"] = "What is the Weather in PARIS today?"
    rows[5].update(error=True, error_message="Rate limit: 100% of quota " + "x" * 500)
    rows[9].update(error=True, error_message="used 1000 of quota")
    rows[11]["operation_name"] = "tool.a_b"
    rows[12]["operation_name"] = "tool.axb"
    rows[13]["completion_content"] = "The answer is FORTY-TWO."
    return rows


def walk(client: TestClient, params: dict[str, Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Every span the filters keep, following ``next_cursor`` page by page."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        page = client.get("/api/spans", params={**params, "limit": limit, "cursor": cursor})
        assert page.status_code == 200, page.text
        body = page.json()
        out.extend(body["spans"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(body["spans"]) == limit
    raise AssertionError("the pages never end")


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in rows]


def expected_order(rows: list[dict[str, Any]], sort: str) -> list[str]:
    """Sorted as the API promises: NULL values last, ties by event_id."""
    column = sort.lstrip("-")
    by_id = sorted(rows, key=lambda r: r["event_id"])
    known = [r for r in by_id if r[column] is not None]
    known.sort(key=lambda r: r[column], reverse=sort.startswith("-"))  # stable: ids ascending
    return ids(known) + ids([r for r in by_id if r[column] is None])


def q_text(r: dict[str, Any]) -> str:
    texts = (r["operation_name"], r["error_message"], r["prompt_content"], r["completion_content"])
    return " ".join(t for t in texts if t).lower()


FILTER_CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"session": "s1"}, lambda r: r["session_id"] == "s1"),
    ({"trace": f"{2:032x}"}, lambda r: r["trace_id"] == f"{2:032x}"),
    ({"operation": "tool.search"}, lambda r: r["operation_name"] == "tool.search"),
    ({"operation": "tool.*"}, lambda r: r["operation_name"].startswith("tool.")),
    ({"operation": "tool.?etch"}, lambda r: r["operation_name"] == "tool.fetch"),
    ({"operation_type": "tool"}, lambda r: r["operation_type"] == "tool"),
    ({"model": "gpt-4o"}, lambda r: r["model"] == "gpt-4o"),
    ({"provider": "anthropic"}, lambda r: r["provider"] == "anthropic"),
    ({"agent": "planner"}, lambda r: r["agent_name"] == "planner"),
    ({"project": "p2"}, lambda r: r["project_name"] == "p2"),
    ({"status": "error"}, lambda r: bool(r["error"])),
    ({"status": "ok"}, lambda r: not r["error"]),
    ({"since": iso(T0 + timedelta(seconds=5))}, lambda r: r["timestamp"] >= T0 + timedelta(0, 5)),
    ({"until": iso(T0 + timedelta(seconds=5))}, lambda r: r["timestamp"] < T0 + timedelta(0, 5)),
    (
        {"since": iso(T0 + timedelta(seconds=3)), "until": "2024-05-01T12:00:06"},
        lambda r: T0 + timedelta(0, 3) <= r["timestamp"] < T0 + timedelta(0, 6),
    ),
    ({"min_duration_ms": 5}, lambda r: r["duration_ms"] is not None and r["duration_ms"] >= 5),
    ({"max_duration_ms": 5}, lambda r: r["duration_ms"] is not None and r["duration_ms"] <= 5),
    (
        {"min_duration_ms": 1, "max_duration_ms": 6},
        lambda r: r["duration_ms"] is not None and 1 <= r["duration_ms"] <= 6,
    ),
    ({"min_cost_usd": 0.1}, lambda r: r["cost_usd"] is not None and r["cost_usd"] >= 0.1),
    ({"max_cost_usd": 0.01}, lambda r: r["cost_usd"] is not None and r["cost_usd"] <= 0.01),
    ({"q": "weather"}, lambda r: "weather" in q_text(r)),  # the prompt, any case
    ({"q": "paris"}, lambda r: r["event_id"] == "e000003"),
    ({"q": "forty-two"}, lambda r: r["event_id"] == "e000013"),  # the completion
    ({"q": "WENT WRONG"}, lambda r: r["error_message"] == "went wrong"),  # the error message
    ({"q": "FETCH"}, lambda r: r["operation_name"] == "tool.fetch"),  # the name
    ({"q": "100%"}, lambda r: r["event_id"] == "e000005"),  # % is a character, not a wildcard
    ({"q": "a_b"}, lambda r: r["event_id"] == "e000011"),  # so is _
    ({"q": "no such text"}, lambda r: False),
    (
        {"session": "s0", "status": "ok", "operation": "tool.*", "model": "claude-3"},
        lambda r: r["session_id"] == "s0" and not r["error"]
        and r["operation_name"].startswith("tool.") and r["model"] == "claude-3",
    ),
]


@pytest.fixture
def sample(any_store: RowStore) -> RowStore:
    return any_store.write(sample_rows())


def test_every_filter_keeps_exactly_its_spans(
    sample: RowStore, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(sample)
    rows = sample_rows()
    assert len(walk(client, {})) == len(rows)
    for params, keep in FILTER_CASES:
        expected = {r["event_id"] for r in rows if keep(r)}
        assert expected != {r["event_id"] for r in rows}, f"{params} excludes nothing"
        got = ids(walk(client, params))
        assert sorted(got) == sorted(expected), params


def test_pages_walk_every_row_once_in_every_order(
    sample: RowStore, client_for: Callable[..., TestClient]
) -> None:
    """Pages of 3 over ties and NULLs: the concatenation is the whole order,
    no row skipped or repeated, NULL values last in both directions."""
    client = client_for(sample)
    rows = sample_rows()
    for sort in (*SORTS, *(f"-{s}" for s in SORTS)):
        got = ids(walk(client, {"sort": sort}, limit=3))
        assert got == expected_order(rows, sort), sort
    # with a filter too: the cursor goes on inside the filtered rows
    kept = [r for r in rows if r["model"] == "gpt-4o"]
    for sort in ("-duration_ms", "cost_usd", "-total_tokens"):
        got = ids(walk(client, {"sort": sort, "model": "gpt-4o"}, limit=2))
        assert got == expected_order(kept, sort), sort


def test_default_order_is_newest_first_with_a_page_of_50(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    rows = [span_row(i) for i in range(60)]
    client = client_for(any_store.write(rows))
    body = client.get("/api/spans").json()
    assert ids(body["spans"]) == [f"e{i:06d}" for i in range(59, 9, -1)]
    assert body["next_cursor"]
    last = client.get("/api/spans", params={"cursor": body["next_cursor"]}).json()
    assert ids(last["spans"]) == [f"e{i:06d}" for i in range(9, -1, -1)]
    assert last["next_cursor"] is None
    # a page that ends exactly at the last row says so: no cursor to an empty page
    exact = client.get("/api/spans", params={"limit": 60}).json()
    assert len(exact["spans"]) == 60 and exact["next_cursor"] is None


def test_a_span_is_its_summary_only(
    sample: RowStore, client_for: Callable[..., TestClient]
) -> None:
    """The summary columns (no captured content), the message capped, UTC times with Z."""
    client = client_for(sample)
    spans = {s["event_id"]: s for s in walk(client, {})}
    for span in spans.values():
        assert set(span) == SUMMARY_KEYS
        assert span["timestamp"].endswith("Z")
        assert isinstance(span["error"], bool)
    assert spans["e000005"]["error_message"] == ("Rate limit: 100% of quota " + "x" * 500)[:300]
    assert spans["e000005"]["error"] is True and spans["e000000"]["error"] is False
    first = spans["e000001"]
    assert first["timestamp"] == "2024-05-01T12:00:00Z"
    assert first["parent_span_id"] is None and first["duration_ms"] == 5.0
    assert (first["model"], first["provider"], first["agent_name"]) == ("claude-3", "anthropic",
                                                                        None)
    assert (first["input_tokens"], first["total_tokens"], first["cost_usd"]) == (None, None, None)
    assert spans["e000003"]["duration_ms"] == 12.5 and spans["e000003"]["cost_usd"] == 0.2


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinity_are_null_and_sort_with_the_nulls(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    rows = [
        span_row(0, duration_ms=math.nan, cost_usd=math.inf),
        span_row(1, duration_ms=2.0, cost_usd=-math.inf),
        span_row(2, duration_ms=None, cost_usd=0.5),
        span_row(3, duration_ms=1.0, cost_usd=math.nan),
    ]
    client = client_for(write_store("parquet", rows))
    for sort in ("duration_ms", "-duration_ms", "cost_usd", "-cost_usd"):
        seen = []
        cursor = None
        while True:
            page = client.get("/api/spans", params={"sort": sort, "limit": 1, "cursor": cursor})
            body = strict_json(page.text)
            seen += ids(body["spans"])
            if not (cursor := body["next_cursor"]):
                break
        nulls_last = {"duration_ms": ["e000003", "e000001", "e000000", "e000002"],
                      "-duration_ms": ["e000001", "e000003", "e000000", "e000002"],
                      "cost_usd": ["e000002", "e000000", "e000001", "e000003"],
                      "-cost_usd": ["e000002", "e000000", "e000001", "e000003"]}
        assert seen == nulls_last[sort], sort
    spans = {s["event_id"]: s for s in strict_json(client.get("/api/spans").text)["spans"]}
    assert spans["e000000"]["duration_ms"] is None and spans["e000000"]["cost_usd"] is None


BAD_INPUTS = [
    ({"since": "banana"}, "since"),
    ({"until": "yesterday-ish"}, "until"),
    ({"since": "2024-05-02", "until": "2024-05-01"}, "until"),
    ({"limit": 0}, "limit"),
    ({"limit": -5}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "W10"}, "cursor"),  # a valid encoding of []
    ({"sort": "prompt_content"}, "sort"),
    ({"sort": "timestamp; DROP TABLE spans"}, "sort"),
    ({"status": "maybe"}, "status"),
    ({"min_duration_ms": 10, "max_duration_ms": 1}, "max_duration_ms"),
    ({"min_cost_usd": 1, "max_cost_usd": 0.5}, "max_cost_usd"),
    ({"min_duration_ms": -1}, "min_duration_ms"),
    ({"min_cost_usd": "cheap"}, "min_cost_usd"),
    ({"q": "x" * 600}, "q"),
]


@pytest.mark.parametrize(("params", "parameter"), BAD_INPUTS)
def test_a_bad_parameter_is_a_400_naming_it(
    demo_store: Path, client_for: Callable[..., TestClient], params: dict[str, Any],
    parameter: str,
) -> None:
    answer = client_for(demo_store).get("/api/spans", params=params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


def test_a_cursor_of_another_sort_or_endpoint_is_refused(
    demo_store: Path, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(demo_store)
    cursor = client.get("/api/spans", params={"sort": "cost_usd", "limit": 2}).json()[
        "next_cursor"
    ]
    assert cursor
    assert client.get("/api/spans", params={"sort": "cost_usd", "cursor": cursor}).status_code \
        == 200
    for params in ({"sort": "-cost_usd"}, {"sort": "duration_ms"}):
        answer = client.get("/api/spans", params={**params, "cursor": cursor})
        assert answer.status_code == 400 and answer.json()["parameter"] == "cursor"
    session_cursor = client.get("/api/sessions", params={"limit": 1}).json()["next_cursor"]
    answer = client.get("/api/spans", params={"cursor": session_cursor})
    assert answer.status_code == 400 and answer.json()["parameter"] == "cursor"


def test_the_page_size_bound_is_the_servers_setting(
    demo_store: Path, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(demo_store, max_page_size=10)
    assert len(client.get("/api/spans", params={"limit": 10}).json()["spans"]) == 10
    answer = client.get("/api/spans", params={"limit": 11})
    assert answer.status_code == 400
    assert answer.json()["parameter"] == "limit" and "10" in answer.json()["error"]


def test_an_empty_store_is_an_empty_page(
    any_store: RowStore, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(any_store)
    for params in ({}, {"sort": "cost_usd", "q": "x", "status": "error"}):
        answer = client.get("/api/spans", params=params)
        assert answer.status_code == 200
        assert answer.json() == {"spans": [], "next_cursor": None}


def test_the_demo_store_pages_through_all_its_spans(
    demo_store: Path, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(demo_store)
    total = client.get("/api/health").json()["store"]["rows"]
    got = walk(client, {}, limit=7)
    assert len(got) == len(set(ids(got))) == total > 0
    stamps = [s["timestamp"] for s in got]
    assert stamps == sorted(stamps, reverse=True)
    failed = walk(client, {"status": "error"})
    assert failed and all(s["error"] for s in failed)


def test_a_sql_store_is_asked_only_for_the_filtered_rows(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    """The filters the store can apply reach its own WHERE (the pushdown)."""
    from llamonitor.storage import sqlite as sqlite_store

    sql = write_store("sqlite", sample_rows()).sql
    assert sql is not None
    real = sqlite_store.query(sql.config())
    asked: list[Filters] = []

    def source(f: Filters) -> Any:
        asked.append(f)
        return real._source(f)

    store = ServerStore(lambda: DuckDBQuery(source), StoreInfo("test", "sqlite", None), 1)
    try:
        client = client_for(store)
        params = {"session": "s1", "operation": "tool.*", "project": "p2",
                  "since": "2024-05-01T12:00:02Z", "until": "2024-05-01T12:00:30Z"}
        got = walk(client, params)
        assert got and all(s["session_id"] == "s1" for s in got)
        assert asked[-1] == Filters(
            session_id="s1", operation="tool.*", project_name="p2",
            since=datetime(2024, 5, 1, 12, 0, 2, tzinfo=timezone.utc),
            until=datetime(2024, 5, 1, 12, 0, 30, tzinfo=timezone.utc),
        )
    finally:
        store.close()
        real.close()


@pytest.mark.parametrize(("kind", "params", "parameter"), [
    ("parquet", {"since": "99999999999d"}, "since"),
    ("parquet", {"until": "9999999999999999999999w"}, "until"),
    ("postgres", {"since": "0001-01-01T00:00+14:00"}, "since"),
    ("sqlite", {"until": "0001-01-01T00:00+14:00"}, "until"),
    ("postgres", {"session": "a\x00b"}, "session"),
    ("postgres", {"q": "a\x00b"}, "q"),
    ("postgres", {"since": "0002-01-01T00:00-14:00", "until": "9998-12-31T10:00+14:00"}, "until"),
])
def test_a_filter_value_no_store_can_hold_is_never_a_500(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient], kind: str,
    params: dict[str, Any], parameter: str,
) -> None:
    client = client_for(write_store(kind, [span_row(0)]))
    answer = client.get("/api/spans", params=params)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["parameter"] == parameter
