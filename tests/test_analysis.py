"""Analysis and reports: every figure checked against a hand computation."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import llamonitor
from _helpers import T0, span_row
from llamonitor.analysis import (
    Report,
    SessionReport,
    _critical,
    _percentiles,
    _structure,
    _suggest,
    analyze,
    csv_rows,
    render_html,
    session_report,
    to_csv,
)
from llamonitor.cli import cli
from llamonitor.schema._columns import COLUMNS_V1
from llamonitor.storage import parquet
from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation

pytest_plugins = ["_servers"]  # the db fixture: PostgreSQL, MySQL/MariaDB, SQLite

_ids = itertools.count()


def span(
    span_id: str,
    parent: str | None,
    start_ms: float,
    dur_ms: float,
    op: str | None = None,
    *,
    trace: str = "t1",
    session: str = "s1",
    **values: Any,
) -> dict[str, Any]:
    """A stored span that starts ``start_ms`` after T0 and lasts ``dur_ms``."""
    return span_row(
        next(_ids),
        span_id=span_id,
        parent_span_id=parent,
        trace_id=trace,
        session_id=session,
        operation_name=op or span_id,
        timestamp=T0 + timedelta(milliseconds=start_ms),
        duration_ms=float(dur_ms),
        **values,
    )


def write(store: Path, rows: list[dict[str, Any]], schema: pa.Schema = llamonitor.SCHEMA) -> Path:
    directory = store / "2024-05-01"
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)
    if schema is not llamonitor.SCHEMA:
        table = table.select(schema.names)
    pq.write_table(table, directory / f"events_{next(_ids)}.parquet")
    return store


def llm(
    span_id: str, parent: str | None, start: float, dur: float, op: str, **values: Any
) -> dict[str, Any]:
    """An LLM call span."""
    return span(span_id, parent, start, dur, op, operation_type="llm_call", **values)


def by_key(groups: list[Any]) -> dict[Any, Any]:
    return {g.key: g for g in groups}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- empty and degenerate stores ----------------------------------------------------


def test_empty_store_gives_an_empty_report(tmp_path: Path) -> None:
    """A store without files is an empty, well-formed report, not an error."""
    (tmp_path / "store").mkdir()
    report = analyze(tmp_path / "store")
    assert report.empty and report.overview.spans == 0
    assert report.cost.by_model == [] and report.latency.bottlenecks == []
    assert report.suggestions == [] and report.trends.points == []
    assert "No spans in this scope" in render_html(report)
    assert to_csv(report).startswith("section,table,key,metric,value")
    json.dumps(report.to_dict())


def test_range_without_data_is_empty(store: Path) -> None:
    """Filters that match nothing give an empty report."""
    write(store, [span("a", None, 0, 10)])
    assert analyze(store, since=T0 + timedelta(days=1)).empty
    assert analyze(store, session="nobody").empty
    assert not analyze(store, since=T0 - timedelta(days=1)).empty


# -- cost ------------------------------------------------------------------------------


def cost_rows() -> list[dict[str, Any]]:
    return [
        span("r1", None, 0, 100, "agent.turn", agent_name="planner"),
        llm("a", "r1", 1, 10, "llm.plan", provider="openai", model="gpt-4o", agent_name="planner",
            input_tokens=100, output_tokens=20, cost_usd=0.50, input_cost_usd=0.30,
            output_cost_usd=0.20),
        llm("b", "r1", 20, 10, "llm.plan", provider="openai", model="gpt-4o", agent_name="planner",
            input_tokens=300, output_tokens=40, cost_usd=1.25, input_cost_usd=1.0,
            output_cost_usd=0.25),
        llm("c", "r1", 40, 10, "llm.answer", provider="anthropic", model="claude",
            agent_name="writer", input_tokens=50, output_tokens=5, cost_usd=0.25),
        # An LLM call whose price is unknown: counted, not priced.
        llm("d", "r1", 60, 10, "llm.answer", provider="local", model="llama",
            agent_name="writer", input_tokens=10, output_tokens=10),
        # An LLM call that reported no tokens and no cost.
        llm("e", "r1", 80, 10, "llm.answer", provider="openai", model="gpt-4o",
            agent_name="writer"),
        span("r2", None, 200, 50, "agent.turn", trace="t2", session="s2"),
        llm("f", "r2", 210, 10, "llm.plan", trace="t2", session="s2", provider="openai",
            model="gpt-4o", input_tokens=1000, output_tokens=100, cost_usd=2.5),
    ]


def test_cost_totals_and_groups_by_hand(store: Path) -> None:
    """Sums by model, provider, agent, operation and session equal the hand sums."""
    report = analyze(write(store, cost_rows()))
    c = report.cost
    assert c.total_usd == pytest.approx(0.50 + 1.25 + 0.25 + 2.5)
    assert (c.input_usd, c.output_usd) == (pytest.approx(1.30), pytest.approx(0.45))
    assert (c.llm_calls, c.priced_calls, c.unpriced_calls) == (6, 4, 2)
    models = by_key(c.by_model)
    assert [g.key for g in c.by_model] == ["gpt-4o", "claude", "llama", None]
    assert models["gpt-4o"].cost_usd == pytest.approx(4.25)
    assert models["gpt-4o"].calls == 4 and models["gpt-4o"].unpriced_calls == 1
    assert models["gpt-4o"].provider == "openai"
    assert models["gpt-4o"].share == pytest.approx(4.25 / 4.5)
    assert models["llama"].unpriced_calls == 1 and models["llama"].cost_usd == 0
    assert models[None].spans == 2 and models[None].calls == 0  # the two agent spans
    assert by_key(c.by_provider)["anthropic"].cost_usd == pytest.approx(0.25)
    agents = by_key(c.by_agent)
    assert agents["planner"].cost_usd == pytest.approx(1.75)
    assert agents["writer"].cost_usd == pytest.approx(0.25)
    assert agents[None].cost_usd == pytest.approx(2.5)
    ops = by_key(c.by_operation)
    assert ops["llm.plan"].cost_usd == pytest.approx(4.25) and ops["llm.plan"].calls == 3
    assert sum(g.cost_usd for g in c.by_operation) == pytest.approx(c.total_usd)
    assert [s.session_id for s in c.top_sessions] == ["s2", "s1"]
    s1 = c.top_sessions[1]
    assert (s1.cost_usd, s1.spans, s1.traces, s1.llm_calls, s1.unpriced_calls) == (
        pytest.approx(2.0), 6, 1, 5, 2,
    )
    assert s1.tokens == 120 + 340 + 55 + 20 and s1.duration_ms == pytest.approx(100)
    assert [t.trace_id for t in c.top_traces] == ["t2", "t1"]
    assert c.top_traces[1].root_operation == "agent.turn"
    assert c.top_traces[1].session_id == "s1"
    assert (report.overview.sessions, report.overview.traces) == (2, 2)


def test_tokens_by_hand(store: Path) -> None:
    """Input/output sums, per-call averages over calls that reported tokens."""
    t = analyze(write(store, cost_rows())).tokens
    assert (t.input_tokens, t.output_tokens) == (1460, 175)
    assert t.total_tokens == 1460 + 175
    assert t.calls_with_tokens == 5 and t.llm_calls_without_tokens == 1
    assert t.input_per_call == pytest.approx(1460 / 5)
    gpt = by_key(t.by_model)["gpt-4o"]
    assert (gpt.calls, gpt.input_tokens, gpt.output_tokens) == (3, 1400, 160)
    assert gpt.output_per_call == pytest.approx(160 / 3)
    assert t.top_operations[0].key == "llm.plan"
    assert None not in by_key(t.by_model)  # spans without tokens are not a token group


# -- latency ---------------------------------------------------------------------------


def hand_percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_percentiles_by_hand(store: Path) -> None:
    """p50/p95/p99 interpolate linearly between the closest ranks."""
    durations = [1.0, 2.0, 3.0, 4.0, 10.0]
    rows = [span(f"s{i}", None, i * 1000, d, "op", trace=f"t{i}", agent_name="ag",
                 provider="p", model="m") for i, d in enumerate(durations)]
    rows.append(span("x", None, 9000, 100.0, "other", trace="tx"))
    lat = analyze(write(store, rows)).latency
    op = by_key(lat.by_operation)["op"]
    assert op.p50_ms == 3.0
    assert op.p95_ms == pytest.approx(4 + 0.8 * 6)
    assert op.p95_ms == pytest.approx(hand_percentile(durations, 0.95))
    assert op.p99_ms == pytest.approx(4 + 0.96 * 6)
    assert (op.max_ms, op.count, op.avg_ms) == (10.0, 5, pytest.approx(4.0))
    assert by_key(lat.by_model)["m"].p95_ms == pytest.approx(8.8)
    assert by_key(lat.by_agent)["ag"].p99_ms == pytest.approx(9.76)
    everything = [*durations, 100.0]
    assert lat.overall.p50_ms == pytest.approx(hand_percentile(everything, 0.5))
    assert lat.overall.p99_ms == pytest.approx(hand_percentile(everything, 0.99))


def nested_trace(trace: str = "t1") -> list[dict[str, Any]]:
    """root [0,100]: A [10,50] (child A1 [15,45]) in parallel with B [20,70]
    (children B1 [25,40], B2 [30,60]), then C [75,90].

    Walking back from 100: C (ends 90) → from 75, B (70) beats A (50) → from 20,
    nothing ends by 20. Inside B, from 70: B2 (60) → from 30, nothing (B1 ends 40).
    Self times: root 10+5+20 = 35, C 15, B 10+10 = 20, B2 30; A, A1, B1 0.
    """
    return [
        span("root", None, 0, 100, "root", trace=trace),
        span("A", "root", 10, 40, "a", trace=trace),
        span("A1", "A", 15, 30, "a1", trace=trace),
        span("B", "root", 20, 50, "b", trace=trace),
        span("B1", "B", 25, 15, "b1", trace=trace),
        span("B2", "B", 30, 30, "b2", trace=trace),
        span("C", "root", 75, 15, "c", trace=trace),
    ]


def test_critical_path_with_parallel_children(store: Path) -> None:
    """Self times on the critical path, computed by hand (see nested_trace)."""
    lat = analyze(write(store, nested_trace())).latency
    got = {b.operation: b.critical_ms for b in lat.bottlenecks}
    assert got == {"root": 35.0, "b": 20.0, "b2": 30.0, "c": 15.0}
    assert lat.critical_path.total_ms == 100.0
    assert (lat.critical_path.roots, lat.critical_path.orphans) == (1, 0)
    shares = {b.operation: b.share for b in lat.bottlenecks}
    assert shares["b2"] == pytest.approx(0.30) and sum(shares.values()) == pytest.approx(1.0)
    assert lat.bottlenecks[0].operation == "root"  # largest critical time first
    assert {b.operation: b.spans_on_path for b in lat.bottlenecks}["b2"] == 1


def test_critical_path_sequential_children_and_ties(store: Path) -> None:
    """A child ending exactly when the next starts is on the path; of two children
    ending together, the one that started first is."""
    rows = [
        span("r", None, 0, 30, "r"),
        span("x", "r", 0, 10, "x"),
        span("y", "r", 10, 10, "y"),  # starts when x ends
        span("long", "r", 20, 10, "long"),  # [20,30]
        span("short", "r", 25, 5, "short"),  # [25,30]: ends with 'long', started later
    ]
    lat = analyze(write(store, rows)).latency
    assert {b.operation: b.critical_ms for b in lat.bottlenecks} == {
        "x": 10.0, "y": 10.0, "long": 10.0,
    }


def test_child_overflowing_its_parent_is_clipped(store: Path) -> None:
    """Clock skew: a child ending after its parent counts only inside the parent."""
    rows = [span("r", None, 0, 50, "r"), span("k", "r", 40, 40, "k")]
    lat = analyze(write(store, rows)).latency
    assert {b.operation: b.critical_ms for b in lat.bottlenecks} == {"r": 40.0, "k": 10.0}
    assert lat.critical_path.total_ms == 50.0


def test_missing_parent_makes_its_children_roots(store: Path) -> None:
    """Spans whose parent is missing are each the root of their own subtree."""
    rows = [
        span("x", "lost", 0, 10, "x"),
        span("y", "lost", 5, 25, "y"),
        span("y1", "y", 10, 5, "y1"),
    ]
    report = analyze(write(store, rows))
    path = report.latency.critical_path
    assert (path.roots, path.orphans, path.total_ms) == (2, 2, 35.0)
    assert {b.operation: b.critical_ms for b in report.latency.bottlenecks} == {
        "x": 10.0, "y": 20.0, "y1": 5.0,
    }
    assert report.overview.traces == 1
    assert report.cost.top_traces[0].root_operation == "x"  # no root: the first span


def test_cycle_of_parents_does_not_break_the_report(store: Path) -> None:
    """Corrupt parent links (a cycle) are left out of the critical path."""
    rows = [
        span("p", "q", 0, 10, "p"),
        span("q", "p", 0, 10, "q"),
        span("me", "me", 0, 7, "self-parent", trace="t2"),  # its own parent: a root
        *nested_trace("t3"),
    ]
    lat = analyze(write(store, rows)).latency
    got = {b.operation: b.critical_ms for b in lat.bottlenecks}
    assert got == {"root": 35.0, "b": 20.0, "b2": 30.0, "c": 15.0, "self-parent": 7.0}


def test_excess_beyond_the_median(store: Path) -> None:
    """excess_ms: critical time beyond the operation's p50 duration."""
    rows = []
    for i, d in enumerate([10, 20, 60]):
        rows += [span(f"r{i}", None, i * 1000, d, "root", trace=f"t{i}"),
                 span(f"s{i}", f"r{i}", i * 1000, d, "slow", trace=f"t{i}")]
    b = analyze(write(store, rows)).latency.bottlenecks
    slow = next(x for x in b if x.operation == "slow")
    assert slow.critical_ms == 90.0 and slow.share == 1.0
    assert slow.excess_ms == pytest.approx(40.0)  # p50 is 20: 60 - 20
    assert [x.operation for x in b] == ["slow"]  # the roots' own time is zero


