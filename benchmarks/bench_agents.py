"""The coordination graph of a 10,000-span multi-agent session (goal: under 300 ms).

A realistic session is generated with pyarrow: 50 traces (user turns), each a
router that hands work to researcher, coder and critic agents in sequence
and by calls, every agent making LLM calls and tool calls, with loops
(critic -> coder -> critic) and growing context. It is written to a Parquet
store and to a SQLite store, and ``agent_graph(session=...)`` is timed on
each (best of N, warm), beside the bare floor: the same statement's read
alone (``graph_sql`` through the store's query), so the ratio says what the
analysis adds to reading the rows.

    python benchmarks/bench_agents.py [--spans 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

import llamonitor
from llamonitor.analysis import _agents, agent_graph
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend
from llamonitor.storage._duckdb import Filters

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def session(spans: int, seed: int = 1) -> pa.Table:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []

    def add(trace: str, parent: str | None, agent: str | None, start: float, dur: float,
            op: str, **v: Any) -> str:
        sid = f"{len(rows):016x}"
        rows.append({"event_id": f"e{len(rows)}", "session_id": "bench", "trace_id": trace,
                     "span_id": sid, "parent_span_id": parent, "operation_name": op,
                     "operation_type": v.pop("operation_type", "step"), "agent_name": agent,
                     "timestamp": T0 + timedelta(milliseconds=start), "duration_ms": dur,
                     "process_id": 1, **v})
        return sid

    def agent(trace: str, parent: str, name: str, start: float, context: int) -> float:
        sid = add(trace, parent, name, start, 0.0, name, operation_type="agent")
        at = start + 1
        for _ in range(rng.randint(2, 5)):
            d = rng.uniform(50, 400)
            add(trace, sid, name, at, d, "llm.chat", model="gpt-4o", provider="openai",
                input_tokens=context, output_tokens=rng.randint(20, 400),
                cost_usd=context * 2.5e-6, text_char_count=rng.randint(100, 3000))
            context += rng.randint(100, 800)
            at += d + 1
            if rng.random() < 0.4:
                d = rng.uniform(5, 60)
                add(trace, sid, None, at, d, "tool.search")
                at += d + 1
        rows[next(i for i in range(len(rows) - 1, -1, -1) if rows[i]["span_id"] == sid)][
            "duration_ms"] = at - start
        return at

    turn = 0
    while len(rows) < spans:
        trace = f"trace-{turn:04d}"
        start = turn * 60_000.0
        root = add(trace, None, "router", start, 0.0, "turn", operation_type="agent")
        at = start + 2
        context = 500
        for name in ["researcher", "coder", "critic", "coder", "critic"][: rng.randint(3, 5)]:
            at = agent(trace, root, name, at, context) + rng.uniform(1, 20)
            context += 1500
        rows[-1 - next(i for i, r in enumerate(reversed(rows)) if r["span_id"] == root)][
            "duration_ms"] = at - start
        turn += 1
    table = pa.Table.from_pylist(rows[:spans], schema=llamonitor.SCHEMA)
    return table


def write(config: StorageConfig, table: pa.Table) -> None:
    async def go() -> None:
        backend = create_backend(config)
        await backend.initialize()
        try:
            await backend.write_table(table)
        finally:
            await backend.close()

    asyncio.run(go())


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    table = session(args.spans)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "parquet": StorageConfig(output_dir=Path(tmp) / "pq"),
            "sqlite": StorageConfig(backend="sqlite", connection_string=f"sqlite:///{tmp}/s.db"),
        }
        for name, config in stores.items():
            write(config, table)
            from llamonitor.storage import parquet, sqlite

            q = (parquet.query(Path(tmp) / "pq") if name == "parquet"
                 else sqlite.query(config))
            with q:
                filters = Filters(session_id="bench")
                where, params = q.where(filters)
                sql = _agents.graph_sql().replace("{where}", where)
                g = agent_graph(q, session="bench")  # warm
                read = best(lambda: q.run(sql, params, filters), args.repeat)  # noqa: B023
                full = best(lambda: agent_graph(q, session="bench"), args.repeat)  # noqa: B023
            print(f"{name:8s} {g.spans:,} spans, {len(g.nodes)} agents, {g.invocations:,} "
                  f"invocations, {g.handoffs:,} handoffs: graph {full:.0f} ms "
                  f"(read alone {read:.0f} ms, x{full / read:.2f}); goal < 300 ms: "
                  f"{'ok' if full < 300 else 'MISSED'}")


if __name__ == "__main__":
    main()
