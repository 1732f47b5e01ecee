"""``GET /api/traces/{trace_id}``: the tree's shape (nested, parallel, orphans,
cycles, ties), self times, rollups and the critical path, against a plain
recursive reading of the contract and of the analysis' definition; truncation
and fetching what was left out with ``root=``. Over Parquet, SQLite, PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamonitor.server._traces import TraceTree

from ._fixtures_traces import Made, kind, made, span  # noqa: F401  (kind: a fixture)


def tree_of(m: Made, trace: str = "t1", **params: Any) -> dict[str, Any]:
    r = m.client().get(f"/api/traces/{trace}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    TraceTree.model_validate(body)  # the body is the schema's
    return body


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in body["spans"]}


# A root with two parallel children (one nested), a child that overlaps the
# parent's end, two siblings starting together (ties by span id), an orphan,
# a cycle, a span that is its own parent.
SHAPE = [
    span("r", None, 0, 100, cost_usd=0.5, input_tokens=3, output_tokens=1, total_tokens=4),
    span("a", "r", 10, 30, cost_usd=0.25, input_tokens=2, total_tokens=2),
    span("b", "r", 20, 60, error=True, error_type="ValueError"),
    span("c", "a", 15, 5, cost_usd=0.125),
    span("e2", "b", 30, 10),
    span("e1", "b", 30, 10),  # same start as e2: by span id
    span("late", "r", 90, 30),  # runs past r's end: counted only inside r
    span("orphan", "missing", 5, 1),
    span("x", "y", 50, 2),
    span("y", "x", 51, 2),
    span("z", "y", 52, 1),
    span("self", "self", 70, 1),
]


@pytest.fixture
def shape(kind: str, tmp_path: Path) -> Iterator[Made]:  # noqa: F811
    yield from made(kind, SHAPE, tmp_path)


def test_the_tree_is_depth_first_children_by_start_ties_by_id(shape: Made) -> None:
    body = tree_of(shape)
    order = [(s["span_id"], s["depth"]) for s in body["spans"]]
    assert order == [
        ("r", 0), ("a", 1), ("c", 2), ("b", 1), ("e1", 2), ("e2", 2), ("late", 1),
        ("orphan", 0),  # a missing parent: a root
        ("x", 0), ("y", 1), ("z", 2),  # the cycle x <-> y cut at its earliest span
        ("self", 0),
    ]
    spans = by_id(body)
    assert spans["orphan"]["parent_span_id"] is None
    assert spans["y"]["parent_span_id"] == "x"
    assert body["span_count"] == 12 and body["error_count"] == 1
    assert body["start"] == "2024-05-01T12:00:00Z"
    assert body["duration_ms"] == 120.0  # until late's end
    assert body["truncated"] is False
    assert spans["r"]["child_count"] == 3 and spans["c"]["child_count"] == 0
    assert spans["late"]["start_offset_ms"] == 90.0


def test_self_time_is_the_duration_less_the_union_of_the_children(shape: Made) -> None:
    spans = by_id(tree_of(shape))
    # r: children cover [10, 40) u [20, 80) u [90, 100) (late clipped) = 80 ms.
    assert spans["r"]["self_ms"] == pytest.approx(20.0)
    assert spans["a"]["self_ms"] == pytest.approx(25.0)
    assert spans["b"]["self_ms"] == pytest.approx(50.0)  # e1 and e2 overlap: 10 ms once
    assert spans["c"]["self_ms"] == pytest.approx(5.0)


def test_rollups_sum_the_subtree(shape: Made) -> None:
    spans = by_id(tree_of(shape))
    assert spans["r"]["subtree"] == {
        "spans": 7, "errors": 1, "input_tokens": 5, "output_tokens": 1, "total_tokens": 6,
        "cost_usd": 0.875,
    }
    assert spans["a"]["subtree"]["cost_usd"] == 0.375
    assert spans["b"]["subtree"] == {
        "spans": 3, "errors": 1, "input_tokens": None, "output_tokens": None,
        "total_tokens": None, "cost_usd": None,
    }


def test_the_critical_path_follows_the_last_child_to_finish(shape: Made) -> None:
    body = tree_of(shape)
    # r waits for late (clipped, it ends at r's end), before it for b; a ended
    # after b started, so it kept nobody waiting.
    assert {"r", "late", "b"} <= set(body["critical_path"])
    assert "a" not in body["critical_path"] and "c" not in body["critical_path"]
    assert [s["span_id"] for s in body["spans"] if s["on_critical_path"]] == body["critical_path"]


def test_unknown_trace_span_or_root_is_404(shape: Made) -> None:
    c = shape.client()
    assert c.get("/api/traces/nope").status_code == 404
    assert c.get("/api/traces/t1?root=nope").status_code == 404
    missing = c.get("/api/traces/t1/spans/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    bad = c.get("/api/traces/t1?max_spans=0")
    assert bad.status_code == 400 and bad.json()["parameter"] == "max_spans"
    assert c.get("/api/traces/t1?max_spans=100001").json()["parameter"] == "max_spans"


# -- truncation --------------------------------------------------------------------


def fan(children: int = 3, grandchildren: int = 3) -> list[dict[str, Any]]:
    rows = [span("root", None, 0, 1000)]
    for i in range(children):
        rows.append(span(f"c{i}", "root", 10 + 100 * i, 90))
        for j in range(grandchildren):
            rows.append(span(f"c{i}g{j}", f"c{i}", 12 + 100 * i + 20 * j, 10))
    return rows


def test_past_max_spans_the_deepest_are_left_out_and_their_parents_say_so(
    kind: str, tmp_path: Path  # noqa: F811
) -> None:
    for m in made(kind, fan(), tmp_path):
        body = tree_of(m, max_spans=5)
        assert body["truncated"] is True and body["span_count"] == 13
        assert [s["span_id"] for s in body["spans"]] == ["root", "c0", "c0g0", "c1", "c2"]
        spans = by_id(body)
        assert [spans[c]["children_omitted"] for c in ("c0", "c1", "c2")] == [True] * 3
        assert spans["root"]["children_omitted"] is False
        assert spans["c1"]["subtree"]["spans"] == 4  # rollups are over the whole subtree
        # What was left out, fetched with root=: depths and offsets as in the whole tree.
        part = tree_of(m, root="c1")
        assert [(s["span_id"], s["depth"]) for s in part["spans"]] == [
            ("c1", 1), ("c1g0", 2), ("c1g1", 2), ("c1g2", 2)]
        assert part["spans"][1]["start_offset_ms"] == 112.0
        assert part["truncated"] is False and part["span_count"] == 13
        full = tree_of(m)
        assert not full["truncated"] and len(full["spans"]) == 13


# -- against a plain reading of the definitions -------------------------------------


def random_trace(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = [span("s0", None, 0, 1000, cost_usd=0.5)]
    for i in range(1, n):
        p = rows[rng.randrange(len(rows))]
        p_start = float(p["_start"]) if "_start" in p else 0.0
        p_dur = p["duration_ms"]
        start = p_start + rng.randint(-5, int(p_dur))  # some clock skew, some overrun
        row = span(f"s{i}", p["span_id"], start, rng.randint(1, max(1, int(p_dur) // 2)),
                   cost_usd=rng.choice([None, 0.001 * rng.randint(1, 9)]),
                   input_tokens=rng.choice([None, rng.randint(1, 50)]),
                   error=rng.choice([None, None, True]))
        row["_start"] = start
        rows.append(row)
    if rng.random() < 0.5:
        rows.append({**span("orph", "gone", 3, 7), "_start": 3.0})
    for r in rows:
        r["_start"] = float(r.pop("_start", 0.0))
    return rows


def expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract and the analysis' critical path, read plainly (recursion)."""
    ids = {r["span_id"] for r in rows}
    start = {r["span_id"]: r["_start"] for r in rows}
    dur = {r["span_id"]: float(r["duration_ms"]) for r in rows}
    rank = {r["span_id"]: i for i, r in enumerate(sorted(rows, key=lambda r: (r["_start"],
                                                                               r["span_id"])))}
    kids: dict[str | None, list[str]] = {}
    for r in rows:
        p = r["parent_span_id"] if r["parent_span_id"] in ids else None
        kids.setdefault(p, []).append(r["span_id"])
    for v in kids.values():
        v.sort(key=rank.__getitem__)
    order: list[tuple[str, int]] = []

    def visit(s: str, d: int) -> None:
        order.append((s, d))
        for c in kids.get(s, []):
            visit(c, d + 1)

    for root in kids[None]:
        visit(root, 0)
    self_ms = {}
    for s in ids:
        lo, hi = start[s], start[s] + dur[s]
        spans_ = sorted((max(start[c], lo), min(start[c] + dur[c], hi)) for c in kids.get(s, []))
        covered, reach = 0.0, lo
        for a, b in spans_:
            if b > max(a, reach):
                covered += b - max(a, reach)
            reach = max(reach, b)
        self_ms[s] = dur[s] - covered
    on: set[str] = set()

    def walk(p: str, lo: float, hi: float) -> None:
        if hi > lo:  # a span clipped to nothing keeps nobody waiting
            on.add(p)
        cands = [(max(start[c], lo), min(start[c] + dur[c], hi), c) for c in kids.get(p, [])]
        cands = [x for x in cands if x[1] >= x[0]]
        t = hi
        while True:
            ready = [x for x in cands if x[1] <= t]
            if not ready:
                return
            a, b, c = max(ready, key=lambda x: (x[1], -x[0], rank[x[2]]))
            walk(c, a, b)
            cands.remove((a, b, c))
            t = a

    for root in kids[None]:
        walk(root, start[root], start[root] + dur[root])
    return {"order": order, "self_ms": self_ms, "on": on, "kids": kids}


