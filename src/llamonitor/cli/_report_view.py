"""The report in the terminal: one rich table per breakdown, sparklines for trends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from llamonitor.analysis import Report
from llamonitor.analysis._format import count, label, ms, pct, timestamp, usd
from llamonitor.cli import _render as render

_SPARK = "▁▂▃▄▅▆▇█"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = render.new_table(title)
    for i, name in enumerate(columns):
        if i == 0:  # wraps on a narrow terminal, never cut (see render.emit)
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    return table


def spark(values: Sequence[float]) -> str:
    """A one-line chart of ``values`` (empty when there are none)."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _SPARK[0] * len(values)
    return "".join(_SPARK[min(7, int(v / top * 7.999))] for v in values)


def _model(key: str | None, provider: str | None) -> str:
    return label(key) + (f" ({provider})" if provider else "")


def sections(report: Report, top: int) -> list[Any]:
    """The report's renderables, in order: suggestions first, then each section."""
    c, lat, t, q = report.cost, report.latency, report.tokens, report.quality
    out: list[Any] = []
    if report.suggestions:
        lines = Text()
        for i, s in enumerate(report.suggestions, 1):
            saving = " · ".join(
                x for x in (f"save {usd(s.saving_usd)}" if s.saving_usd else "",
                            f"save {ms(s.saving_ms)}" if s.saving_ms else "") if x
            )
            lines.append(f"{i}. {s.title}", style="bold")
            if saving:
                lines.append(f"  [{saving}]", style="green")
            lines.append(f"\n   {s.detail}\n", style="dim")
        out += [Text("Suggestions", style="bold underline"), lines]
    cost_line = f"[bold]Cost[/] {usd(c.total_usd)} over {c.priced_calls:,} priced LLM calls"
    if c.unpriced_calls:
        cost_line += f" · [yellow]{c.unpriced_calls:,} calls without a price (not counted)[/]"
    out.append(cost_line)
    out.append(_table("cost by model", ["model", "cost", "share", "calls", "unpriced"],
                      [(_model(g.key, g.provider), usd(g.cost_usd), pct(g.share), f"{g.calls:,}",
                        f"{g.unpriced_calls:,}")
                       for g in c.by_model[:top] if g.cost_usd or g.calls]))
    for name, items in (("agent", c.by_agent), ("operation", c.by_operation)):
        out.append(_table(f"cost by {name}", [name, "cost", "share", "calls"],
                          [(label(g.key), usd(g.cost_usd), pct(g.share), f"{g.calls:,}")
                           for g in items[:top] if g.cost_usd or g.calls]))
    out.append(_table("most expensive sessions",
                      ["session", "cost", "traces", "LLM calls", "tokens", "duration"],
                      [(s.session_id, usd(s.cost_usd), s.traces, s.llm_calls, count(s.tokens),
                        ms(s.duration_ms)) for s in c.top_sessions]))
    out.append(_table("most expensive traces", ["trace", "cost", "root", "spans", "duration"],
                      [(x.trace_id, usd(x.cost_usd), x.root_operation or "-", x.spans,
                        ms(x.duration_ms)) for x in c.top_traces]))
    o = lat.overall
    out.append(f"[bold]Latency[/] p50 {ms(o.p50_ms)} · p95 {ms(o.p95_ms)} · p99 {ms(o.p99_ms)}"
               f" · max {ms(o.max_ms)} (all spans)")
    for name, groups in (("operation", lat.by_operation), ("model", lat.by_model),
                         ("agent", lat.by_agent)):
        rows = [(_model(g.key, g.provider), f"{g.count:,}", ms(g.p50_ms), ms(g.p95_ms),
                 ms(g.p99_ms), ms(g.max_ms)) for g in groups if g.key is not None][:top]
        out.append(_table(f"latency by {name}", [name, "count", "p50", "p95", "p99", "max"], rows))
    path = lat.critical_path
    out.append(_table(
        f"critical path: {path.roots:,} paths, {ms(path.total_ms)} in all"
        + (f" ({path.orphans:,} from spans whose parent is missing)" if path.orphans else ""),
        ["operation", "share", "on the path", "spans", "beyond p50"],
        [(b.operation, pct(b.share), ms(b.critical_ms), f"{b.spans_on_path:,}", ms(b.excess_ms))
         for b in lat.bottlenecks[:top]],
    ))
    out.append(f"[bold]Tokens[/] {count(t.input_tokens)} in · {count(t.output_tokens)} out · "
               f"{count(t.input_per_call)} in / {count(t.output_per_call)} out per call"
               + (f" · [yellow]{t.llm_calls_without_tokens:,} LLM calls without counts[/]"
                  if t.llm_calls_without_tokens else ""))
    for name, tokens in (("model", t.by_model), ("agent", t.by_agent),
                         ("operation (most tokens)", t.top_operations)):
        out.append(_table(f"tokens by {name}", [name.split()[0], "calls", "input", "output",
                                                 "in/call", "out/call"],
                          [(label(g.key), f"{g.calls:,}", count(g.input_tokens),
                            count(g.output_tokens), count(g.input_per_call),
                            count(g.output_per_call)) for g in tokens[:top]]))
    out.append(f"[bold]Quality[/] {pct(q.success_rate)} succeeded · [red]{q.errors:,} failed[/]"
               f" · {q.extra_attempts:,} extra attempts ({q.after_error:,} after an error)")
    out.append(_table("errors by operation", ["operation", "rate", "errors", "spans", "types"],
                      [(e.operation, pct(e.error_rate), f"{e.errors:,}", f"{e.spans:,}",
                        ", ".join(f"{k.rsplit('.', 1)[-1]} {v:,}"
                                  for k, v in list(e.error_types.items())[:3]))
                       for e in q.by_operation[:top]]))
    out.append(_table("most common errors", ["message (normalized)", "count", "type"],
                      [(p.pattern, f"{p.count:,}", p.error_type.rsplit(".", 1)[-1])
                       for p in q.patterns[:top]]))
    if q.retries:
        out.append(_table("retries", ["operation", "extra attempts", "after an error"],
                          [(r.operation, f"{r.extra_attempts:,}", f"{r.after_error:,}")
                           for r in q.retries[:top]]))
    points = report.trends.points
    if len(points) > 1:
        trend = _table(f"trends per {report.trends.bucket} ({len(points)} buckets, "
                       f"{timestamp(points[0].start)[:16]} → "
                       f"{timestamp(points[-1].start)[:16]})",
                       ["", "trend", "last"], [])
        for name, values, fmt in (
            ("spans", [float(p.spans) for p in points], count),
            ("cost", [p.cost_usd for p in points], usd),
            ("p95", [p.p95_ms for p in points], ms),
            ("errors", [float(p.errors) for p in points], count),
            ("tokens", [float(p.input_tokens + p.output_tokens) for p in points], count),
        ):
            trend.add_row(name, spark(values[-60:]), fmt(values[-1]))
        out.append(trend)
    out += score_sections(report.scores, top)
    return out