def test_partitions_give_the_same_answer(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing traces in many small partitions changes nothing."""
    rows = [r for i in range(6) for r in nested_trace(f"trace-{i}")]
    write(store, rows)
    whole = analyze(store).latency.bottlenecks
    monkeypatch.setattr(_structure, "PARTITION_SPANS", 3)
    parts = analyze(store).latency.bottlenecks
    assert whole == parts
    assert {b.operation: b.critical_ms for b in parts}["b2"] == 6 * 30.0


# -- the vectorized walk against a plain Python reference --------------------------------


def reference_walk(spans: list[tuple[int, int | None, int, int, int]]) -> dict[int, int]:
    """Jaeger's walk, written plainly: {op: critical µs}. spans: (id, parent, start, end, op)."""
    by_id = {s[0]: s for s in spans}
    children: dict[int, list[tuple[int, int, int, int]]] = {}
    roots = []
    for sid, parent, a, b, op in spans:
        if parent is None or parent not in by_id:
            roots.append(sid)
        else:
            children.setdefault(parent, []).append((sid, a, b, op))
    out: dict[int, int] = {}

    def visit(sid: int, lo: int, hi: int) -> None:
        op = by_id[sid][4]
        kids = []
        for cid, a, b, _ in children.get(sid, []):
            ca, cb = max(a, lo), min(b, hi)
            if cb >= ca:
                kids.append((cb, -ca, cid, ca))
        kids.sort()
        t, covered = hi, 0
        while True:
            fits = [k for k in kids if k[0] <= t]
            if not fits:
                break
            cb, _, cid, ca = fits[-1]
            visit(cid, ca, cb)
            covered += cb - ca
            kids = [k for k in kids if k < fits[-1]]
            t = ca
        out[op] = out.get(op, 0) + (hi - lo) - covered

    for r in roots:
        visit(r, by_id[r][2], by_id[r][3])
    return out


def random_trace(rng: random.Random, n: int) -> list[tuple[int, int | None, int, int, int]]:
    spans: list[tuple[int, int | None, int, int, int]] = [(0, None, 0, rng.randint(50, 500), 0)]
    for sid in range(1, n):
        parent = rng.randrange(sid)
        _, _, pa_, pb, _ = spans[parent]
        a = rng.randint(pa_ - 5, pb)  # sometimes before the parent: clipped
        b = a + rng.choice([0, rng.randint(1, 80), rng.randint(1, 300)])
        spans.append((sid, parent, a, b, rng.randrange(6)))
    if rng.random() < 0.3:  # lose a span: its children become roots
        lost = rng.randrange(1, n) if n > 1 else 0
        spans = [s for s in spans if s[0] != lost]
    return spans


def test_vectorized_walk_matches_the_reference() -> None:
    """On 300 random trees (parallel, nested, clipped, zero-length, orphans), the
    vectorized critical path equals the plain recursive walk."""
    rng = random.Random(7)
    ks, pks, starts, durs, ops, expected = [], [], [], [], [], {}
    for t in range(300):
        spans = random_trace(rng, rng.randint(1, 25))
        for sid, op_ms in reference_walk(spans).items():
            expected[sid] = expected.get(sid, 0) + op_ms
        for sid, parent, a, b, op in spans:
            ks.append(t * 1000 + sid + 1)
            pks.append(t * 1000 + parent + 1 if parent is not None else 10**9 + t)
            starts.append(a)
            durs.append(b - a)
            ops.append(op)
    acc = _critical.PathTotals(op_hashes=np.arange(6, dtype=np.uint64))
    _critical.walk(
        np.array(ks, np.uint64), np.array(pks, np.uint64), np.array(starts, np.int64),
        np.array(durs, np.int64), np.array(ops, np.int64), np.zeros(len(ks), np.bool_), acc,
    )
    assert {op: int(acc.critical_us[op]) for op in range(6) if acc.critical_us[op]} == {
        op: v for op, v in expected.items() if v
    }


def test_bounded_percentiles_are_exact() -> None:
    """The two-pass percentiles equal numpy's (linear) on awkward data: ties, zeros,
    negatives, values packed in one bin, huge values, empty groups, many chunks."""
    rng = np.random.default_rng(3)
    n = 20_000
    groups = rng.integers(0, 7, n)
    values = rng.lognormal(3, 2, n)
    values[groups == 1] = 5.0  # all equal
    values[groups == 2] = 1000 + rng.random((groups == 2).sum())  # all in one bin
    values[groups == 3] = rng.choice([0.0, -2.0, 1e9, 3.5], (groups == 3).sum())
    values[:3] = [0.0, -0.0, 1e-9]
    p = _percentiles.Percentiles(8)  # group 7 stays empty
    chunks = np.array_split(np.arange(n), 13)
    for rows in chunks:
        p.count(groups[rows], _percentiles.bins(values[rows]))
    p.target()
    for rows in chunks:
        p.collect(groups[rows], _percentiles.bins(values[rows]), values[rows])
    got = p.result()
    for g in range(7):
        want = np.percentile(values[groups == g], [50, 95, 99])
        assert got[g] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert list(got[7]) == [0.0, 0.0, 0.0]


# -- quality -----------------------------------------------------------------------------


def test_error_rates_types_and_grouped_messages(store: Path) -> None:
    """Messages differing in numbers, ids, hex or quoted strings group together."""
    fail = dict(error=True)
    rows = [
        span("a", None, 0, 1, "fetch", error_type="TimeoutError",
             error_message="timeout after 3.2s", **fail),
        span("b", None, 10, 1, "fetch", trace="t2", error_type="TimeoutError",
             error_message="timeout after 5.1s", **fail),
        span("c", None, 20, 1, "fetch", trace="t3", error_type="KeyError",
             error_message="no key 'user_42' in 0x7f3a2b10 (request 3fa9c2b1d0e4)", **fail),
        span("d", None, 30, 1, "llm", trace="t4", error_type="KeyError",
             error_message="no key 'other' in 0x11ff (request 9b8c7d6e5f4a)", **fail),
        span("e", None, 40, 1, "fetch", trace="t5"),
        span("f", None, 50, 1, "llm", trace="t6"),
        span("g", None, 60, 1, "llm", trace="t7"),
        span("h", None, 70, 1, "llm", trace="t8"),
    ]
    q = analyze(write(store, rows)).quality
    assert (q.spans, q.errors) == (8, 4)
    assert (q.error_rate, q.success_rate) == (0.5, 0.5)
    assert [(e.error_type, e.count, e.share) for e in q.by_error_type] == [
        ("KeyError", 2, 0.5), ("TimeoutError", 2, 0.5),
    ]
    fetch = next(o for o in q.by_operation if o.operation == "fetch")
    assert (fetch.spans, fetch.errors, fetch.error_rate) == (4, 3, 0.75)
    assert fetch.error_types == {"TimeoutError": 2, "KeyError": 1}
    patterns = {p.pattern: p for p in q.patterns}
    assert set(patterns) == {
        "timeout after <n>s",
        "no key <str> in <hex> (request <hex>)",
    }
    timeout = patterns["timeout after <n>s"]
    assert (timeout.count, timeout.error_type, timeout.operations) == (2, "TimeoutError", ["fetch"])
    assert timeout.example == "timeout after 3.2s"
    assert patterns["no key <str> in <hex> (request <hex>)"].operations == ["fetch", "llm"]


def test_retries_count_sequential_repeats_not_fan_out(store: Path) -> None:
    """Extra attempts start after an earlier attempt of the same operation (same
    parent) ended; parallel calls are not retries."""
    rows = [
        span("p", None, 0, 100, "parent"),
        # fetch: failed, then retried: 1 extra attempt, after an error.
        span("f1", "p", 0, 5, "fetch", error=True, error_type="TimeoutError"),
        span("f2", "p", 6, 4, "fetch"),
        # search: three in parallel: no retry.
        span("g1", "p", 0, 5, "search"),
        span("g2", "p", 0, 5, "search"),
        span("g3", "p", 1, 3, "search"),
        # llm: called twice one after the other, no error: 1 extra attempt.
        span("h1", "p", 10, 2, "llm"),
        span("h2", "p", 13, 1, "llm"),
        # another parent's fetch is not an attempt of the first one.
        span("q", None, 200, 50, "parent", trace="t2"),
        span("f3", "q", 200, 5, "fetch", trace="t2"),
        # a whole job retried at the top of one trace (two roots).
        span("j1", None, 300, 5, "job", trace="t3", error=True),
        span("j2", None, 306, 5, "job", trace="t3"),
    ]
    q = analyze(write(store, rows)).quality
    got = {r.operation: (r.extra_attempts, r.after_error) for r in q.retries}
    assert got == {"fetch": (1, 1), "llm": (1, 0), "job": (1, 1)}
    assert (q.extra_attempts, q.after_error) == (3, 2)
    assert next(r for r in q.retries if r.operation == "fetch").spans == 3


# -- suggestions ---------------------------------------------------------------------------


def test_cache_suggestion_saving(store: Path) -> None:
    """Repeats of a successful (prompt, model): their cost and time is the saving."""
    rows = [
        llm("a", None, 0, 100, "llm", trace="ta", model="m", prompt_hash="p1", cost_usd=0.01),
        llm("b", None, 1000, 200, "llm", trace="tb", model="m", prompt_hash="p1", cost_usd=0.02),
        llm("c", None, 2000, 300, "llm", trace="tc", model="m", prompt_hash="p1", cost_usd=0.03),
        llm("d", None, 3000, 400, "llm", trace="td", model="m", prompt_hash="p1", cost_usd=0.04,
            error=True),  # failed: a cache would not have had it
        llm("e", None, 4000, 100, "llm", trace="te", model="other", prompt_hash="p1",
            cost_usd=0.5),  # another model
        llm("f", None, 5000, 100, "llm", trace="tf", model="m", prompt_hash="p2", cost_usd=0.5),
    ]
    report = analyze(write(store, rows))
    (cache,) = [s for s in report.suggestions if s.kind == "cache"]
    assert cache.saving_usd == pytest.approx(0.02 + 0.03)
    assert cache.saving_ms == pytest.approx(200 + 300)
    assert cache.figures["repeated_calls"] == 2 and cache.figures["prompts"] == 1


def test_cheaper_model_suggestion_saving(store: Path) -> None:
    """Short-output calls priced again on the first cheaper model of the provider."""
    # The candidate's price comes from the price package itself, not a copy of its data.
    from genai_prices import Usage, calc_price

    one_call = calc_price(
        Usage(input_tokens=1000, output_tokens=100), model_ref="gpt-4.1-mini", provider_id="openai"
    )
    rows = [
        llm(f"c{i}", None, i * 1000, 500, "llm", trace=f"t{i}", provider="openai",
            model="gpt-4o", input_tokens=1000, output_tokens=100, cost_usd=0.0035)
        for i in range(2)
    ]
    rows.append(llm("long", None, 9000, 500, "llm", trace="t9", provider="openai",
                    model="gpt-4o", input_tokens=1000, output_tokens=900, cost_usd=0.0115))
    report = analyze(write(store, rows))
    (swap,) = [s for s in report.suggestions if s.kind == "cheaper_model"]
    candidate = 2 * float(one_call.total_price)
    assert swap.figures["candidate"] == "gpt-4.1-mini"
    assert swap.figures["short_calls"] == 2 and swap.figures["calls"] == 3
    assert swap.figures["candidate_cost_usd"] == pytest.approx(candidate)
    assert swap.saving_usd == pytest.approx(0.007 - candidate)


def test_no_cheaper_model_when_already_cheapest(store: Path) -> None:
    """No suggestion when no candidate is cheaper by at least MIN_SWAP_SAVING."""
    rows = [
        llm(f"c{i}", None, i * 1000, 500, "llm", trace=f"t{i}", provider="openai",
            model="gpt-4.1-nano", input_tokens=1000, output_tokens=100, cost_usd=0.00014)
        for i in range(3)
    ]
    assert not [s for s in analyze(write(store, rows)).suggestions if s.kind == "cheaper_model"]


def test_error_and_bottleneck_suggestions(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation failing 30% of the time; one holding the critical path."""
    rows = []
    for i in range(10):
        failed = i < 3
        dur = [10, 20, 60, 20, 20, 20, 20, 20, 20, 20][i]
        rows += [
            span(f"r{i}", None, i * 1000, dur, "root", trace=f"t{i}"),
            llm(f"s{i}", f"r{i}", i * 1000, dur, "slow", trace=f"t{i}", error=failed,
                error_type="TimeoutError" if failed else None,
                error_message=f"timeout after {i}s" if failed else None,
                cost_usd=0.1 if failed else 0.2),
        ]
    report = analyze(write(store, rows))
    errors = next(s for s in report.suggestions if s.kind == "errors")
    assert errors.figures["operation"] == "slow" and errors.figures["error_rate"] == 0.3
    assert errors.saving_ms == pytest.approx(10 + 20 + 60)
    assert errors.saving_usd == pytest.approx(0.3)
    bottleneck = next(s for s in report.suggestions if s.kind == "bottleneck")
    assert bottleneck.figures["share"] == 1.0
    assert bottleneck.saving_ms == pytest.approx(40.0)  # 60 - p50 20
    monkeypatch.setattr(_suggest, "ERROR_RATE_THRESHOLD", 0.5)
    assert not [s for s in analyze(store).suggestions if s.kind == "errors"]


# -- trends, scopes, old stores, other stores ---------------------------------------------


def test_trends_per_bucket(store: Path) -> None:
    """Each bucket's counts, cost and percentiles."""
    hour = 3_600_000
    rows = [
        llm("a", None, 0, 10, "x", trace="ta", cost_usd=1.0, input_tokens=5, output_tokens=1),
        llm("b", None, 60_000, 30, "x", trace="tb", cost_usd=2.0, error=True),
        llm("c", None, 2 * hour + 5, 7, "x", trace="tc", cost_usd=4.0),
    ]
    trends = analyze(write(store, rows), bucket="hour").trends
    assert trends.bucket == "hour"
    assert [p.start for p in trends.points] == [T0, T0 + timedelta(hours=2)]
    first, last = trends.points
    assert (first.spans, first.errors, first.error_rate, first.cost_usd) == (2, 1, 0.5, 3.0)
    assert (first.p50_ms, first.input_tokens) == (20.0, 5)
    assert (last.spans, last.cost_usd, last.p99_ms) == (1, 4.0, 7.0)
    assert analyze(store).trends.bucket == "minute"  # 2 hours of data: minutes


def test_session_and_trace_scopes(store: Path) -> None:
    """A session report covers that session only, and is a SessionReport."""
    write(store, cost_rows())
    report = session_report(store, "s2")
    assert isinstance(report, SessionReport) and report.session_id == "s2"
    assert (report.overview.spans, report.cost.total_usd) == (2, 2.5)
    assert analyze(store, trace="t1").overview.spans == 6
    assert analyze(store, project="nope").empty


def test_schema_v1_store_still_reports(store: Path) -> None:
    """A store written before the LLM columns existed: no cost, but everything else."""
    v1 = pa.schema([llamonitor.SCHEMA.field(n) for n in COLUMNS_V1])
    report = analyze(write(store, nested_trace(), schema=v1))
    assert report.overview.spans == 7 and report.overview.llm_calls == 0
    assert report.cost.total_usd == 0 and report.cost.by_model[0].key is None
    assert {b.operation: b.critical_ms for b in report.latency.bottlenecks}["b2"] == 30.0
    assert report.tokens.by_model == []


def test_same_report_on_other_stores(store: Path, tmp_path: Path) -> None:
    """The same aggregates over JSON Lines and over streamed Arrow give the same report."""
    rows = cost_rows() + nested_trace("t9")
    write(store, rows)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(r, default=lambda v: v.isoformat()) for r in rows) + "\n"
    )
    table = pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA)

    def figures(report: Report) -> dict[str, Any]:
        out = report.to_dict()
        del out["generated_at"], out["timings_ms"]
        return out

    expected = figures(analyze(store))
    for q in (DuckDBQuery(lambda _f: jsonl_relation(jsonl)), DuckDBQuery(lambda _f: table)):
        assert figures(analyze(q)) == expected