def subtree_sum(kids: dict[str | None, list[str]], s: str, value: dict[str, Any]) -> Any:
    total = value[s]
    for c in kids.get(s, []):
        total += subtree_sum(kids, c, value)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_random_traces_agree_with_the_plain_definitions(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    rows = random_trace(rng, rng.choice([30, 120, 400]))
    want = expected(rows)
    stored = [{k: v for k, v in r.items() if k != "_start"} for r in rows]
    for m in made("parquet", stored, tmp_path):
        body = tree_of(m)
    spans = by_id(body)
    assert [(s["span_id"], s["depth"]) for s in body["spans"]] == want["order"]
    for s, value in want["self_ms"].items():
        assert spans[s]["self_ms"] == pytest.approx(value, abs=1e-6), s
    assert set(body["critical_path"]) == want["on"]
    errors = {r["span_id"]: int(bool(r["error"])) for r in rows}
    cost = {r["span_id"]: r["cost_usd"] or 0.0 for r in rows}
    tokens = {r["span_id"]: r["input_tokens"] or 0 for r in rows}
    for s in spans:
        sub = spans[s]["subtree"]
        assert sub["errors"] == subtree_sum(want["kids"], s, errors)
        assert (sub["cost_usd"] or 0.0) == pytest.approx(subtree_sum(want["kids"], s, cost))
        assert (sub["input_tokens"] or 0) == subtree_sum(want["kids"], s, tokens)
        assert spans[s]["child_count"] == len(want["kids"].get(s, []))


def test_a_long_chain_and_a_wide_fan_do_not_recurse(tmp_path: Path) -> None:
    chain = [span("n0", None, 0, 5000)] + [
        span(f"n{i}", f"n{i - 1}", i, 5000 - i) for i in range(1, 3000)]
    wide = [span("w", None, 0, 10, trace="t2")] + [
        span(f"w{i}", "w", i % 10, 1, trace="t2") for i in range(3000)]
    for m in made("parquet", chain + wide, tmp_path):
        body = tree_of(m)
        assert body["spans"][-1]["depth"] == 2999
        assert body["spans"][0]["subtree"]["spans"] == 3000
        assert len(body["critical_path"]) == 3000
        fan_body = tree_of(m, "t2", max_spans=100)
        assert len(fan_body["spans"]) == 100 and fan_body["spans"][0]["children_omitted"]