def _labels(labels: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{x['label']} {pct(x['share'])}" for x in labels[:4])


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def score_sections(scores: dict[str, Any], top: int) -> list[Any]:
    """The scores section: one distribution a score name, the breakdowns, the trend."""
    if not scores:
        return []
    from rich.markup import escape

    out: list[Any] = [
        f"[bold]Scores[/] {scores['scores']:,} on the spans of this scope"
        + (f" · {scores['unmatched']:,} on spans outside it (or not stored)"
           if scores["unmatched"] else "")
    ]
    out.append(_table("scores", ["score", "count", "numeric", "mean", "median", "min", "max",
                                 "labels"],
                      [(escape(g["name"]), f"{g['count']:,}", f"{g['numeric']:,}",
                        _mean(g["mean"]), _mean(g["median"]), _mean(g["min"]),
                        _mean(g["max"]), escape(_labels(g["labels"])))
                       for g in scores["names"]]))
    for dim, groups in scores["by"].items():
        name = dim.replace("_", " ")
        out.append(_table(f"scores by {name}", ["score", name, "count", "mean", "labels"],
                          [(escape(g["name"]), escape(label(g["key"])), f"{g['count']:,}",
                            _mean(g["mean"]), escape(_labels(g["labels"])))
                           for g in groups[: top * max(1, len(scores["names"]))]]))
    trend = scores["trend"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in trend["points"]:
        by_name.setdefault(p["name"], []).append(p)
    if any(len(v) > 1 for v in by_name.values()):
        t = _table(f"score trends per {trend['bucket']}", ["score", "count", "mean", "last mean"],
                   [])
        for name, pts in by_name.items():
            means = [p["mean"] for p in pts if p["mean"] is not None]
            t.add_row(escape(name), spark([float(p["count"]) for p in pts][-60:]),
                      spark(means[-60:]), _mean(means[-1] if means else None))
        out.append(t)
    return out


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def overview(report: Report) -> str:
    """The report's scope on one line (markup)."""
    o = report.overview
    line = (f"[bold]{_n(o.spans, 'span')}[/] · {_n(o.traces, 'trace')} · "
            f"{_n(o.sessions, 'session')} · {_n(o.llm_calls, 'LLM call')} · "
            f"[red]{o.errors:,}[/] failed")
    if o.sampled_spans:
        line += f" · ≈ {round(o.estimated_spans):,} spans scaled up by the sample rate"
    if o.first is not None and o.last is not None:
        line += f" · {timestamp(o.first)} → {timestamp(o.last)} UTC"
    return line


