#!/usr/bin/env python
# ruff: noqa: E501
"""llamonitor benchmark: the full analysis report over a large Parquet store.

Usage::

    python benchmarks/bench_report.py                   # 250k, 500k and 1M spans
    python benchmarks/bench_report.py --sizes 1000000   # one size
    python benchmarks/bench_report.py --keep /tmp/store # keep the 1M store (for the CLI)

For each size the script generates a store of realistic spans (seeded,
vectorized with numpy, written with pyarrow in four files), then, in a fresh
child process per size (so the peak RSS of one run does not hide the next),
times ``llamonitor.analysis.analyze`` -- every section: cost, latency with the
critical path, tokens, quality with error grouping and retries, trends and
suggestions -- and reports:

* the median and best wall time of ``--repeat`` runs (the first, cold run is
  shown apart: it includes imports, the price data and the first read of
  the files);
* the peak RSS growth during the timed runs: the kernel's high-water mark
  (VmHWM, reset after two warm-up runs) minus the RSS before them, i.e. the
  memory a report needs on top of a warm process; and, from one more run
  under ``tracemalloc``, the peak of the Python and numpy allocations alone
  (DuckDB's and Arrow's own memory is not in it).

The workload: sessions of 1-8 traces over a week; three kinds of trace
(chat, research, coding) of an orchestrator agent with LLM calls and tools,
some in parallel (searches, page fetches), failed attempts retried
(timeouts, rate limits), failing tests; OpenAI, Anthropic and a local model
without a price (unknown cost), tokens and costs per call, prompt hashes
repeated within a session (a classification prompt) and across sessions
(popular questions); 0.1% of traces lost their root span (orphans).

Then the report as a user runs it: the whole ``llamonitor report --dir STORE``
process (start-up, imports, every statement, the terminal tables) against
its *SQL floor*: the same statements, captured from a run of the report
with their parameters, replayed one after the other by a bare Python
process that imports only ``duckdb`` and fetches each result as Arrow (the
structure pass's stream batch by batch), over the same files. The two are
timed as whole processes, interleaved, ``--floor-trials`` times each; the
medians and their ratio are shown.

The targets: a full report of 1,000,000 spans in under 1 s on a 2-core
machine, with memory that does not grow with the number of spans; the whole
``llamonitor report`` process within 1.3x of its SQL floor.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import llamonitor

T0_US = int(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
WEEK_US = 7 * 86_400 * 1_000_000
FILES = 4
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size: each row group is a unit of parallelism

# (provider, big model, small model, USD per M input, per M output for big, small)
PROVIDERS = [
    ("openai", "gpt-4o", "gpt-4o-mini", (2.5, 10.0), (0.15, 0.6)),
    ("anthropic", "claude-3-5-sonnet-latest", "claude-3-5-haiku-latest", (3.0, 15.0), (0.8, 4.0)),
    ("ollama", "llama3.1:8b", "llama3.1:8b", None, None),  # local: no known price
]
PROVIDER_WEIGHTS = [0.55, 0.35, 0.10]


@dataclass
class Slot:
    """One span of a trace template (a leaf or, with children, an agent)."""

    op: str
    otype: str = "tool"
    agent: str | None = None
    ms: float = 5.0  # median duration of a leaf, lognormal
    llm: str | None = None  # "big" | "small"
    out_tokens: float = 200.0
    in_tokens: float = 1200.0
    error: float = 0.0
    error_kind: str = "timeout"
    retry: float = 0.0  # probability of a failed attempt first
    prompt: str = "unique"  # unique | session | popular
    children: list[Slot | list[Slot]] = field(default_factory=list)  # a list = parallel


def _templates() -> list[tuple[float, Slot]]:
    chat = Slot(
        "orchestrator.turn", "agent_workflow", "orchestrator",
        children=[
            Slot("guardrail.check", "guardrail", "orchestrator", ms=2),
            Slot("llm.classify", "llm_call", "orchestrator", ms=350, llm="small", out_tokens=8, in_tokens=400, prompt="session"),
            Slot("llm.answer", "llm_call", "orchestrator", ms=2400, llm="big", out_tokens=320, error=0.01, error_kind="ratelimit", retry=0.02, prompt="popular"),
        ],
    )
    research = Slot(
        "orchestrator.turn", "agent_workflow", "orchestrator",
        children=[
            Slot("llm.plan", "llm_call", "planner", ms=1500, llm="big", out_tokens=150, in_tokens=900),
            Slot(
                "agent.research", "agent", "researcher",
                children=[
                    [
                        Slot("tool.web_search", "tool", "researcher", ms=600, retry=0.08, error_kind="timeout"),
                        Slot("tool.vector_search", "tool", "researcher", ms=90),
                    ],
                    [
                        Slot("tool.fetch_page", "tool", "researcher", ms=450, retry=0.12, error=0.02, error_kind="timeout"),
                        Slot("tool.fetch_page", "tool", "researcher", ms=450, retry=0.12, error=0.02, error_kind="connection"),
                        Slot("tool.fetch_page", "tool", "researcher", ms=450, retry=0.12, error=0.02, error_kind="timeout"),
                    ],
                    Slot("llm.summarize", "llm_call", "researcher", ms=1800, llm="small", out_tokens=260, in_tokens=4000),
                ],
            ),
            Slot("llm.answer", "llm_call", "writer", ms=3200, llm="big", out_tokens=520, in_tokens=2500, error=0.01, error_kind="ratelimit", retry=0.02),
            Slot("tool.save_memory", "tool", "writer", ms=25),
        ],
    )
    coding = Slot(
        "orchestrator.turn", "agent_workflow", "orchestrator",
        children=[
            Slot("llm.plan", "llm_call", "planner", ms=1500, llm="big", out_tokens=150, in_tokens=900),
            Slot(
                "agent.coder", "agent", "coder",
                children=[
                    Slot("llm.write_code", "llm_call", "coder", ms=6000, llm="big", out_tokens=900, in_tokens=3000, error=0.03, error_kind="ratelimit", retry=0.04),
                    Slot("tool.run_tests", "tool", "coder", ms=800, error=0.12, error_kind="assert"),
                    Slot("llm.review", "llm_call", "coder", ms=900, llm="big", out_tokens=60, in_tokens=3500),
                ],
            ),
            Slot("llm.answer", "llm_call", "writer", ms=1100, llm="small", out_tokens=120, in_tokens=1500),
        ],
    )
    return [(0.40, chat), (0.35, research), (0.25, coding)]


class _Ids:
    """Fast random hex ids as Arrow string arrays (no Python loop)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def hex(self, n: int, nbytes: int) -> pa.Array:
        raw = self.rng.integers(0, 256, size=n * nbytes, dtype=np.uint8).tobytes()
        data = binascii.hexlify(raw)
        width = 2 * nbytes
        offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _error_pools(rng: np.random.Generator) -> dict[str, tuple[str, list[str]]]:
    k = 300
    return {
        "timeout": (
            "TimeoutError",
            [f"GET https://example.org/page/{rng.integers(1, 10**6)} timed out after {rng.uniform(2, 30):.1f}s" for _ in range(k)],
        ),
        "connection": (
            "ConnectionResetError",
            [f"connection reset by peer (10.0.{rng.integers(0, 255)}.{rng.integers(1, 255)}:{rng.integers(1024, 65535)})" for _ in range(k)],
        ),
        "ratelimit": (
            "openai.RateLimitError",
            [
                f"Rate limit reached in organization org-{binascii.hexlify(rng.bytes(6)).decode()} on tokens per min (TPM): "
                f"Limit 30000, Used {rng.integers(20000, 30000)}, Requested {rng.integers(500, 9000)}."
                for _ in range(k)
            ],
        ),
        "assert": (
            "AssertionError",
            [f"test_case_{rng.integers(1, 40)} failed: expected {rng.integers(0, 100)} got {rng.integers(0, 100)}" for _ in range(k)],
        ),
    }


