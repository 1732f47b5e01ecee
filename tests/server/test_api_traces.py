"""``GET /api/traces`` (figures over all of a matching trace's spans, every sort,
keyset pages without skips or repeats through ties and NULLs) and ``GET
/api/traces/{trace_id}/spans/{span_id}`` (every column, the attributes parsed),
over Parquet, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from llamonitor.server._traces import TracePage

from ._fixtures_traces import Made, at, iso, kind, made, span  # noqa: F401  (kind: a fixture)


def traces_rows() -> list[dict[str, Any]]:
    """Nine traces: equal span counts (ties), costs unknown on some (NULLs)."""
    rows: list[dict[str, Any]] = []
    for i in range(9):
        trace = f"tr{i}"
        base = 1000.0 * i
        n = 1 + i % 3
        cost = None if i % 4 == 0 else 0.01 * (i % 5)
        rows.append(span("root", None, base, 100 + 10 * (i % 2), trace=trace, cost_usd=cost,
                         model="m-a" if i % 2 else None, session_id=f"s{i % 2}",
                         operation_name=f"root{i}", input_tokens=i))
        for j in range(1, n):
            rows.append(span(f"k{j}", "root", base + 5 * j, 20 + i, trace=trace,
                             model="m-b", error=True if (i + j) % 4 == 0 else None,
                             cost_usd=0.001 * j, input_tokens=1))
    return rows


def expected_traces(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in sorted({r["trace_id"] for r in rows}):
        mine = [r for r in rows if r["trace_id"] == t]
        start = min(r["timestamp"] for r in mine)
        end = max(r["timestamp"] + timedelta(milliseconds=r["duration_ms"]) for r in mine)
        costs = [r["cost_usd"] for r in mine if r["cost_usd"] is not None]
        out[t] = {
            "trace_id": t,
            "session_id": mine[0]["session_id"],
            "root_operation": next(r["operation_name"] for r in mine if not r["parent_span_id"]),
            "start": iso(start),
            "end": iso(end),
            "duration_ms": (end - start) / timedelta(milliseconds=1),
            "spans": len(mine),
            "errors": sum(1 for r in mine if r["error"]),
            "input_tokens": sum(r["input_tokens"] for r in mine),
            "output_tokens": None,
            "total_tokens": None,
            "cost_usd": sum(costs) if costs else None,
            "models": sorted({r["model"] for r in mine if r["model"]}),
        }
    return out


ROWS = traces_rows()
EXPECTED = expected_traces(ROWS)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[Made]:  # noqa: F811
    yield from made(kind, ROWS, tmp_path)


def pages(m: Made, **params: Any) -> list[dict[str, Any]]:
    """Every trace, page after page."""
    c = m.client()
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        r = c.get("/api/traces", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        TracePage.model_validate(body)
        out.extend(body["traces"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("the cursor never ended")


def test_figures_are_over_all_of_each_trace(store: Made) -> None:
    got = {t["trace_id"]: t for t in pages(store, limit=1000)}
    assert set(got) == set(EXPECTED)
    for t, want in EXPECTED.items():
        have = dict(got[t])
        assert have.pop("cost_usd") == pytest.approx(want["cost_usd"]), t
        assert have == {k: v for k, v in want.items() if k != "cost_usd"}, t


def key_of(name: str, t: dict[str, Any]) -> Any:
    return t["start"] if name == "start" else t[name]


@pytest.mark.parametrize("sort", ["start", "-start", "duration_ms", "-duration_ms", "cost_usd",
                                  "-cost_usd", "spans", "-spans", "errors", "-errors"])
def test_every_sort_pages_without_skips_or_repeats(store: Made, sort: str) -> None:
    name, desc = sort.lstrip("-"), sort.startswith("-")
    known = [t for t in EXPECTED.values() if key_of(name, t) is not None]
    unknown = [t for t in EXPECTED.values() if key_of(name, t) is None]
    known.sort(key=lambda t: (key_of(name, t), t["trace_id"]), reverse=desc)
    unknown.sort(key=lambda t: t["trace_id"], reverse=desc)
    want = [t["trace_id"] for t in known + unknown]  # NULLs last either way
    for limit in (1, 2, 4):
        got = [t["trace_id"] for t in pages(store, sort=sort, limit=limit)]
        assert got == want, (sort, limit)


def test_the_default_is_latest_first(store: Made) -> None:
    got = [t["trace_id"] for t in pages(store, limit=3)]
    assert got == [f"tr{i}" for i in reversed(range(9))]


def test_a_trace_matches_if_one_span_does_and_keeps_all_its_figures(store: Made) -> None:
    errors = pages(store, status="error")
    assert {t["trace_id"] for t in errors} == {t for t, e in EXPECTED.items() if e["errors"]}
    for t in errors:
        assert t["spans"] == EXPECTED[t["trace_id"]]["spans"]
    # A time bound on the spans, not on the traces: a trace of spans on both
    # sides matches, with its earlier spans counted too.
    since = iso(at(8004))
    late = pages(store, since=since)
    assert [t["trace_id"] for t in late] == ["tr8"]
    assert late[0]["spans"] == 3 and late[0]["start"] == iso(at(8000))
    assert {t["trace_id"] for t in pages(store, model="m-a")} == {"tr1", "tr3", "tr5", "tr7"}
    assert {t["trace_id"] for t in pages(store, session="s1", operation="root*")} == {
        "tr1", "tr3", "tr5", "tr7"}
    assert pages(store, trace="tr4")[0]["spans"] == EXPECTED["tr4"]["spans"]
    assert pages(store, model="nobody") == []


def test_bad_parameters_are_400_and_named(store: Made) -> None:
    c = store.client(max_page_size=5)
    for params, name in (
        ({"sort": "bogus"}, "sort"),
        ({"sort": "--start"}, "sort"),
        ({"limit": 6}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"since": "yesterday-ish"}, "since"),
        ({"status": "maybe"}, "status"),
    ):
        r = c.get("/api/traces", params=params)
        assert r.status_code == 400, params
        assert r.json()["parameter"] == name, params
    first = c.get("/api/traces", params={"limit": 2}).json()["next_cursor"]
    other = c.get("/api/traces", params={"limit": 2, "sort": "spans", "cursor": first})
    assert other.status_code == 400 and other.json()["parameter"] == "cursor"


# -- one span ------------------------------------------------------------------------


ATTRS = [
    span("ok", None, 0, 5, trace="ta", custom_attributes=json.dumps({"k": [1, "v"], "n": None}),
         prompt_content="the prompt", completion_content="the answer", cost_usd=0.5,
         error=True, error_message="x" * 1000),
    span("bad", "ok", 1, 1, trace="ta", custom_attributes="{not json"),
    span("list", "ok", 2, 1, trace="ta", custom_attributes="[1, 2]"),
    span("nan", "ok", 3, 1, trace="ta", custom_attributes='{"x": NaN, "y": Infinity}'),
    span("none", "ok", 4, 1, trace="ta"),
]


def test_one_span_has_every_column_and_its_attributes_as_an_object(
    kind: str, tmp_path: Path  # noqa: F811
) -> None:
    from llamonitor.schema._columns import SCHEMA

    # PostgreSQL keeps the attributes as jsonb: text that is not JSON is refused there.
    invalid = {"bad", "nan"} if kind == "postgres" else set()
    for m in made(kind, [r for r in ATTRS if r["span_id"] not in invalid], tmp_path):
        c = m.client()
        ok = c.get("/api/traces/ta/spans/ok").json()
        assert set(ok) == {*SCHEMA.names, "scores"}  # and its scores
        assert ok["custom_attributes"] == {"k": [1, "v"], "n": None}
        assert ok["prompt_content"] == "the prompt" and ok["completion_content"] == "the answer"
        assert ok["error"] is True and len(ok["error_message"]) == 1000
        assert ok["timestamp"] == iso(at(0)) and ok["cost_usd"] == 0.5
        assert c.get("/api/traces/ta/spans/list").json()["custom_attributes"] == {
            "_raw": "[1, 2]"}
        if not invalid:
            assert c.get("/api/traces/ta/spans/bad").json()["custom_attributes"] == {
                "_raw": "{not json"}
            nan = c.get("/api/traces/ta/spans/nan")
            assert nan.status_code == 200
            assert nan.json()["custom_attributes"] == {"x": None, "y": None}
        none = c.get("/api/traces/ta/spans/none").json()
        assert none["custom_attributes"] is None and none["error"] is False
        assert c.get("/api/traces/ta/spans/missing").status_code == 404
        assert c.get("/api/traces/nope/spans/ok").status_code == 404
