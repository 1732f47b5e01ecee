"""``llamonitor agents``: how the agents hand work to each other (the coordination
graph of a session or a time range; definitions in docs/agents.md).

Imported by ``llamonitor --help``: the analysis, DuckDB and rich are imported
when the command runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    open_store,
    store_errors,
    store_label,
    time_options,
)


@click.command()
@dir_option
@dsn_options
@click.option("--session", help="Only this session id.")
@time_options
@click.option("--project", help="Only this project_name.")
@click.option(
    "--top", type=click.IntRange(min=1), default=20, show_default=True,
    help="Rows per table (agents, handoffs, loops).",
)
@json_option
@store_errors(ValueError, ImportError)
def agents(
    directory: Path,
    dsn: str | None,
    table: str | None,
    session: str | None,
    since: datetime | None,
    until: datetime | None,
    project: str | None,
    top: int,
    as_json: bool,
) -> None:
    """Agents, handoffs, loops and the longest chain of a session or a time range.

    Handoffs are calls (an agent running inside another) and sequences (one
    agent after another under the same parent). Terminal tables by default;
    --json for the whole graph.
    """
    from llamonitor.analysis import agent_graph
    from llamonitor.cli import _render as render

    with open_store(directory, dsn, table) as store:
        graph = agent_graph(store, session=session, since=since, until=until, project=project)
    if as_json:
        click.echo(render.dumps(graph.to_dict()))
        return
    if graph.empty:
        where = store_label(directory, dsn)
        render.emit(
            f"No spans in {where} match these filters." if not graph.spans
            else f"None of the {graph.spans:,} spans in this scope carries an agent_name: "
            "name your agents with @monitor_llm(agent_name=...)."
        )
        return
    render.emit(*_view(graph, top))


def _view(graph: Any, top: int) -> list[Any]:
    from rich.text import Text

    from llamonitor.analysis._format import ms, pct, usd
    from llamonitor.cli import _render as render

    def t(value: Any) -> Text:  # store text is never markup
        return Text("-" if value is None else str(value))

    out: list[Any] = [Text(
        f"{len(graph.nodes):,} agents · {graph.invocations:,} invocations · "
        f"{graph.handoffs:,} handoffs · {graph.traces:,} traces · {graph.spans:,} spans",
        style="bold",
    )]
    if graph.suggestions:
        lines = Text()
        for i, s in enumerate(graph.suggestions, 1):
            lines.append(f"{i}. {s.title}\n", style="bold")
            lines.append(f"   {s.detail}\n", style="dim")
        out += [Text("Suggestions", style="bold underline"), lines]
    nodes = render.new_table("agents")
    for col in ("agent", "invocations", "time", "critical path", "cost", "tokens in",
                "failed", "handoffs", "came back"):
        nodes.add_column(col, justify="left" if col == "agent" else "right")
    for n in graph.nodes[:top]:
        nodes.add_row(t(n.agent), f"{n.invocations:,}", ms(n.time_ms), pct(n.critical_share),
                      usd(n.cost_usd), f"{n.input_tokens:,}", f"{n.failed:,}",
                      f"{n.handoffs_out:,}", pct(n.return_rate))
    out.append(nodes)
    edges = render.new_table("handoffs")
    for col in ("from", "to", "kind", "count", "latency", "p50", "success", "context tokens"):
        edges.add_column(col, justify="left" if col in ("from", "to", "kind") else "right")
    for e in graph.edges[:top]:
        ctx = "-" if e.context_tokens is None else f"{e.context_tokens:,.0f}"
        edges.add_row(t(e.source), t(e.target), e.kind, f"{e.count:,}", ms(e.latency_ms),
                      ms(e.p50_latency_ms), pct(e.success_rate), ctx)
    out.append(edges)
    if graph.loops:
        loops = render.new_table("loops")
        for col in ("path", "count", "traces"):
            loops.add_column(col, justify="left" if col == "path" else "right")
        for lp in graph.loops[:top]:
            loops.add_row(t(" → ".join(lp.path)), f"{lp.count:,}", f"{lp.traces:,}")
        out.append(loops)
    chain = graph.longest_chain
    if chain.steps:
        steps = render.new_table(
            f"longest chain: {chain.handoffs} handoffs, {ms(chain.duration_ms)}"
        )
        for col in ("#", "agent", "via", "at", "took", "context tokens", "text handed"):
            steps.add_column(col, justify="left" if col in ("agent", "via") else "right")
        for i, st in enumerate(chain.steps, 1):
            steps.add_row(str(i), t(st.agent), st.kind or "start", "+" + ms(st.offset_ms),
                          ms(st.duration_ms), t(st.context_tokens), t(st.text_chars))
        out += [steps, Text(f"trace {chain.trace_id}", style="dim")]
    return out