class _Builder:
    """Lays out one template for ``m`` traces at once, one slot (column set) at a time."""

    def __init__(self, rng: np.random.Generator, ids: _Ids, ctx: dict[str, np.ndarray], pools: dict[str, tuple[str, list[str]]]) -> None:
        self.rng, self.ids, self.ctx, self.pools = rng, ids, ctx, pools
        self.m = len(ctx["trace"])
        self.slots: list[dict[str, Any]] = []

    def _span(self, slot: Slot, parent: pa.Array | None, start: np.ndarray, dur: np.ndarray, mask: np.ndarray | None, error: np.ndarray) -> pa.Array:
        span_id = self.ids.hex(self.m, 8)
        self.slots.append(dict(slot=slot, span_id=span_id, parent=parent, start=start, dur=dur, mask=mask, error=error))
        return span_id

    def leaf_duration(self, slot: Slot) -> np.ndarray:
        ms: np.ndarray = slot.ms * self.rng.lognormal(0.0, 0.45, self.m)
        return ms

    def layout(self, slot: Slot, parent: pa.Array | None, start: np.ndarray) -> np.ndarray:
        m = self.m
        if not slot.children:
            if slot.retry:
                mask = self.rng.random(m) < slot.retry
                dur = self.leaf_duration(slot) * 1.5
                self._span(slot, parent, start, dur, mask, np.ones(m, bool))
                start = np.where(mask, start + dur + 200.0, start)  # back-off before the retry
            dur = self.leaf_duration(slot)
            error = self.rng.random(m) < slot.error
            self._span(slot, parent, start, dur, None, error)
            return start + dur
        # An agent: its span first (children point at it), its duration once they are laid out.
        index = len(self.slots)
        span_id = self._span(slot, parent, start, np.zeros(m), None, np.zeros(m, bool))
        t = start + self.rng.uniform(0.1, 0.5, m)
        for item in slot.children:
            if isinstance(item, list):
                ends = [self.layout(c, span_id, t + self.rng.uniform(0.0, 0.3, m)) for c in item]
                t = np.maximum.reduce(ends)
            else:
                t = self.layout(item, span_id, t)
            t = t + self.rng.uniform(0.05, 2.0, m)
        self.slots[index]["dur"] = t - start
        return t


