"""The agents' coordination graph: handoffs, loops, chains, suggestions, the CLI;
checked against hand-stated figures and an independent pure-Python oracle, over a
Parquet store, SQLite and PostgreSQL (the server of tests/_servers.py)."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import llamonitor
from _helpers import T0, span_row
from _servers import Store, server_dsn, unique_table
from llamonitor.analysis import agent_graph, analyze, render_html
from llamonitor.analysis._agents_walk import AGENT_OPERATION_TYPES
from llamonitor.cli import cli

_ids = itertools.count()


def sp(sid: str, parent: str | None, start_us: int, dur_us: int, agent: str | None = None,
       trace: str = "t1", **values: Any) -> dict[str, Any]:
    values.setdefault("operation_type", "step")
    return span_row(next(_ids), span_id=sid, parent_span_id=parent, trace_id=trace,
                    session_id="s1", operation_name=sid,
                    timestamp=T0 + timedelta(microseconds=start_us),
                    duration_ms=dur_us / 1000, agent_name=agent, **values)


def write(store: Path, rows: list[dict[str, Any]]) -> Path:
    d = store / "2024-05-01"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA),
                   d / f"events_{next(_ids)}.parquet")
    return store


STORES = ("parquet", "sqlite", "postgres", "clickhouse")

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture (a private 18.16 server)


class Spans:
    """Where one test's spans go: a fresh Parquet directory, SQLite file or
    PostgreSQL table per :meth:`write`; tables dropped afterwards."""

    def __init__(self, kind: str, tmp_path: Path, clickhouse: Any = None) -> None:
        self.kind = kind
        self.tmp = tmp_path
        self.clickhouse = clickhouse
        self.dsn = ("" if kind == "parquet" else f"sqlite:///{tmp_path / 'spans.db'}"
                    if kind == "sqlite" else clickhouse.dsn if kind == "clickhouse"
                    else server_dsn(kind))
        self.tables: list[Any] = []
        self.queries: list[Any] = []

    def new(self) -> Any:
        """A fresh table of this SQL store (dropped afterwards)."""
        if self.kind == "clickhouse":
            from _clickhouse import CHStore

            store: Any = CHStore(self.clickhouse, unique_table())
        else:
            store = Store(self.kind, self.dsn, unique_table())
        self.tables.append(store)
        return store

    def write(self, rows: list[dict[str, Any]]) -> Any:
        """Store ``rows``; returns what ``agent_graph`` and ``analyze`` take."""
        if self.kind == "parquet":
            return write(self.tmp / f"store{next(_ids)}", rows)
        store = self.new()
        store.write(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA))
        return self.open(store)

    def open(self, store: Any) -> Any:
        q = store.query()
        self.queries.append(q)
        return q

    def cli(self, target: Any) -> list[str]:
        """The store options of a command reading what :meth:`write` returned last."""
        if self.kind == "parquet":
            return ["--dir", str(target)]
        return ["--dsn", self.dsn, "--table", self.tables[-1].table]

    def close(self) -> None:
        for q in self.queries:
            q.close()
        llamonitor.shutdown_monitoring(10.0)
        for store in self.tables:
            store.drop()


@pytest.fixture(params=STORES)
def spans(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spans]:
    """Each store in turn (PostgreSQL skips outside CI when its server is away)."""
    server = request.getfixturevalue("clickhouse_server") if request.param == "clickhouse" else None
    s = Spans(request.param, tmp_path, server)
    try:
        yield s
    finally:
        s.close()


def orchestrated() -> list[dict[str, Any]]:
    """An orchestrator (no agent) runs router, researcher, router (which calls
    writer), router: times in ms."""
    ms = 1000
    return [
        sp("root", None, 0, 100 * ms),
        sp("r1", "root", 0, 10 * ms, "router", operation_type="agent"),
        sp("l1", "r1", 1 * ms, 8 * ms, "router", model="gpt", input_tokens=100,
           output_tokens=10, text_char_count=50),
        sp("a1", "root", 12 * ms, 30 * ms, "researcher"),
        sp("al", "a1", 13 * ms, 20 * ms, "researcher", model="gpt", input_tokens=500),
        sp("r2", "root", 45 * ms, 10 * ms, "router"),
        sp("w1", "r2", 47 * ms, 5 * ms, "writer", model="gpt", input_tokens=2000,
           error=True),
        sp("r3", "root", 60 * ms, 10 * ms, "router"),
    ]


def edges_of(graph: Any) -> dict[tuple[str, str, str], Any]:
    return {(e.source, e.target, e.kind): e for e in graph.edges}


def test_handoffs_loops_chain_of_an_orchestrated_session(spans: Spans) -> None:
    """Sequence and call handoffs with their latencies, the loops, the longest chain
    and each agent's critical-path share are the hand-computed ones."""
    g = agent_graph(spans.write(orchestrated()))
    assert (g.spans, g.invocations, g.handoffs, g.unattributed_spans) == (8, 5, 4, 1)
    e = edges_of(g)
    assert set(e) == {("router", "researcher", "sequence"), ("researcher", "router", "sequence"),
                      ("router", "router", "sequence"), ("router", "writer", "call")}
    assert e[("router", "researcher", "sequence")].latency_ms == 2.0  # 10 ms -> 12 ms
    assert e[("researcher", "router", "sequence")].latency_ms == 3.0  # 42 -> 45
    assert e[("router", "router", "sequence")].latency_ms == 5.0  # 55 -> 60
    call = e[("router", "writer", "call")]
    assert call.latency_ms == 2.0 and call.success_rate == 0.0 and call.failures == 1
    assert call.context_tokens == 2000
    loops = {tuple(lp.path): lp.count for lp in g.loops}
    assert loops == {("router", "researcher", "router"): 1, ("router", "router"): 1}
    nodes = {n.agent: n for n in g.nodes}
    assert nodes["router"].invocations == 3 and nodes["router"].time_ms == 30.0
    assert nodes["router"].handoffs_out == 3 and nodes["router"].returned == 2
    assert nodes["writer"].failed == 1
    assert nodes["researcher"].critical_share == 0.3
    assert nodes["router"].critical_ms == 25.0  # 10 + (10 - 5 in writer) + 10
    chain = g.longest_chain
    assert chain.handoffs == 3
    assert [s.agent for s in chain.steps] == ["router", "researcher", "router", "router"]
    assert chain.context_growth == 5.0  # 100 -> 500 tokens