def same(a: Any, b: Any, path: str = "") -> None:
    """``a == b``, floats within 1e-9 (sums in another order may differ in the last bit)."""
    if isinstance(a, float) and isinstance(b, (float, int)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_same_report_on_sql_stores(db: Any, store: Path) -> None:
    """PostgreSQL, MySQL/MariaDB and SQLite stores give the Parquet store's report."""
    rows = cost_rows() + nested_trace("t9") + [
        span("e1", None, 700, 3, "fetch", trace="t7", error=True, error_type="TimeoutError",
             error_message="timeout after 3.2s", prompt_hash="p", model="m", cost_usd=0.5),
        span("e2", None, 800, 4, "fetch", trace="t8", prompt_hash="p", model="m", cost_usd=0.5),
        span("e3", None, 900, 5, "fetch", trace="t8b", prompt_hash="p", model="m", cost_usd=0.5),
    ]
    write(store, rows)
    db.write(pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA))

    def figures(report: Report) -> dict[str, Any]:
        out = report.to_dict()
        del out["generated_at"], out["timings_ms"]
        return out

    with db.query() as q:
        got = figures(analyze(q))
    same(got, figures(analyze(store)))


# -- output ----------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if value and ("http://" in value or "https://" in value or "//" in value[:2]):
                self.urls.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def full_report(store: Path) -> Report:
    rows = cost_rows() + nested_trace("t9") + [
        span("err", None, 500, 5, "fetch", trace="t5", error=True, error_type="TimeoutError",
             error_message="GET https://example.org/x timed out after 3s"),
        span("err2", None, 600, 5, "fetch", trace="t6", error=True, error_type="TimeoutError",
             error_message="GET https://example.org/y timed out after 4s"),
    ]
    return analyze(write(store, rows))


