#!/usr/bin/env python
"""llamonitor benchmark: ``GET /api/traces/{trace_id}`` on a 10,000-span trace
in a 1,000,000-span Parquet store, next to its DuckDB floor.

Usage::

    python benchmarks/bench_server_tree.py              # 1M spans, 30 runs
    python benchmarks/bench_server_tree.py --spans 200000 --runs 10

The store is ``bench_report.py``'s mix plus one trace of 10,001 spans (an
orchestrator, 100 agents of 99 steps, four agents at a time). The endpoint
runs in process (``TestClient``: routing, the query, the tree, the JSON body);
the floor is a bare DuckDB connection running the same
``SELECT ... WHERE trace_id = ?`` over the same files. Runs are interleaved;
each figure is a median. Also: ``GET /api/aggregates`` and ``GET /api/traces``
over the whole store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_report import T0_US, generate

from llamonitor.schema._columns import SCHEMA

BIG_TRACE = "b1g7race0000000000000000000000ff"


def big_trace(root: Path, agents: int = 100, steps: int = 99) -> int:
    """One trace of ``1 + agents * (1 + steps)`` spans, in a file of its own."""
    n = 1 + agents * (1 + steps)
    rng = np.random.default_rng(3)
    ids = [f"{i:016x}" for i in range(1, n + 1)]
    parent: list[str | None] = [None]
    start, dur = [0.0], [0.0]
    ops, types = ["orchestrator.run"], ["agent_workflow"]
    t = 0.0
    for a in range(agents):
        agent = len(parent)
        parent.append(ids[0])
        start.append(t)
        dur.append(0.0)
        ops.append("agent.step")
        types.append("agent")
        at = t
        for _ in range(steps):
            d = float(rng.lognormal(1.5, 0.6))
            llm = bool(rng.random() < 0.3)
            parent.append(ids[agent])
            start.append(at)
            dur.append(d)
            ops.append("llm.call" if llm else "tool.search")
            types.append("llm_call" if llm else "tool")
            at += d
        dur[agent] = at - t
        t = at if a % 4 == 3 else t + 1.0
    dur[0] = max(s + d for s, d in zip(start, dur, strict=True))
    cols = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
    cols.update(
        event_id=pa.array([f"big-{i}" for i in range(n)]),
        session_id=pa.array(["big-session"] * n),
        trace_id=pa.array([BIG_TRACE] * n),
        span_id=pa.array(ids),
        parent_span_id=pa.array(parent, pa.string()),
        operation_name=pa.array(ops),
        operation_type=pa.array(types),
        timestamp=pa.array([T0_US + int(s * 1000) for s in start], pa.timestamp("us", tz="UTC")),
        duration_ms=pa.array(dur),
        cost_usd=pa.array(rng.random(n) / 1000),
        process_id=pa.array([1] * n, pa.int64()),
    )
    pq.write_table(pa.table([cols[f.name] for f in SCHEMA], schema=SCHEMA),
                   root / "events_bench_bigtrace.parquet")
    return n


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from llamonitor.server import ServerConfig, _tree, create_app, open_server_store
    from llamonitor.storage._layout import data_files

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = big_trace(root)
        rest = generate(args.spans - big, root)
        print(f"store: {rest + big:,} spans, the trace {big:,} spans", flush=True)
        store = open_server_store(root)
        client = TestClient(create_app(store, ServerConfig()), base_url="http://127.0.0.1:8585")
        files = [str(f) for f in data_files(root)]
        con = duckdb.connect()
        floor_sql = _tree.SQL.replace("{rel}", "read_parquet(?, union_by_name = true)")

        def tree() -> None:
            r = client.get(f"/api/traces/{BIG_TRACE}")
            assert r.status_code == 200, r.text[:200]

        def floor() -> None:
            assert len(con.sql(floor_sql, params=[files, BIG_TRACE]).to_arrow_table()) == big

        cases = {
            "tree": tree,
            "floor": floor,
            "aggregates": lambda: client.get("/api/aggregates").raise_for_status(),
            "traces": lambda: client.get("/api/traces?sort=-cost_usd").raise_for_status(),
        }
        for f in cases.values():
            f()  # warm: files, caches
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.runs):
            for name, f in cases.items():
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
        tree_ms, floor_ms = median_ms(times["tree"]), median_ms(times["floor"])
        print(f"GET /api/traces/{{id}} ({big:,} spans): median {tree_ms:.1f} ms, "
              f"p95 {np.percentile(times['tree'], 95) * 1000:.1f} ms")
        print(f"DuckDB floor (SELECT ... WHERE trace_id = ?): median {floor_ms:.1f} ms "
              f"(ratio {tree_ms / floor_ms:.1f}x)")
        print(f"GET /api/aggregates (whole store): median {median_ms(times['aggregates']):.1f} ms")
        print(f"GET /api/traces?sort=-cost_usd: median {median_ms(times['traces']):.1f} ms")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