def test_no_agent_names_is_an_empty_graph(spans: Spans) -> None:
    """Spans without agent names give an empty graph and no agent suggestion."""
    rows = [sp("a", None, 0, 1000), sp("b", "a", 10, 100)]
    store = spans.write(rows)
    g = agent_graph(store)
    assert g.empty and g.spans == 2 and g.unattributed_spans == 2 and g.edges == []
    assert not [s for s in analyze(store).suggestions if s.kind.startswith("agent")]


def ping_pong(n: int) -> list[dict[str, Any]]:
    """n rounds of router then critic, each router calling researcher (70% of the time)."""
    rows = [sp("root", None, 0, n * 110_000)]
    for i in range(n):
        t = i * 110_000
        rows += [sp(f"r{i}", "root", t, 10_000, "router"),
                 sp(f"x{i}", f"r{i}", t + 1000, 80_000 - 2000, "researcher",
                    model="m", input_tokens=1000 * (i + 1)),
                 sp(f"c{i}", "root", t + 90_000, 10_000, "critic")]
    for r in rows:
        if r["span_id"].startswith("r") and r["span_id"] != "root":
            r["duration_ms"] = 85.0  # the router waits for its researcher
    return rows


def test_suggestions_name_the_loop_and_the_bottleneck(spans: Spans) -> None:
    """A router/critic ping-pong and a researcher holding most of the path are suggested,
    in the graph and in the report (terminal JSON and HTML)."""
    store = spans.write(ping_pong(6))
    g = agent_graph(store)
    kinds = {s.kind: s for s in g.suggestions}
    assert "agent_loop" in kinds and "agent_bottleneck" in kinds
    loop = next(s for s in g.suggestions if s.figures["agent"] == "router")
    assert loop.title.startswith("Agent `router` hands") and "back to itself" in loop.title
    assert kinds["agent_bottleneck"].figures["agent"] == "researcher"
    assert "holds" in kinds["agent_bottleneck"].title
    report = analyze(store)
    titles = [s.title for s in report.suggestions]
    assert loop.title in titles and kinds["agent_bottleneck"].title in titles
    assert "holds" in render_html(report)