def test_html_is_self_contained_with_every_section(store: Path) -> None:
    """Charts and sections are there; nothing is loaded from anywhere."""
    html = render_html(full_report(store))
    page = _Page()
    page.feed(html)
    assert {"suggestions", "cost", "latency", "tokens", "quality", "trends"} <= page.ids
    assert page.tags.count("svg") >= 8
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert page.urls == []  # no src/href/... pointing anywhere
    style = html[html.index("<style>") : html.index("</style>")]
    assert "url(" not in style and "@import" not in style
    text = " ".join(page.text)
    assert "timed out after <n>s" in text  # the grouped message, escaped and shown
    for label in ("cost by model", "critical path bottlenecks", "percentiles by operation"):
        assert label in text


def test_csv_is_one_long_table(store: Path) -> None:
    """section,table,key,metric,value rows; pivoting a table gives back its figures."""
    report = full_report(store)
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert set(rows[0]) == {"section", "table", "key", "metric", "value"}
    got = {(r["table"], r["key"], r["metric"]): r["value"] for r in rows if r["section"] == "cost"}
    assert float(got[("by_model", "gpt-4o", "cost_usd")]) == pytest.approx(4.25)
    assert got[("by_model", "(none)", "spans")] == "11"  # 2 + 7 + 2 spans without a model
    assert {r["section"] for r in rows} >= {"overview", "cost", "latency", "tokens", "quality",
                                            "trends", "suggestions"}
    assert len(list(csv_rows(report))) == len(rows)