def _llm_columns(rng: np.random.Generator, slot: Slot, provider_idx: np.ndarray, session_prompt: np.ndarray, popular: np.ndarray) -> dict[str, Any]:
    n = len(provider_idx)
    names = np.array([p[0] for p in PROVIDERS], dtype=object)
    model = np.array([p[1] if slot.llm == "big" else p[2] for p in PROVIDERS], dtype=object)[provider_idx]
    rates = np.array([(p[3] if slot.llm == "big" else p[4]) or (np.nan, np.nan) for p in PROVIDERS])[provider_idx]
    tin = np.maximum(1, (slot.in_tokens * rng.lognormal(0, 0.5, n))).astype(np.int64)
    tout = np.maximum(1, (slot.out_tokens * rng.lognormal(0, 0.5, n))).astype(np.int64)
    cin = tin * rates[:, 0] / 1e6
    cout = tout * rates[:, 1] / 1e6
    if slot.prompt == "session":
        phash = session_prompt
    elif slot.prompt == "popular":
        pick = rng.random(n) < 0.3
        phash = np.where(pick, popular[rng.integers(0, len(popular), n)], None)
    else:
        phash = np.full(n, None, dtype=object)
    return dict(
        provider=names[provider_idx], model=model, response_model=model,
        input_tokens=tin, output_tokens=tout, total_tokens=tin + tout,
        input_cost_usd=cin, output_cost_usd=cout, cost_usd=cin + cout, prompt_hash=phash,
        finish_reason=np.where(rng.random(n) < 0.03, "length", "stop"),
    )


