"""The report as one self-contained HTML page: inline CSS and SVG, no script, no URL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from llamonitor.analysis import _svg as svg
from llamonitor.analysis._format import count, label, ms, pct, usd
from llamonitor.analysis._html_scores import scores_html
from llamonitor.analysis._models import Report, SessionReport, Suggestion

CHART_ROWS = 12
"""Bars per chart (the largest groups); the tables below list every group."""

_CSS = """
:root{--ink:#1f2328;--muted:#656d76;--line:#d0d7de;--soft:#f6f8fa;--accent:#4f6bed}
*{box-sizing:border-box}
body{margin:0;background:#eef1f5;color:var(--ink);
 font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
header h1{margin:0;font-size:26px}
header p{margin:4px 0 0;color:var(--muted)}
nav{margin:14px 0 4px;display:flex;gap:14px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-weight:600}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:14px;margin:0 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px;margin-top:18px}
.kpi{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.kpi b{display:block;font-size:22px;font-variant-numeric:tabular-nums}
.kpi span{color:var(--muted);font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 18px;
 overflow-x:auto;min-width:0}
.card.wide{grid-column:1/-1}
.note{color:var(--muted);font-size:13px;margin:6px 0 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{color:var(--muted);font-weight:600;background:var(--soft)}
th.t,td.t{text-align:left}
td.t{max-width:300px;overflow:hidden;text-overflow:ellipsis}
td.wrap{white-space:normal;min-width:240px;max-width:none}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--soft);
 padding:1px 4px;border-radius:4px}
.suggestions{display:grid;gap:12px}
.suggestion{background:#fff;border:1px solid var(--line);border-left:5px solid var(--accent);
 border-radius:10px;padding:12px 16px}
.suggestion.errors{border-left-color:#cf222e}.suggestion.cache{border-left-color:#2da44e}
.suggestion.bottleneck{border-left-color:#f0883e}.suggestion.cheaper_model{border-left-color:#8250df}
.suggestion h4{margin:0 0 4px;font-size:15px}
.suggestion p{margin:0;color:#424a53}
.saving{float:right;margin-left:12px;font-weight:700;color:#1a7f37;white-space:nowrap}
.kind{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.empty{background:#fff;border:1px dashed var(--line);border-radius:10px;padding:28px;
 text-align:center;color:var(--muted);font-size:16px}
"""


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    text: Sequence[int] = (0,),
    wrap: Sequence[int] = (),
) -> str:
    """A table; columns in ``text`` are left-aligned text, those in ``wrap`` may wrap."""
    if not rows:
        return '<p class="note">None.</p>'

    def cls(i: int) -> str:
        names = ("t" if i in text else "") + (" wrap" if i in wrap else "")
        return f' class="{names.strip()}"' if names else ""

    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            value = escape(str(cell))
            title = f' title="{value}"' if i in text and i not in wrap else ""
            cells.append(f"<td{cls(i)}{title}>{value}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _card(title: str, *parts: str, wide: bool = False) -> str:
    kind = "card wide" if wide else "card"
    return f'<div class="{kind}"><h3>{escape(title)}</h3>{"".join(parts)}</div>'


def _kpi(value: str, name: str) -> str:
    return f'<div class="kpi"><b>{escape(value)}</b><span>{escape(name)}</span></div>'


def _when(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _scope(report: Report) -> str:
    s = report.scope
    parts = []
    if isinstance(report, SessionReport):
        parts.append(f"session {report.session_id}")
    else:
        for name, value in (("project", s.project), ("session", s.session), ("trace", s.trace)):
            if value:
                parts.append(f"{name} {value}")
    o = report.overview
    if o.first is not None:
        parts.append(f"{_when(o.first)} → {_when(o.last)}")
    if s.since or s.until:
        parts.append(f"range {_when(s.since)} → {_when(s.until)}")
    return " · ".join(parts) or "all spans"


def _suggestion(s: Suggestion) -> str:
    saving = " · ".join(
        x for x in (
            f"save {usd(s.saving_usd)}" if s.saving_usd else "",
            f"save {ms(s.saving_ms)}" if s.saving_ms else "",
        ) if x
    )
    return (
        f'<div class="suggestion {escape(s.kind)}">'
        + (f'<span class="saving">{escape(saving)}</span>' if saving else "")
        + f'<span class="kind">{escape(s.kind.replace("_", " "))}</span>'
        f"<h4>{escape(s.title)}</h4><p>{escape(s.detail)}</p></div>"
    )


def _top(items: Sequence[Any], key: Callable[[Any], float]) -> list[Any]:
    return sorted(items, key=key, reverse=True)[:CHART_ROWS]


def _cost(report: Report) -> str:
    c = report.cost
    by_model = _top(c.by_model, lambda g: g.cost_usd)
    chart = svg.bars(
        [(f"{label(g.key)}" + (f" ({g.provider})" if g.provider else ""), g.cost_usd,
          f"{usd(g.cost_usd)} · {pct(g.share)}") for g in by_model if g.cost_usd > 0],
        label="cost by model",
    )
    note = (
        f"{c.unpriced_calls:,} of {c.llm_calls:,} LLM calls have no known price: "
        "their cost is not counted (never guessed)."
        if c.unpriced_calls else ""
    )
    groups = [
        _card(f"by {name}", _table(
            [name, "cost", "share", "calls", "spans", "unpriced"],
            [(label(g.key) + (f" ({g.provider})" if g.provider else ""), usd(g.cost_usd),
              pct(g.share), f"{g.calls:,}", f"{g.spans:,}", f"{g.unpriced_calls:,}")
             for g in items],
        ), wide=name == "operation")
        for name, items in (("model", c.by_model), ("provider", c.by_provider),
                            ("agent", c.by_agent), ("operation", c.by_operation))
    ]
    sessions = _table(
        ["session", "cost", "traces", "LLM calls", "tokens", "errors", "duration"],
        [(s.session_id, usd(s.cost_usd), s.traces, s.llm_calls, count(s.tokens), s.errors,
          ms(s.duration_ms)) for s in c.top_sessions],
    )
    traces = _table(
        ["trace", "cost", "session", "root", "spans", "tokens", "duration"],
        [(t.trace_id, usd(t.cost_usd), t.session_id or "-", t.root_operation or "-", t.spans,
          count(t.tokens), ms(t.duration_ms)) for t in c.top_traces],
        text=(0, 2, 3),
    )
    return (
        '<section id="cost"><h2>Cost</h2><div class="kpis">'
        + _kpi(usd(c.total_usd), "total (known prices)")
        + _kpi(usd(c.input_usd), "input tokens")
        + _kpi(usd(c.output_usd), "output tokens")
        + _kpi(f"{c.priced_calls:,}", "priced LLM calls")
        + _kpi(f"{c.unpriced_calls:,}", "LLM calls without a price")
        + "</div>"
        + '<div class="grid" style="margin-top:16px">'
        + _card("cost by model", chart, f'<p class="note">{escape(note)}</p>' if note else "")
        + "".join(groups)
        + _card("most expensive sessions", sessions, wide=True)
        + _card("most expensive traces", traces, wide=True)
        + "</div></section>"
    )


def _latency(report: Report) -> str:
    lat = report.latency
    ops = _top(lat.by_operation, lambda g: g.total_ms)
    chart = svg.percentiles(
        [(label(g.key), g.p50_ms, g.p95_ms, g.p99_ms, g.max_ms) for g in ops],
        label="latency percentiles by operation", fmt=ms,
    )
    path = lat.critical_path
    bottlenecks = svg.bars(
        [(b.operation, b.share, f"{pct(b.share)} · {ms(b.critical_ms)}")
         for b in lat.bottlenecks[:CHART_ROWS]],
        label="critical path share by operation", color=svg.PALETTE[1],
    )
    note = (
        f"{path.roots:,} critical paths ({path.orphans:,} from spans whose parent is missing) "
        f"over {path.spans:,} spans; total length {ms(path.total_ms)}. "
        "A child running in parallel with another is counted only where it alone kept its "
        "parent waiting."
    )

    def table(name: str, items: Sequence[Any]) -> str:
        return _card(f"by {name}", _table(
            [name, "count", "p50", "p95", "p99", "max", "total"],
            [(label(g.key) + (f" ({g.provider})" if g.provider else ""), f"{g.count:,}",
              ms(g.p50_ms), ms(g.p95_ms), ms(g.p99_ms), ms(g.max_ms), ms(g.total_ms))
             for g in items if g.key is not None or name == "operation"],
        ), wide=True)

    bottleneck_table = _table(
        ["operation", "share", "on the path", "spans", "avg on path", "beyond p50"],
        [(b.operation, pct(b.share), ms(b.critical_ms), f"{b.spans_on_path:,}",
          ms(b.avg_ms_on_path), ms(b.excess_ms)) for b in lat.bottlenecks],
    )
    slow = _table(
        ["trace", "duration", "root", "session", "spans", "errors"],
        [(t.trace_id, ms(t.duration_ms), t.root_operation or "-", t.session_id or "-", t.spans,
          t.errors) for t in lat.slowest_traces],
        text=(0, 2, 3),
    )
    o = lat.overall
    return (
        '<section id="latency"><h2>Latency</h2><div class="kpis">'
        + _kpi(ms(o.p50_ms), "p50 span") + _kpi(ms(o.p95_ms), "p95 span")
        + _kpi(ms(o.p99_ms), "p99 span") + _kpi(ms(o.max_ms), "slowest span")
        + "</div>"
        + '<div class="grid" style="margin-top:16px">'
        + _card("percentiles by operation (log scale)", chart)
        + _card("critical path bottlenecks", bottlenecks, f'<p class="note">{escape(note)}</p>')
        + _card("critical path by operation", bottleneck_table, wide=True)
        + table("operation", lat.by_operation) + table("model", lat.by_model)
        + table("agent", lat.by_agent) + _card("slowest traces", slow, wide=True)
        + "</div></section>"
    )


def _tokens(report: Report) -> str:
    t = report.tokens
    chart = svg.stacked_bars(
        [(label(g.key), (g.input_tokens, g.output_tokens))
         for g in _top(t.by_model, lambda g: g.total_tokens)],
        names=["input", "output"], label="tokens by model", fmt=count,
    )

    def table(name: str, items: Sequence[Any]) -> str:
        return _card(f"by {name}", _table(
            [name, "calls", "input", "output", "input/call", "output/call"],
            [(label(g.key), f"{g.calls:,}", count(g.input_tokens), count(g.output_tokens),
              count(g.input_per_call), count(g.output_per_call)) for g in items],
        ))

    note = (
        f"{t.llm_calls_without_tokens:,} LLM calls reported no token counts."
        if t.llm_calls_without_tokens else ""
    )
    return (
        '<section id="tokens"><h2>Tokens</h2><div class="kpis">'
        + _kpi(count(t.input_tokens), "input tokens")
        + _kpi(count(t.output_tokens), "output tokens")
        + _kpi(count(t.input_per_call), "input per call")
        + _kpi(count(t.output_per_call), "output per call")
        + _kpi(count(t.cache_read_tokens), "cache-read tokens")
        + "</div>"
        + '<div class="grid" style="margin-top:16px">'
        + _card("input vs output by model", chart,
                f'<p class="note">{escape(note)}</p>' if note else "")
        + table("model", t.by_model) + table("agent", t.by_agent)
        + _card("most token-heavy operations", _table(
            ["operation", "calls", "input", "output", "input/call", "output/call"],
            [(label(g.key), f"{g.calls:,}", count(g.input_tokens), count(g.output_tokens),
              count(g.input_per_call), count(g.output_per_call)) for g in t.top_operations],
        ))
        + "</div></section>"
    )


def _quality(report: Report) -> str:
    q = report.quality
    ops = _table(
        ["operation", "error rate", "errors", "spans", "error types"],
        [(o.operation, pct(o.error_rate), f"{o.errors:,}", f"{o.spans:,}",
          ", ".join(f"{k.rsplit('.', 1)[-1]} {v:,}" for k, v in o.error_types.items()))
         for o in q.by_operation],
        text=(0, 4), wrap=(4,),
    )
    patterns = _table(
        ["message (normalized)", "count", "type", "operations", "example"],
        [(p.pattern, f"{p.count:,}", p.error_type, ", ".join(p.operations), p.example)
         for p in q.patterns],
        text=(0, 2, 3, 4), wrap=(0, 4),
    )
    retries = _table(
        ["operation", "extra attempts", "after an error", "spans"],
        [(r.operation, f"{r.extra_attempts:,}", f"{r.after_error:,}", f"{r.spans:,}")
         for r in q.retries],
    )
    types = svg.bars(
        [(e.error_type, e.count, f"{e.count:,} · {pct(e.share)}")
         for e in q.by_error_type[:CHART_ROWS]],
        label="errors by type", color=svg.PALETTE[3],
    )
    return (
        '<section id="quality"><h2>Quality</h2><div class="kpis">'
        + _kpi(pct(q.success_rate), "success rate") + _kpi(pct(q.error_rate), "error rate")
        + _kpi(f"{q.errors:,}", "failed spans") + _kpi(f"{q.extra_attempts:,}", "extra attempts")
        + _kpi(f"{q.after_error:,}", "retries after an error")
        + "</div>"
        + '<div class="grid" style="margin-top:16px">'
        + _card("errors by type", types)
        + _card("retries", retries,
                '<p class="note">Spans of the same operation under the same parent that '
                "started after an earlier one had ended.</p>")
        + _card("errors by operation", ops, wide=True)
        + _card("most common errors (numbers, ids, hex and quoted strings masked)", patterns,
                wide=True)
        + "</div></section>"
    )


def _trends(report: Report) -> str:
    points = report.trends.points
    times = [p.start for p in points]
    per = "per " + report.trends.bucket

    def chart(title: str, series: list[tuple[str, list[float]]], fmt: svg.Fmt) -> str:
        return _card(f"{title} {per}", svg.lines(times, series, label=title, fmt=fmt))

    charts = [
        chart("cost", [("cost", [p.cost_usd for p in points])], usd),
        chart("latency", [("p50", [p.p50_ms for p in points]), ("p95", [p.p95_ms for p in points]),
                          ("p99", [p.p99_ms for p in points])], ms),
        chart("spans and LLM calls", [("spans", [float(p.spans) for p in points]),
                                      ("LLM calls", [float(p.llm_calls) for p in points])], count),
        chart("error rate", [("error rate", [p.error_rate for p in points])], pct),
        chart("input tokens", [("input", [float(p.input_tokens) for p in points])], count),
        chart("output tokens", [("output", [float(p.output_tokens) for p in points])], count),
    ]
    return (
        '<section id="trends"><h2>Trends</h2><div class="grid">' + "".join(charts)
        + "</div></section>"
    )


def render_html(report: Report, title: str = "llamonitor report") -> str:
    """The report as a self-contained HTML page (inline CSS and SVG charts, no script).

    Args:
        report: from :func:`~llamonitor.analysis.analyze` or
            :func:`~llamonitor.analysis.session_report`.
        title: the page title.

    Returns:
        The HTML text; it loads nothing from the network and works offline.
    """
    o = report.overview
    head = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{escape(title)}</h1><p>{escape(_scope(report))}</p>"
        f"<p>generated {_when(report.generated_at)}</p></header>"
    )
    if report.empty:
        return head + '<div class="empty">No spans in this scope.</div></main></body></html>'
    nav = "".join(
        f'<a href="#{a}">{escape(n)}</a>'
        for a, n in (("suggestions", "Suggestions"), ("cost", "Cost"), ("latency", "Latency"),
                     ("tokens", "Tokens"), ("quality", "Quality"), ("trends", "Trends"),
                     *((("scores", "Scores"),) if report.scores else ()))
    )
    kpis = (
        '<div class="kpis">'
        + _kpi(f"{o.spans:,}", "spans") + _kpi(f"{o.traces:,}", "traces")
        + _kpi(f"{o.sessions:,}", "sessions") + _kpi(f"{o.llm_calls:,}", "LLM calls")
        + _kpi(usd(report.cost.total_usd), "cost")
        + _kpi(pct(report.quality.error_rate), "error rate")
        + _kpi(ms(report.latency.overall.p95_ms), "p95 span latency")
        + _kpi(count(report.tokens.total_tokens), "tokens")
        + "</div>"
    )
    suggestions = (
        '<section id="suggestions"><h2>Suggestions</h2><div class="suggestions">'
        + ("".join(_suggestion(s) for s in report.suggestions)
           or '<p class="note">Nothing stands out.</p>')
        + "</div></section>"
    )
    return (
        head + f"<nav>{nav}</nav>" + kpis + suggestions + _cost(report) + _latency(report)
        + _tokens(report) + _quality(report) + _trends(report)
        + scores_html(report.scores, _table, _card, _kpi) + "</main></body></html>"
    )