# -- an independent oracle over random sessions ------------------------------------------


def oracle(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The documented definitions, written directly (dicts and recursion)."""
    by = {(r["trace_id"], r["span_id"]): r for r in rows}

    def parent(r: dict[str, Any]) -> dict[str, Any] | None:
        p = r["parent_span_id"]
        return by.get((r["trace_id"], p)) if p else None

    def t(r: dict[str, Any]) -> tuple[int, int]:
        a = (r["timestamp"] - T0) // timedelta(microseconds=1)
        return a, a + round(r["duration_ms"] * 1000)

    def agent_up(r: dict[str, Any] | None) -> dict[str, Any] | None:
        while r is not None and r["agent_name"] is None:
            r = parent(r)
        return r

    def starts(r: dict[str, Any]) -> bool:
        if r["agent_name"] is None:
            return False
        up = agent_up(parent(r))
        return (up is None or up["agent_name"] != r["agent_name"]
                or r["operation_type"] in AGENT_OPERATION_TYPES)

    def inv(r: dict[str, Any] | None) -> dict[str, Any] | None:
        while r is not None and not starts(r):
            r = parent(r)
        return r

    invs = [r for r in rows if starts(r)]
    pinv = {id(v): inv(parent(v)) for v in invs}
    edges: Counter[tuple[str, str, str]] = Counter()
    latency: dict[tuple[str, str, str], list[int]] = {}
    for v in invs:
        p = pinv[id(v)]
        if p is None:
            continue
        s0 = t(v)[0]
        steps = [t(x)[1] for x in rows if x is not p and inv(x) is p]
        steps += [t(c)[1] for c in invs if pinv[id(c)] is p and c is not v]
        last = max([t(p)[0]] + [e for e in steps if e <= s0])
        key = (p["agent_name"], v["agent_name"], "call")
        edges[key] += 1
        latency.setdefault(key, []).append(max(0, s0 - last))
    for v in invs:
        group = pinv[id(v)]
        sibs = [x for x in invs if x is not v and pinv[id(x)] is group
                and (group is not None or x["trace_id"] == v["trace_id"])
                and t(x)[1] <= t(v)[0]]
        if sibs:
            x = max(sibs, key=lambda x: t(x)[1])
            key = (x["agent_name"], v["agent_name"], "sequence")
            edges[key] += 1
            latency.setdefault(key, []).append(t(v)[0] - t(x)[1])
    nodes = Counter(v["agent_name"] for v in invs)
    return {"edges": dict(edges), "latency": latency, "nodes": dict(nodes)}


def random_session(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    agents = ["planner", "coder", "critic", "search"]
    rows: list[dict[str, Any]] = []
    used: set[int] = set()

    def stamp(lo: int, hi: int) -> int:
        while True:  # distinct times: no ties, so the oracle's choice is the same
            x = rng.randint(lo, max(lo, hi))
            if x not in used:
                used.add(x)
                return x

    def grow(pid: str | None, lo: int, hi: int, agent: str | None, depth: int, trace: str) -> None:
        kids = rng.randint(0, 4) if depth < 4 else 0
        cursor = lo
        for _ in range(kids):
            if cursor + 20 >= hi:
                break
            start = stamp(cursor + 1, (cursor + hi) // 2)
            end = stamp(start + 5, hi - 1)
            if rng.random() < 0.6:
                cursor = end  # sequential; else parallel with the next
            kind = rng.random()
            sid = f"{trace}-{len(rows)}"
            if kind < 0.45:
                a = rng.choice(agents)
                rows.append(sp(sid, pid, start, end - start, a, trace=trace,
                               operation_type=rng.choice(["agent", "step", "step"])))
                grow(sid, start, end, a, depth + 1, trace)
            elif kind < 0.8:
                rows.append(sp(sid, pid, start, end - start, agent, trace=trace, model="m",
                               input_tokens=rng.randint(10, 5000), cost_usd=0.01))
            else:
                rows.append(sp(sid, pid, start, end - start, None, trace=trace))
                grow(sid, start, end, agent, depth + 1, trace)

    for i in range(3):
        rows.append(sp(f"T{i}", None, 0, 10_000_000, None, trace=f"T{i}"))
        grow(f"T{i}", 0, 10_000_000, None, 0, f"T{i}")
    drop = set(rng.sample(range(3, len(rows)), k=min(3, len(rows) - 3)))
    kept = [r for i, r in enumerate(rows) if i not in drop]  # missing parents
    rng.shuffle(kept)  # out of order
    return kept


def test_random_sessions_match_the_oracle(spans: Spans) -> None:
    """Over random sessions (shuffled, with spans missing), invocations and every
    handoff (count and latencies) are those of the direct definitions."""
    for seed in range(12):
        rows = random_session(seed)
        g = agent_graph(spans.write(rows))
        want = oracle(rows)
        assert {n.agent: n.invocations for n in g.nodes} == want["nodes"], seed
        got = {k: e.count for k, e in edges_of(g).items()}
        assert got == want["edges"], seed
        for k, e in edges_of(g).items():
            lat = want["latency"][k]
            assert abs(e.latency_ms - sum(lat) / len(lat) / 1000) < 1e-6, (seed, k)
            assert e.max_latency_ms == max(lat) / 1000


# -- the command line ---------------------------------------------------------------------


def test_cli_agents_tables_and_json(spans: Spans) -> None:
    """`llamonitor agents` prints the agents and handoffs (names as text, never
    markup), --json the graph, --session narrows it."""
    rows = orchestrated()
    rows[1]["agent_name"] = rows[2]["agent_name"] = "[bold red]router"
    where = spans.cli(spans.write(rows))
    out = CliRunner().invoke(cli, ["agents", *where])
    assert out.exit_code == 0, out.output
    assert "[bold red]router" in out.output and "handoffs" in out.output
    out = CliRunner().invoke(cli, ["agents", *where, "--json", "--since", "2024-04-30"])
    data = json.loads(out.output)
    assert {n["agent"] for n in data["nodes"]} == {"[bold red]router", "router", "researcher",
                                                   "writer"}
    out = CliRunner().invoke(cli, ["agents", *where, "--session", "nobody"])
    assert out.exit_code == 0 and "No spans" in out.output


def test_decorated_agents_make_call_handoffs(spans: Spans, tmp_path: Path) -> None:
    """Agents written with @monitor_llm(agent_name=...) calling each other show as calls."""
    from llamonitor import monitor_llm

    table = None if spans.kind == "parquet" else spans.new()
    storage = (llamonitor.StorageConfig(output_dir=tmp_path / "store") if table is None
               else table.config())
    llamonitor.initialize_monitoring(llamonitor.MonitorConfig(storage=storage))
    try:
        @monitor_llm("search", agent_name="search")
        def search(q: str) -> str:
            return q * 2

        @monitor_llm("plan", agent_name="planner")
        def plan() -> str:
            return search("a") + search("b")

        for _ in range(3):
            plan()
        assert llamonitor.flush(10)
    finally:
        llamonitor.shutdown_monitoring(10)
    g = agent_graph(tmp_path / "store" if table is None else spans.open(table))
    e = edges_of(g)
    assert e[("planner", "search", "call")].count == 6
    assert e[("search", "search", "sequence")].count == 3


def test_a_scope_too_large_is_refused_naming_since(spans: Spans, monkeypatch: Any) -> None:
    """A time range over MAX_SPANS is a clear error; the report then leaves the agents out."""
    from llamonitor.analysis import _agents

    store = spans.write(orchestrated())
    monkeypatch.setattr(_agents, "MAX_SPANS", 3)
    with pytest.raises(ValueError, match="since: 8 spans in this scope, at most 3"):
        agent_graph(store)
    assert not [s for s in analyze(store).suggestions if s.kind.startswith("agent")]