def generate(n_spans: int, root: Path, seed: int = 1, t0_us: int = T0_US) -> int:
    """Write about ``n_spans`` spans (exactly, after trimming) under ``root``; returns the count.

    The sessions start within the week from ``t0_us`` (µs since the epoch).
    """
    rng = np.random.default_rng(seed)
    ids = _Ids(rng)
    pools = _error_pools(rng)
    templates = _templates()
    avg = 7.3  # spans per trace of the mix, measured; the store is trimmed to n_spans exactly
    n_traces = int(n_spans / avg * 1.03) + 8
    n_sessions = max(1, n_traces // 4)
    # Sessions of 1-8 traces: assign traces to sessions, in order.
    trace_session = np.sort(rng.integers(0, n_sessions, n_traces))
    session_ids = ids.hex(n_sessions, 8)
    session_start = t0_us + rng.integers(0, WEEK_US, n_sessions)
    session_provider = rng.choice(len(PROVIDERS), n_sessions, p=PROVIDER_WEIGHTS)
    session_project = rng.choice(3, n_sessions, p=[0.6, 0.3, 0.1])
    session_prompt = np.array(ids.hex(n_sessions, 16).to_pylist(), dtype=object)
    popular = np.array(ids.hex(500, 16).to_pylist(), dtype=object)
    template_of = rng.choice(len(templates), n_traces, p=[w for w, _ in templates])
    parts: list[pa.Table] = []
    root_dur_parts: list[tuple[np.ndarray, np.ndarray]] = []
    tables: list[tuple[np.ndarray, dict[str, Any]]] = []
    for t_index, (_, template) in enumerate(templates):
        traces = np.flatnonzero(template_of == t_index)
        m = len(traces)
        if m == 0:
            continue
        sess = trace_session[traces]
        ctx = {"trace": traces}
        b = _Builder(rng, ids, ctx, pools)
        b.layout(template, None, np.zeros(m))
        trace_ids = ids.hex(m, 16)
        root_dur_parts.append((traces, b.slots[0]["dur"]))
        for s in b.slots:
            slot: Slot = s["slot"]
            keep = np.ones(m, bool) if s["mask"] is None else s["mask"]
            cols: dict[str, Any] = dict(
                trace_index=traces, session_index=sess, trace_id=trace_ids, span_id=s["span_id"],
                parent_span_id=s["parent"], rel_ms=s["start"], duration_ms=s["dur"], error=s["error"],
            )
            cols["slot"] = slot
            if slot.llm:
                cols.update(_llm_columns(rng, slot, session_provider[sess], session_prompt[sess], popular))
            tables.append((keep, cols))
    # Absolute trace starts: one after the other within a session, 5-60 s apart.
    root_dur = np.zeros(n_traces)
    for traces, dur in root_dur_parts:
        root_dur[traces] = dur
    step_us = (root_dur * 1000).astype(np.int64) + rng.integers(5_000_000, 60_000_000, n_traces)
    csum = np.cumsum(step_us) - step_us
    first_of_session = np.searchsorted(trace_session, trace_session, side="left")
    trace_start = session_start[trace_session] + (csum - csum[first_of_session])
    lost_root = rng.random(n_traces) < 0.001
    project_names = np.array(["support-bot", "research-agent", "code-assistant"], dtype=object)
    for keep, cols in tables:
        slot = cols.pop("slot")
        if slot.op == "orchestrator.turn":
            keep = keep & ~lost_root[cols["trace_index"]]
        idx = np.flatnonzero(keep)
        k = len(idx)
        sess = cols["session_index"][idx]
        error = cols["error"][idx]
        err_type = np.full(k, None, dtype=object)
        err_msg = np.full(k, None, dtype=object)
        if error.any():
            etype, pool = pools[slot.error_kind]
            where = np.flatnonzero(error)
            err_type[where] = etype
            err_msg[where] = np.array(pool, dtype=object)[rng.integers(0, len(pool), len(where))]
        ts = trace_start[cols["trace_index"][idx]] + (cols["rel_ms"][idx] * 1000).astype(np.int64)
        data: dict[str, Any] = {
            "event_id": ids.hex(k, 16),
            "session_id": session_ids.take(pa.array(sess)),
            "trace_id": cols["trace_id"].take(pa.array(idx)),
            "span_id": cols["span_id"].take(pa.array(idx)),
            "parent_span_id": None if cols["parent_span_id"] is None else cols["parent_span_id"].take(pa.array(idx)),
            "operation_name": pa.repeat(slot.op, k),
            "operation_type": pa.repeat(slot.otype, k),
            "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "duration_ms": cols["duration_ms"][idx],
            "error": error,
            "error_type": err_type,
            "error_message": err_msg,
            "project_name": pa.DictionaryArray.from_arrays(
                pa.array(session_project[sess].astype(np.int32)), pa.array(project_names)
            ).cast(pa.string()),
            "agent_name": pa.repeat(slot.agent, k),
            "process_id": np.full(k, 4242, dtype=np.int64),
        }
        if slot.llm:
            for name in ("provider", "model", "response_model", "input_tokens", "output_tokens", "total_tokens",
                         "input_cost_usd", "output_cost_usd", "cost_usd", "prompt_hash", "finish_reason"):
                data[name] = cols[name][idx]
            data["token_source"] = pa.repeat("provider", k)
            data["cost_source"] = np.where(np.isnan(data["cost_usd"]), None, "genai-prices")
            data["temperature"] = np.full(k, 0.2)
            data["max_tokens"] = np.full(k, 1024, dtype=np.int64)
            data["text_char_count"] = data["output_tokens"] * 4
        arrays = []
        for f in llamonitor.SCHEMA:
            value = data.get(f.name)
            if value is None:
                arrays.append(pa.nulls(k, f.type))
            elif isinstance(value, (pa.Array, pa.ChunkedArray)):
                arrays.append(value.cast(f.type))
            elif f.type == pa.float64():
                v = np.asarray(value, dtype=np.float64)
                arrays.append(pa.array(v, f.type, mask=np.isnan(v)))
            else:
                arrays.append(pa.array(value, f.type, from_pandas=True))
        parts.append(pa.Table.from_arrays(arrays, schema=llamonitor.SCHEMA))
    table = pa.concat_tables(parts).combine_chunks()
    # Time order, as a store written over time; the latest spans beyond n_spans are dropped.
    order = np.argsort(table.column("timestamp").to_numpy(), kind="stable")[:n_spans]
    table = table.take(pa.array(order))
    directory = root / datetime.fromtimestamp(t0_us / 1e6, timezone.utc).strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-table.num_rows // FILES)
    for i in range(FILES):
        part = table.slice(i * per_file, per_file)
        if part.num_rows:
            pq.write_table(
                part, directory / f"events_bench_{i:02d}.parquet", compression="snappy",
                row_group_size=ROW_GROUP_ROWS,
            )
    return int(table.num_rows)


# -- measurement (in a child process per size) -----------------------------------------


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _measure(store: str, repeat: int) -> dict[str, Any]:
    """Time the report ``repeat`` times after a cold run; peak RSS growth of the timed runs.

    The peak is the kernel's high-water mark (VmHWM), reset after the cold
    run (``/proc/self/clear_refs``), minus the RSS at that moment: the memory
    the report needs on top of a process that has imported everything and
    opened the store.
    """
    from llamonitor.analysis import analyze
    from llamonitor.storage import parquet

    q = parquet.query(store)
    t = time.perf_counter()
    report = analyze(q)
    cold = time.perf_counter() - t
    analyze(q)  # a second warm-up: the allocators' arenas reach their working size
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    rss0 = _status_mb("VmRSS")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        report = analyze(q)
        times.append(time.perf_counter() - t)
    peak = _status_mb("VmHWM") - rss0
    # The Python and numpy allocations alone (not DuckDB's or Arrow's), untimed.
    tracemalloc.start()
    analyze(q)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {
        "cold_s": cold,
        "median_s": statistics.median(times),
        "best_s": min(times),
        "rss_before_mb": rss0,
        "peak_growth_mb": peak,
        "numpy_peak_mb": traced,
        "spans": report.overview.spans,
        "traces": report.overview.traces,
        "sections": {
            "cost_usd": report.cost.total_usd,
            "suggestions": len(report.suggestions),
            "bottleneck": report.latency.bottlenecks[0].operation if report.latency.bottlenecks else None,
        },
        "timings": report.timings_ms,
    }


# -- the whole process against its SQL floor -------------------------------------------

FLOOR_TARGET = 1.3
"""The whole ``llamonitor report`` process may take at most this many times its SQL floor."""

FLOOR_SCRIPT = """\
import pickle, sys
import duckdb
with open(sys.argv[1], "rb") as f:
    statements = pickle.load(f)
con = duckdb.connect(":memory:")
con.execute("SET TimeZone = 'UTC'")
for kind, sql, params in statements:
    result = con.sql(sql, params=params)
    if kind == "stream":
        read = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
        for _batch in read(122_880):
            pass
    else:
        result.arrow()
"""


def _capture(store: str, out: str) -> None:
    """Run the report once, recording each statement it sends to DuckDB (with
    the store's relation spliced in) and its parameters, into ``out``."""
    from llamonitor.analysis import analyze
    from llamonitor.storage import _duckdb, parquet

    statements: list[tuple[str, str, list[Any]]] = []

    class Recording(_duckdb.DuckDBQuery):
        def _record(self, kind: str, sql: str, params: Any, filters: Any) -> None:
            relation = self._source(filters)
            if isinstance(relation, tuple):
                statements.append((kind, sql.replace("{rel}", relation[0]), [*relation[1], *params]))

        def run(self, sql: str, params: Any = (), filters: Any = _duckdb.NO_FILTERS) -> Any:
            self._record("run", sql, params, filters)
            return super().run(sql, params, filters)

        def stream(self, sql: str, params: Any = (), filters: Any = _duckdb.NO_FILTERS, batch_rows: int = _duckdb.STREAM_BATCH_ROWS) -> Any:
            self._record("stream", sql, params, filters)
            return super().stream(sql, params, filters, batch_rows)

    base = parquet.query(store)
    with Recording(base._source) as q:
        analyze(q)
    base.close()
    with open(out, "wb") as f:
        pickle.dump(statements, f)


def _wall(cmd: list[str]) -> float:
    # Bytecode is written (PYTHONDONTWRITEBYTECODE dropped): the warm-up run
    # leaves the .pyc files an installed package has, for both processes.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - t


def measure_floor(store: Path, trials: int, work: Path) -> dict[str, Any]:
    """Whole-process ``llamonitor report`` against the replay of its statements."""
    captured = work / "statements.pickle"
    subprocess.run([sys.executable, __file__, "--capture", str(store), str(captured)], check=True)
    floor_py = work / "floor.py"
    floor_py.write_text(FLOOR_SCRIPT)
    report_cmd = [sys.executable, "-m", "llamonitor.cli", "report", "--dir", str(store)]
    floor_cmd = [sys.executable, str(floor_py), str(captured)]
    _wall(report_cmd), _wall(floor_cmd)  # warm the page cache and the .pyc files
    reports, floors = [], []
    for _ in range(trials):  # interleaved: a slow second of the machine hits both
        reports.append(_wall(report_cmd))
        floors.append(_wall(floor_cmd))
    with open(captured, "rb") as f:
        n_statements = len(pickle.load(f))
    report_s, floor_s = statistics.median(reports), statistics.median(floors)
    return {"report_process_s": report_s, "floor_s": floor_s, "ratio": report_s / floor_s,
            "statements": n_statements, "report_trials_s": reports, "floor_trials_s": floors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="Keep the largest store at this path.")
    parser.add_argument("--json", type=Path, help="Also write every figure here.")
    parser.add_argument("--floor-trials", type=int, default=7,
                        help="Whole-process report and SQL floor runs per size (0: skip).")
    parser.add_argument("--only-floor", action="store_true",
                        help="Only the whole process against its SQL floor (no in-process timing).")
    parser.add_argument("--store", type=Path, help="Use this existing store (with --only-floor).")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child mode: a store path
    parser.add_argument("--capture", nargs=2, help=argparse.SUPPRESS)  # child mode: store, out
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure, args.repeat)))
        return 0
    if args.capture:
        _capture(*args.capture)
        return 0
    if args.store is not None:
        with tempfile.TemporaryDirectory(prefix="llamonitor-bench-floor-") as work:
            f = measure_floor(args.store, args.floor_trials, Path(work))
        _print_floor(f)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"llamonitor report benchmark · {platform.python_implementation()} {platform.python_version()} · "
          f"{os.cpu_count()} CPUs · duckdb {__import__('duckdb').__version__} · pyarrow {pa.__version__} · "
          f"numpy {np.__version__} · load average {os.getloadavg()[0]:.2f}")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="llamonitor-bench-report-"))
    try:
        for n in sizes:
            store = tmp / f"store_{n}"
            t = time.perf_counter()
            count = generate(n, store, args.seed)
            gen_s = time.perf_counter() - t
            r: dict[str, Any] = {"size": count, "generate_s": gen_s}
            if not args.only_floor:
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(store), "--repeat", str(args.repeat)],
                    check=True, capture_output=True, text=True,
                )
                r.update(json.loads(out.stdout.strip().splitlines()[-1]))
                ok = "ok" if r["median_s"] < 1.0 else "SLOW"
                print(f"{count:>9,} spans  generated in {gen_s:5.2f} s  │  report: cold {r['cold_s']:.3f} s, "
                      f"median {r['median_s']:.3f} s, best {r['best_s']:.3f} s [{ok}]  │  "
                      f"RSS {r['rss_before_mb']:.0f} MB, peak growth {r['peak_growth_mb']:5.1f} MB "
                      f"(Python+numpy {r['numpy_peak_mb']:.1f} MB)")
                print("           stages (ms, last run, overlapping): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()))
            if args.floor_trials:
                r["floor"] = measure_floor(store, args.floor_trials, tmp)
                print(f"{count:>9,} spans  " + _floor_line(r["floor"]))
            results.append(r)
            if args.keep is not None and n == max(sizes):
                if args.keep.exists():
                    shutil.rmtree(args.keep)
                shutil.copytree(store, args.keep)
            shutil.rmtree(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.only_floor:
        print("\n| spans | report, median | best | cold | peak RSS growth | Python + numpy peak |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['size']:,} | {r['median_s']:.3f} s | {r['best_s']:.3f} s | {r['cold_s']:.3f} s | "
                  f"{r['peak_growth_mb']:.0f} MB | {r['numpy_peak_mb']:.1f} MB |")
    if args.floor_trials:
        print("\n| spans | `llamonitor report` (whole process) | its SQL in bare DuckDB | ratio |")
        print("|---:|---:|---:|---:|")
        for r in results:
            f = r["floor"]
            print(f"| {r['size']:,} | {f['report_process_s']:.3f} s | {f['floor_s']:.3f} s | {f['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _floor_line(f: dict[str, Any]) -> str:
    ok = "ok" if f["ratio"] <= FLOOR_TARGET else "OVER"
    return (f"whole process: `llamonitor report` {f['report_process_s']:.3f} s, its {f['statements']} "
            f"statements in bare DuckDB {f['floor_s']:.3f} s: {f['ratio']:.2f}x "
            f"[{ok}, target {FLOOR_TARGET}x]")


def _print_floor(f: dict[str, Any]) -> None:
    print(_floor_line(f))
    print("  report trials: " + ", ".join(f"{x:.3f}" for x in f["report_trials_s"]))
    print("  floor trials:  " + ", ".join(f"{x:.3f}" for x in f["floor_trials_s"]))


if __name__ == "__main__":
    sys.exit(main())