# -- the command line ------------------------------------------------------------------------


def test_cli_report_sections(store: Path) -> None:
    """The terminal report shows every section."""
    full_report(store)
    result = run("report", "--dir", store)
    assert result.exit_code == 0, result.output
    for text in ("spans", "Suggestions", "Cost", "cost by model", "Latency", "critical path",
                 "Tokens", "Quality", "most common errors", "errors by operation"):
        assert text in result.output


def test_cli_report_json_csv_html(store: Path, tmp_path: Path) -> None:
    """--json is only JSON; --csv and --html write their files."""
    full_report(store)
    result = run("report", "--dir", store, "--json", "--csv", tmp_path / "r.csv",
                 "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cost"]["total_usd"] == pytest.approx(4.5)
    assert (tmp_path / "r.csv").read_text().startswith("section,table,key,metric,value")
    assert "<svg" in (tmp_path / "r.html").read_text()
    piped = run("report", "--dir", store, "--csv", "-")
    assert piped.exit_code == 0 and piped.stdout.startswith("section,table,key,metric,value")


def test_cli_report_empty_and_missing(store: Path, tmp_path: Path) -> None:
    """Empty store, no data in range, orphans: exit 0 and a sentence; no store: exit 1."""
    store.mkdir()
    result = run("report", "--dir", store)
    assert result.exit_code == 0 and "No spans recorded" in result.output
    write(store, [span("x", "lost", 0, 10, "x")])  # a trace whose parent is missing
    assert run("report", "--dir", store).exit_code == 0
    result = run("report", "--dir", store, "--since", "2099-01-01")
    assert result.exit_code == 0 and "match these filters" in result.output
    result = run("report", "--dir", store, "--session", "nobody", "--html", tmp_path / "e.html")
    assert result.exit_code == 0 and "No spans in this scope" in (tmp_path / "e.html").read_text()
    missing = run("report", "--dir", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "no store at" in missing.output
    assert "Traceback" not in missing.output


def test_parquet_query_object_is_accepted(store: Path) -> None:
    """analyze() takes a query object as well as a directory; the object stays open."""
    write(store, nested_trace())
    with parquet.query(store) as q:
        assert analyze(q).overview.spans == 7
        assert q.count() == 7


def test_too_many_buckets_is_a_clear_error(store: Path) -> None:
    """A bucket too fine for the range: a ValueError, and one line from the CLI."""
    write(store, [span("a", None, 0, 1), span("b", None, 3 * 86_400_000, 1, trace="t2")])
    with pytest.raises(ValueError, match="coarser bucket"):
        analyze(store, bucket="minute")
    result = run("report", "--dir", store, "--bucket", "minute")
    assert result.exit_code == 1 and "coarser bucket" in result.output
    assert analyze(store).trends.bucket == "hour"


def test_stream_yields_the_rows_of_run_in_batches(store: Path) -> None:
    """DuckDBQuery.stream (used by the structure pass) gives run()'s rows, batch by batch,
    on a Parquet store, on Arrow data, and nothing for an empty store."""
    rows = [span(f"s{i}", None, i, 1, trace=f"t{i}") for i in range(10)]
    write(store, rows)
    sql = "SELECT span_id FROM {rel} ORDER BY span_id"
    for q in (parquet.query(store),
              DuckDBQuery(lambda _f: pa.Table.from_pylist(rows, schema=llamonitor.SCHEMA))):
        batches = list(q.stream(sql, batch_rows=3))
        assert len(batches) >= 2
        assert pa.Table.from_batches(batches).equals(q.run(sql))
    assert list(DuckDBQuery(None).stream(sql)) == []
    assert list(parquet.query(store / "nothing-here").stream(sql)) == []


def test_cli_session_report_json_names_the_session(store: Path) -> None:
    """--session gives a session report: its JSON carries the session id."""
    write(store, cost_rows())
    result = run("report", "--dir", store, "--session", "s2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["session_id"] == "s2" and data["overview"]["spans"] == 2


# -- reading the structure pass's stream ahead ------------------------------------------


def test_the_stream_read_ahead_passes_batches_errors_and_closes_its_source() -> None:
    """Batches come through in order; a failure of the source is raised to the
    reader; a caller that stops early closes the source and leaves no thread."""
    import threading

    from llamonitor.analysis._report import _read_ahead

    closed: list[str] = []

    def source(n: int, fail: bool = False) -> Any:
        try:
            yield from range(n)
            if fail:
                raise OSError("file vanished")
        finally:
            closed.append("closed")

    with _read_ahead(source(5)) as items:
        assert list(items) == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="file vanished"), _read_ahead(source(3, fail=True)) as items:
        list(items)
    with _read_ahead(source(10_000)) as items:
        assert next(iter(items)) == 0
    assert closed == ["closed"] * 3
    assert not [t for t in threading.enumerate() if t.name == "llamonitor-analysis-read"]


def test_codes_in_order_of_first_appearance_with_colliding_low_bits() -> None:
    """Hashes sharing their low 16 bits get distinct codes (the direct table is
    not used for them); codes follow the first appearance across batches."""
    a, b, c = 5, 5 + (1 << 20), 7  # a and b share their low 16 bits
    codes = _structure.Codes()
    batch = np.array([c, a, b, c, a], np.uint64)
    assert codes.encode(pa.array(batch)).tolist() == [0, 1, 2, 0, 1]
    assert codes.encode(pa.array(np.array([b, c], np.uint64))).tolist() == [2, 0]
    assert codes.hashes == [c, a, b]
    plain = _structure.Codes()
    assert plain.encode(pa.array(np.array([3, 9, 3], np.uint64))).tolist() == [0, 1, 0]
    assert plain.encode(pa.array(np.array([9, 11, 3], np.uint64))).tolist() == [1, 2, 0]
    assert plain.encode(pa.array(np.array([], np.uint64))).tolist() == []
    assert plain.hashes == [3, 9, 11]
