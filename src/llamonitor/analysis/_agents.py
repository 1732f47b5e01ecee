"""``agent_graph()``: the coordination graph of a session or a time range.

One DuckDB statement reads a compact projection of the scope's spans (so the
same analysis runs on every store); :mod:`._agents_walk` finds invocations,
handoffs and the critical path per agent (numpy), :mod:`._agents_chain` the
chains and loops, :mod:`._agents_suggest` what to change. The definitions
are in :mod:`._agents_walk`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from llamonitor.analysis import _agents_chain, _agents_suggest, _agents_walk
from llamonitor.analysis._agents_model import (
    AgentChain,
    AgentEdge,
    AgentGraph,
    AgentLoop,
    AgentNode,
    ChainStep,
    HandoffKind,
)
from llamonitor.analysis._report import Store, _opened
from llamonitor.analysis._sql import IS_LLM
from llamonitor.storage._duckdb import DuckDBQuery, Filters

MAX_SPANS = 2_000_000
"""A scope with more spans than this is refused (narrow it with a time range): the
graph holds about 150 bytes per span in memory. ``llamonitor report`` leaves the
agent suggestions out of such a scope."""

_KINDS: tuple[HandoffKind, HandoffKind] = ("call", "sequence")


def _types_sql() -> str:
    return ", ".join("'" + t + "'" for t in _agents_walk.AGENT_OPERATION_TYPES)


GRAPH_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "timestamp", "duration_ms", "agent_name",
    "operation_type", "error", "model", "provider", "input_tokens", "output_tokens",
    "total_tokens", "cost_usd", "text_char_count",
)
"""The span columns :func:`graph_sql` reads."""


def graph_sql() -> str:
    """Per span: keys (as the structure pass's), times in µs, agent, flags, sizes."""
    return (
        "SELECT xor(th, hash(span_id)) AS k, xor(th, hash(parent_span_id)) AS pk, th, "
        'epoch_us("timestamp") AS a, CAST(CASE WHEN isfinite(duration_ms) AND duration_ms > 0 '
        "THEN round(duration_ms * 1000) ELSE 0 END AS BIGINT) AS d, agent_name, "
        f"coalesce(operation_type IN ({_types_sql()}), false) AS agent_type, "
        f"coalesce(error, false) AS err, {IS_LLM} AS llm, CAST(cost_usd AS DOUBLE) AS cost, "
        "CAST(input_tokens AS DOUBLE) AS input_tokens, "
        "CAST(output_tokens AS DOUBLE) AS output_tokens, "
        "CAST(text_char_count AS DOUBLE) AS text_chars, trace_id, span_id "
        "FROM (SELECT hash(trace_id) AS th, trace_id, span_id, parent_span_id, \"timestamp\", "
        "duration_ms, agent_name, operation_type, error, model, provider, input_tokens, "
        "output_tokens, total_tokens, cost_usd, text_char_count FROM {rel} {where})"
    )


def _f64(table: pa.Table, name: str) -> Any:
    return table.column(name).to_numpy().astype(np.float64)  # nulls: NaN


def _spans(table: pa.Table) -> tuple[_agents_walk.Spans, list[str]]:
    encoded = table.column("agent_name").combine_chunks().dictionary_encode()
    names = [str(x) for x in encoded.dictionary.to_pylist()]
    codes = encoded.indices.fill_null(-1).to_numpy().astype(np.int64)

    def col(name: str, dtype: Any) -> Any:
        return np.ascontiguousarray(
            table.column(name).to_numpy(zero_copy_only=False), dtype=dtype
        )

    spans = _agents_walk.Spans(
        k=col("k", np.uint64), pk=col("pk", np.uint64), trace=col("th", np.uint64),
        a=col("a", np.int64), d=col("d", np.int64), agent=codes,
        agent_type=col("agent_type", np.bool_), err=col("err", np.bool_), llm=col("llm", np.bool_),
        cost=_f64(table, "cost"), input_tokens=_f64(table, "input_tokens"),
        output_tokens=_f64(table, "output_tokens"), text_chars=_f64(table, "text_chars"),
    )
    return spans, names


def agent_graph(
    store: Store,
    *,
    session: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    project: str | None = None,
    trace: str | None = None,
    suggestions: bool = True,
) -> AgentGraph:
    """The coordination graph of the spans of a scope.

    Args:
        store: a query object (any store's ``DuckDBQuery``) or a Parquet store's directory.
        session: only this session id.
        since: spans that started at or after this time (naive = UTC).
        until: spans that started before this time.
        project: only this ``project_name``.
        trace: only this trace id.
        suggestions: compute the suggestions.

    Returns:
        An :class:`AgentGraph` (``graph.empty`` when no span has an agent name).

    Raises:
        ValueError: more than :data:`MAX_SPANS` spans in the scope.
    """
    filters = Filters(
        session_id=session, trace_id=trace, since=since, until=until, project_name=project
    )
    with _opened(store) as q:
        return graph_of(q, filters, suggestions=suggestions)


def graph_of(q: DuckDBQuery, filters: Filters, *, suggestions: bool = True,
             spans: int | None = None) -> AgentGraph:
    """:func:`agent_graph` of ``filters`` over ``q`` (``spans``: their count, if known)."""
    session = filters.session_id if isinstance(filters.session_id, str) else None
    graph = AgentGraph(session=session, since=filters.since, until=filters.until,
                       project=filters.project_name)
    begun = time.perf_counter()
    where, params = q.where(filters)
    if spans is None and session is None:  # a session is read at once, a time range counted
        head = q.run("SELECT count(*) AS n FROM {rel} " + where, params, filters)
        spans = int(head.column("n")[0].as_py()) if head is not None else 0
    if spans is not None and spans > MAX_SPANS:
        raise ValueError(
            f"since: {spans:,} spans in this scope, at most {MAX_SPANS:,}: "
            "choose a shorter time range or a session"
        )
    reading = filters.reading(GRAPH_COLUMNS)
    table = q.run(graph_sql().replace("{where}", where), params, reading) if spans != 0 else None
    if table is not None and table.num_rows > MAX_SPANS:
        raise ValueError(
            f"since: {table.num_rows:,} spans in this scope, at most {MAX_SPANS:,}: "
            "choose a shorter time range"
        )
    graph.timings_ms["read"] = (time.perf_counter() - begun) * 1000
    if table is None or table.num_rows == 0:
        return graph
    fill(graph, table, with_suggestions=suggestions)
    graph.timings_ms["total"] = (time.perf_counter() - begun) * 1000
    return graph


def fill(graph: AgentGraph, table: pa.Table, *, with_suggestions: bool = True) -> None:
    """Fill ``graph`` from the rows of :func:`graph_sql`."""
    begun = time.perf_counter()
    spans, names = _spans(table)
    graph.spans = int(spans.k.size)
    graph.agent_spans = int((spans.agent >= 0).sum())
    graph.traces = int(np.unique(spans.trace).size)
    graph.unattributed_spans = graph.spans
    if not names or graph.agent_spans == 0:
        return
    w = _agents_walk.walk(spans, len(names))
    c = _agents_chain.chains(w, spans.trace[w.root])
    graph.unattributed_spans = int((w.inv_of < 0).sum())
    graph.invocations = int(w.root.size)
    graph.handoffs = int(w.h_src.size)
    graph.critical_ms = w.critical_total_us / 1000
    graph.nodes = _nodes(w, c, names)
    graph.edges = _edges(w, spans, names)
    graph.loops = sorted(
        (AgentLoop(path=[names[a] for a in path], count=n, traces=len(seen))
         for path, (n, seen) in c.loops.items()),
        key=lambda lp: (-lp.count, lp.path),
    )
    graph.longest_chain = _chain(w, c, names, table)
    graph.timings_ms["walk"] = (time.perf_counter() - begun) * 1000
    if with_suggestions:
        graph.suggestions = _agents_suggest.suggestions(graph)


def _nodes(w: _agents_walk.Walk, c: _agents_chain.Chains, names: list[str]) -> list[AgentNode]:
    n = len(names)

    def per(weights: Any) -> Any:
        return np.bincount(w.agent, weights=weights, minlength=n)

    inv = per(None)
    dur = per((w.end - w.start).astype(np.float64))
    cost, tin, tout = per(w.cost), per(w.input_tokens), per(w.output_tokens)
    llm, spans, failed, errs = per(w.llm_calls), per(w.spans), per(w.failed), per(w.error_spans)
    src_agent = w.agent[w.h_src]
    out = np.bincount(src_agent, minlength=n)
    back = np.bincount(src_agent, weights=np.array(c.returned, dtype=np.float64), minlength=n)
    total = w.critical_total_us
    nodes = [
        AgentNode(
            agent=names[i], invocations=int(inv[i]), time_ms=float(dur[i]) / 1000,
            avg_ms=float(dur[i]) / 1000 / int(inv[i]) if inv[i] else 0.0,
            cost_usd=float(cost[i]), input_tokens=int(tin[i]), output_tokens=int(tout[i]),
            llm_calls=int(llm[i]), spans=int(spans[i]), failed=int(failed[i]),
            error_spans=int(errs[i]), critical_ms=float(w.critical_us[i]) / 1000,
            critical_share=float(w.critical_us[i]) / total if total else 0.0,
            handoffs_out=int(out[i]), returned=int(back[i]),
            return_rate=float(back[i]) / int(out[i]) if out[i] else 0.0,
        )
        for i in range(n)
        if inv[i]
    ]
    return sorted(nodes, key=lambda x: (-x.time_ms, x.agent))


def _mean(values: Any) -> float | None:
    ok = values[~np.isnan(values)]
    return float(ok.mean()) if ok.size else None


def _edges(w: _agents_walk.Walk, s: _agents_walk.Spans, names: list[str]) -> list[AgentEdge]:
    n = len(names)
    if not w.h_src.size:
        return []
    key = (w.agent[w.h_src] * n + w.agent[w.h_dst]) * 2 + w.h_kind
    order = np.argsort(key, kind="stable")
    sk = key[order]
    cut = np.flatnonzero(np.diff(sk)) + 1
    edges = []
    trace = s.trace[w.root]
    for idx in np.split(order, cut):
        k = int(key[idx[0]])
        lat = w.h_latency_us[idx] / 1000
        ok = ~w.failed[w.h_dst[idx]]
        ctx = w.context_tokens[w.h_dst[idx]]
        edges.append(AgentEdge(
            source=names[k // 2 // n], target=names[k // 2 % n], kind=_KINDS[k % 2],
            count=int(idx.size), traces=int(np.unique(trace[w.h_dst[idx]]).size),
            latency_ms=float(lat.mean()), p50_latency_ms=float(np.median(lat)),
            max_latency_ms=float(lat.max()), success_rate=float(ok.mean()),
            failures=int((~ok).sum()), context_tokens=_mean(ctx),
            text_chars=_mean(w.h_text_chars[idx]),
        ))
    return sorted(edges, key=lambda e: (-e.count, e.source, e.target, e.kind))


def _num(value: float) -> int | None:
    return None if np.isnan(value) else int(value)


def _chain(
    w: _agents_walk.Walk, c: _agents_chain.Chains, names: list[str], table: pa.Table
) -> AgentChain:
    if not c.longest:
        return AgentChain()
    rows = w.root[c.longest]
    span_ids = table.column("span_id").take(pa.array(rows)).to_pylist()
    trace_id = table.column("trace_id")[int(rows[0])].as_py()
    t0 = int(w.start[c.longest[0]])
    kinds: list[HandoffKind | None] = [
        None, *(_KINDS[int(w.h_kind[h])] for h in c.longest_handoffs)
    ]
    chars = [np.nan, *(float(w.h_text_chars[h]) for h in c.longest_handoffs)]
    steps = [
        ChainStep(
            agent=names[int(w.agent[v])], span_id=str(span_ids[i]), kind=kinds[i],
            offset_ms=(int(w.start[v]) - t0) / 1000,
            duration_ms=int(w.end[v] - w.start[v]) / 1000,
            failed=bool(w.failed[v]), context_tokens=_num(float(w.context_tokens[v])),
            text_chars=_num(chars[i]), output_tokens=int(w.output_tokens[v]),
        )
        for i, v in enumerate(c.longest)
    ]
    ctx = [st.context_tokens for st in steps if st.context_tokens]
    return AgentChain(
        trace_id=str(trace_id), handoffs=len(c.longest_handoffs),
        duration_ms=(int(w.end[c.longest].max()) - t0) / 1000, steps=steps,
        context_growth=ctx[-1] / ctx[0] if len(ctx) >= 2 else None,
    )
