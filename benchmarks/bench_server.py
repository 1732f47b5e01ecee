#!/usr/bin/env python
# ruff: noqa: E501
"""llamonitor benchmark: ``llamonitor serve`` over 1,000,000 spans in the embedded store.

Usage::

    python benchmarks/bench_server.py                 # 1M spans, 40 requests per case, the browser too
    python benchmarks/bench_server.py --quick         # 200k spans, 15 requests, ~1 min
    python benchmarks/bench_server.py --no-browser    # the API only

The store is ``bench_report.py``'s (sessions of agents, LLM calls and tools
over a week) plus one trace of 10,000 spans (an orchestrator with 100
agents of 99 steps each). The server runs as its own process
(``llamonitor serve --port 0``); this process is its client (httpx, one
connection, keep-alive) and, for the floor, a bare DuckDB connection that
runs the query answering the same question over the same files. The two are
interleaved request by request; each case shows the median and p95 of the
API, the floor's median and the ratio of the medians.

Then: memory -- the server's RSS while 10 clients page through spans,
traces and sessions for ``--load-seconds``; and, with Chromium (Debian's
``/usr/bin/chromium`` through Playwright), the 10,000-span trace page: time
from navigation until its rows are shown, the number of row elements in the
DOM (virtualized: far fewer than 10,000) and the frame times while it
scrolls from top to bottom.

Targets (issue 10): spans list with a filter, page of 50, p95 < 250 ms and
within 3x of the floor; the 10,000-span tree < 300 ms and its page
interactive < 1.5 s; dashboard aggregates over the whole store < 1 s;
memory flat under 10 clients.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_report import T0_US, generate

from llamonitor.schema._columns import SCHEMA

BIG_TRACE = "b1g7race0000000000000000000000ff"
SUMMARY = (
    "event_id, session_id, trace_id, span_id, parent_span_id, operation_name, operation_type, "
    '"timestamp", duration_ms, error, error_type, left(error_message, 300) AS error_message, '
    "provider, model, agent_name, project_name, input_tokens, output_tokens, total_tokens, cost_usd"
)


def big_trace(root: Path, agents: int = 100, steps: int = 99) -> int:
    """One trace of 1 + agents * (1 + steps) spans, in a file of its own."""
    n = 1 + agents * (1 + steps)
    rng = np.random.default_rng(3)
    span_ids = [f"{i:016x}" for i in range(1, n + 1)]
    parent: list[str | None] = [None]
    start = [0.0]
    dur = [0.0]
    ops = ["orchestrator.run"]
    types = ["agent_workflow"]
    t = 0.0
    for a in range(agents):
        agent_index = len(parent)
        parent.append(span_ids[0])
        start.append(t)
        ops.append("agent.step")
        types.append("agent")
        dur.append(0.0)
        at = t
        for _ in range(steps):
            d = float(rng.lognormal(1.5, 0.6))
            parent.append(span_ids[agent_index])
            start.append(at)
            dur.append(d)
            ops.append("llm.call" if rng.random() < 0.3 else "tool.search")
            types.append("llm_call" if ops[-1] == "llm.call" else "tool")
            at += d
        dur[agent_index] = at - t
        t = at if a % 4 == 3 else t + 1.0  # four agents at a time
    dur[0] = max(s + d for s, d in zip(start, dur, strict=True))
    cols: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
    cols.update(
        event_id=pa.array([f"big-{i}" for i in range(n)]),
        session_id=pa.array(["big-session"] * n),
        trace_id=pa.array([BIG_TRACE] * n),
        span_id=pa.array(span_ids),
        parent_span_id=pa.array(parent, pa.string()),
        operation_name=pa.array(ops),
        operation_type=pa.array(types),
        timestamp=pa.array(
            [T0_US + int(s * 1000) for s in start], pa.timestamp("us", tz="UTC")
        ),
        duration_ms=pa.array(dur),
        process_id=pa.array([1] * n, pa.int64()),
    )
    table = pa.table([cols[f.name] for f in SCHEMA], schema=SCHEMA)
    pq.write_table(table, root / "events_bench_bigtrace.parquet")
    return n


class Server:
    def __init__(self, store: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llamonitor.cli", "serve", "--dir", str(store), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.rsplit(" ", 1)[1].strip()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _arrow(result: Any) -> Any:
    fetch = getattr(result, "to_arrow_table", None) or result.arrow
    return fetch()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def case(
    name: str, client: httpx.Client, path: str, floor: tuple[str, list[Any]] | None,
    con: duckdb.DuckDBPyConnection, files: list[str], n: int,
) -> dict[str, Any]:
    api: list[float] = []
    bare: list[float] = []
    for _ in range(2):  # warm both
        client.get(path).raise_for_status()
        if floor:
            _arrow(con.execute(floor[0], [files, *floor[1]]))
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        api.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        if floor:
            t0 = time.perf_counter()
            _arrow(con.execute(floor[0], [files, *floor[1]]))
            bare.append((time.perf_counter() - t0) * 1000)
    out = dict(name=name, path=path, p50=statistics.median(api), p95=percentile(api, 95))
    if bare:
        out.update(floor=statistics.median(bare), ratio=statistics.median(api) / statistics.median(bare))
    return out


def memory_under_load(server: Server, seconds: float, clients: int = 10) -> dict[str, float]:
    paths = ["/api/spans?limit=50", "/api/traces?limit=50", "/api/sessions?limit=50",
             "/api/spans?status=error&limit=50", "/api/spans?q=timeout&limit=50"]
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while time.monotonic() < stop:
                path = paths[(i + counts[i]) % len(paths)]
                r = c.get(path)
                cursor = r.json().get("next_cursor")
                if cursor:
                    c.get(path + "&cursor=" + cursor)
                counts[i] += 1

    before = server.rss_mb()
    samples: list[float] = []
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append(server.rss_mb())
        time.sleep(0.5)
    half = len(samples) // 2
    return dict(
        before=before, first_half_max=max(samples[:half] or [before]),
        second_half_max=max(samples[half:] or [before]), after=server.rss_mb(),
        requests=float(sum(counts)),
    )


BROWSER_JS_FRAMES = """async () => {
  const box = document.querySelector('[data-virtual-scroll]');
  if (!box) return null;
  const frames = [];
  let last = performance.now();
  const total = box.scrollHeight;
  return await new Promise(resolve => {
    function step(now) {
      frames.push(now - last); last = now;
      box.scrollTop += 400;
      if (box.scrollTop + box.clientHeight >= total - 2 || frames.length > 600) resolve(frames);
      else requestAnimationFrame(step);
    }
    requestAnimationFrame(step);
  });
}"""


def browser(server: Server) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server.url + "traces")  # warm the static files
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            page.goto(server.url + f"traces/{BIG_TRACE}")
            page.wait_for_selector("[data-span-row]", timeout=30_000)
            times.append((time.perf_counter() - t0) * 1000)
        rows = page.eval_on_selector_all("[data-span-row]", "els => els.length")
        frames = page.evaluate(BROWSER_JS_FRAMES) or []
        b.close()
    frames = frames[1:]
    return dict(
        interactive_ms=statistics.median(times), rows_in_dom=rows,
        frames=len(frames), frame_p50=statistics.median(frames) if frames else float("nan"),
        frame_p95=percentile(frames, 95) if frames else float("nan"),
        long_frames=sum(f > 50 for f in frames),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--keep", type=Path, help="Keep the store here.")
    args = ap.parse_args()
    if args.quick:
        args.spans, args.requests, args.load_seconds = 200_000, 15, 10.0
    work = Path(tempfile.mkdtemp(prefix="llamonitor-bench-server-"))
    store = args.keep or work / "store"
    store.mkdir(parents=True, exist_ok=True)
    if any(store.rglob("*.parquet")):  # --keep of an earlier run: reuse it
        n = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [[str(f) for f in store.rglob("*.parquet")]]).fetchone()[0]  # type: ignore[index]
    else:
        n = generate(args.spans, store / "2024-05-01")
        n += big_trace(store / "2024-05-01")
    files = sorted(str(f) for f in store.rglob("*.parquet"))
    print(f"store: {n:,} spans in {len(files)} files ({store})", flush=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = "read_parquet(?, union_by_name = true)"
    model = con.execute(f"SELECT model FROM {rel} WHERE model IS NOT NULL GROUP BY model ORDER BY count(*) LIMIT 1", [files]).fetchone()[0]  # type: ignore[index]
    server = Server(store)
    results = []
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            cases = [
                ("spans: model filter, page of 50", f"/api/spans?model={model}&limit=50",
                 (f"SELECT {SUMMARY} FROM {rel} WHERE model = ? ORDER BY \"timestamp\" DESC, event_id LIMIT 51", [model])),
                ("spans: errors, page of 50", "/api/spans?status=error&limit=50",
                 (f"SELECT {SUMMARY} FROM {rel} WHERE error ORDER BY \"timestamp\" DESC, event_id LIMIT 51", [])),
                ("spans: text search", "/api/spans?q=timed%20out&limit=50",
                 (f"SELECT {SUMMARY} FROM {rel} WHERE contains(lower(coalesce(error_message, '')), ?) ORDER BY \"timestamp\" DESC, event_id LIMIT 51", ["timed out"])),
                ("spans: slowest first", "/api/spans?sort=-duration_ms&limit=50",
                 (f"SELECT {SUMMARY} FROM {rel} ORDER BY duration_ms DESC NULLS LAST, event_id LIMIT 51", [])),
                ("trace of 10,000 spans: tree", f"/api/traces/{BIG_TRACE}",
                 (f"SELECT span_id, parent_span_id, operation_name, operation_type, \"timestamp\", duration_ms, error, model, input_tokens, output_tokens, cost_usd FROM {rel} WHERE trace_id = ?", [BIG_TRACE])),
                ("traces list, page of 50", "/api/traces?limit=50",
                 (f"SELECT trace_id, min(\"timestamp\") AS start, count(*), sum(cost_usd) FROM {rel} GROUP BY trace_id ORDER BY start DESC, trace_id LIMIT 51", [])),
                ("sessions list, page of 50", "/api/sessions?limit=50",
                 (f"SELECT session_id, max(\"timestamp\") AS last, count(*), count(DISTINCT trace_id), sum(cost_usd) FROM {rel} GROUP BY session_id ORDER BY last DESC, session_id LIMIT 51", [])),
                ("dashboard aggregates, whole store", "/api/aggregates?bucket=hour",
                 (f"SELECT date_trunc('hour', \"timestamp\") AS t, model, count(*), count(*) FILTER (WHERE error), sum(cost_usd), sum(input_tokens), sum(output_tokens), quantile_cont(duration_ms, [0.5, 0.95, 0.99]) FROM {rel} GROUP BY ALL", [])),
            ]
            for name, path, floor in cases:
                results.append(case(name, c, path, floor, con, files, args.requests))
                r = results[-1]
                print(f"{name:38} p50 {r['p50']:8.1f} ms  p95 {r['p95']:8.1f} ms  floor {r.get('floor', float('nan')):8.1f} ms  ratio {r.get('ratio', float('nan')):5.2f}", flush=True)
        mem = memory_under_load(server, args.load_seconds)
        print(f"memory, 10 clients paging {args.load_seconds:g} s ({mem['requests']:.0f} requests): RSS {mem['before']:.0f} MB before, max {mem['first_half_max']:.0f} MB first half, {mem['second_half_max']:.0f} MB second half, {mem['after']:.0f} MB after", flush=True)
        if not args.no_browser:
            br = browser(server)
            print(f"trace page, 10,000 spans: interactive in {br['interactive_ms']:.0f} ms (median of 5); {br['rows_in_dom']} row elements in the DOM; scrolling {br['frames']} frames, p50 {br['frame_p50']:.1f} ms, p95 {br['frame_p95']:.1f} ms, {br['long_frames']} over 50 ms", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
