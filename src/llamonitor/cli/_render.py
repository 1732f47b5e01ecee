"""Terminal rendering of spans: tables, the span tree, JSON; and printing them
so that nothing is cut (wider than the terminal when stdout is not one).

Numbers are formatted by :mod:`llamonitor.analysis._format`, as in the reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from llamonitor.analysis._format import (
    clean_floats,
    duration,
    label,
    millis,
    size,
    timestamp,
    tokens,
    usd,
)
from llamonitor.schema import _ids

TRACE_ID_CHARS = 8
"""Trace ids are shown by this many characters (see ``llamonitor.schema._ids``);
``llamonitor trace`` accepts a prefix or a suffix."""

ERROR_MESSAGE_CHARS = 200
"""A span's error message is shown by its first line, up to this many
characters (``--json`` has all of it)."""

_UNWRAPPED_WIDTH = 100_000
"""The console width for output that is not a terminal: wider than any line."""


# -- printing ------------------------------------------------------------------


def console(stderr: bool = False) -> Console:
    """The console of stdout (or stderr), without rich's guessing of numbers."""
    return Console(highlight=False, stderr=stderr)


def emit(*renderables: RenderableType, stderr: bool = False) -> None:
    """Print ``renderables``. On a terminal, long cells wrap at its width; piped
    or redirected, nothing wraps and nothing is cut: each row is one line (for
    ``grep`` and files), as wide as its content (tables take their natural
    width; nothing is padded to the console's)."""
    out = console(stderr)
    if not out.is_terminal:
        out = Console(highlight=False, stderr=stderr, width=_UNWRAPPED_WIDTH)
    for r in renderables:
        out.print(r)


def progress(what: str, unit: str, err: Console, disable: bool) -> Any:
    """A progress bar on ``err`` (none when ``disable`` or ``err`` is not a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=err,
        disable=disable or not err.is_terminal,
    )


def short_id(value: str | None, chars: int = TRACE_ID_CHARS) -> str:
    return "-" if value is None else _ids.short_id(value, chars)


def metrics(row: dict[str, Any]) -> str:
    """Text, image and stream measurements of a span, compactly."""
    parts: list[str] = []
    chars = row.get("text_char_count")
    if chars is not None:
        text = f"{chars:,} chars"
        if row.get("text_word_count") is not None:
            text += f"/{row['text_word_count']:,} words"
        parts.append(text)
    images = row.get("image_count")
    if images:
        image = f"{images} img"
        if row.get("image_width") and row.get("image_height"):
            image += f" {row['image_width']}x{row['image_height']}"
        if row.get("image_format"):
            image += f" {row['image_format']}"
        if row.get("image_file_size_bytes") is not None:
            image += f" {size(row['image_file_size_bytes'])}"
        parts.append(image)
    items = row.get("stream_item_count")
    if items is not None:
        stream = f"{items} chunks"
        if row.get("time_to_first_token_ms") is not None:
            stream += f", first after {duration(row['time_to_first_token_ms'])}"
        parts.append(stream)
    return " · ".join(parts)


def error_text(row: dict[str, Any], message_chars: int = ERROR_MESSAGE_CHARS) -> str:
    if not row.get("error"):
        return ""
    kind = str(row.get("error_type") or "error").rsplit(".", 1)[-1]
    message = str(row.get("error_message") or "").splitlines()[0:1]
    if message and message[0]:
        first = message[0]
        if len(first) > message_chars:
            first = first[: message_chars - 1] + "…"
        return f"{kind}: {first}"
    return kind


# -- JSON --------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def for_json(row: dict[str, Any]) -> dict[str, Any]:
    """A span row for ``--json``: ``custom_attributes`` as an object."""
    out = dict(row)
    attrs = out.get("custom_attributes")
    if isinstance(attrs, str):
        try:
            out["custom_attributes"] = json.loads(attrs)
        except ValueError:
            pass
    return out


def dumps(obj: Any) -> str:
    """``obj`` as indented JSON; floats without binary noise (see
    :func:`~llamonitor.analysis._format.clean_float`), times in ISO 8601."""
    return json.dumps(clean_floats(obj), default=_default, ensure_ascii=False, indent=2)


# -- tables ------------------------------------------------------------------------


def new_table(title: str, **kwargs: Any) -> Table:
    """A table in the house style: a bold title, light rules, tight padding; at
    least as wide as its title (so that the title does not wrap)."""
    return Table(
        title=title,
        min_width=Text.from_markup(title).cell_len,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        **kwargs,
    )


def events_table(rows: Sequence[dict[str, Any]]) -> Table:
    days = {r["timestamp"].date() for r in rows if r.get("timestamp") is not None}
    one_day = len(days) == 1
    title = f"{len(rows)} most recent spans" + (f" · {next(iter(days))} UTC" if one_day else "")
    table = new_table(title)
    table.add_column(
        "time" if one_day else "time (UTC)",
        no_wrap=True,
        style="dim",
    )
    # Text columns wrap (never cut) when the terminal is narrow; see emit().
    table.add_column("session", overflow="fold")
    table.add_column("trace", no_wrap=True)
    table.add_column("operation", overflow="fold")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold")
    for row in rows:
        ts = row["timestamp"]
        when = "-" if ts is None else (f"{ts:%H:%M:%S.%f}"[:-3] if one_day else timestamp(ts))
        result = Text(overflow="fold")
        if row["error"]:
            result.append("✗ " + error_text(row), style="red")
        else:
            result.append("ok", style="green")
            m = metrics(row)
            if m:
                result.append(" · " + m, style="dim")
        table.add_row(
            when,
            row["session_id"],
            short_id(row["trace_id"]),
            row["operation_name"],
            duration(row["duration_ms"]),
            result,
        )
    return table


_STATS_LABELS = ("count", "errors", "err %", "avg", "p50", "p95", "p99", "max")


def has_llm_figures(groups: Sequence[dict[str, Any]]) -> bool:
    return any(g.get("total_tokens") is not None or g.get("cost_usd") is not None for g in groups)


def _group_table(
    title: str,
    key: str,
    labels: Sequence[str],
    cells: Any,
    groups: Sequence[dict[str, Any]],
    total: dict[str, Any] | None,
) -> Table:
    """One row per group (``cells(group)`` gives its cells), with a footer of ``total``."""
    table = new_table(title, show_footer=total is not None)
    footer = cells(total) if total is not None else [""] * len(labels)
    table.add_column(
        key, footer="all" if total is not None else "", overflow="fold", min_width=12, ratio=1,
    )
    for name, foot in zip(labels, footer, strict=True):
        table.add_column(name, justify="right", footer=foot, no_wrap=True)
    for group in groups:
        table.add_row(label(group[key]), *cells(group))
    return table


def stats_table(groups: Sequence[dict[str, Any]], key: str, total: dict[str, Any] | None) -> Table:
    """Counts, errors and duration percentiles per group; with ``≈ count`` (the
    count scaled back up by the spans' sample rates) when some were sampled."""
    title = f"spans by {key} (durations in ms)"
    if any(g.get("sampled") for g in groups):
        return _group_table(
            title + "; ≈ count: scaled up by the sample rate",
            key,
            ("count", "≈ count", *_STATS_LABELS[1:]),
            _sampled_stats_cells,
            groups,
            total,
        )
    return _group_table(title, key, _STATS_LABELS, _stats_cells, groups, total)


def _sampled_stats_cells(g: dict[str, Any]) -> list[str]:
    cells = _stats_cells(g)
    estimate = g.get("estimated_count")
    return [cells[0], "-" if estimate is None else f"{round(estimate):,}", *cells[1:]]


def _stats_cells(g: dict[str, Any]) -> list[str]:
    rate = g["error_rate"] or 0.0
    return [
        f"{g['count']:,}",
        f"{g['errors']:,}",
        f"{rate * 100:.1f}",
        millis(g["avg_ms"]),
        millis(g["p50_ms"]),
        millis(g["p95_ms"]),
        millis(g["p99_ms"]),
        millis(g["max_ms"]),
    ]


_LLM_LABELS = ("calls", "tokens in", "tokens out", "cost", "cost/call")


def llm_table(groups: Sequence[dict[str, Any]], key: str, total: dict[str, Any] | None) -> Table:
    """Tokens and cost per group (of the groups that have any)."""
    shown = [g for g in groups if g.get("llm_calls")]
    title = f"tokens and cost by {key}"
    return _group_table(title, key, _LLM_LABELS, _llm_cells, shown, total)


def _llm_cells(g: dict[str, Any]) -> list[str]:
    cost = g.get("cost_usd")
    text = usd(cost)
    if g.get("unpriced"):
        text += f" (+{g['unpriced']:,} unpriced)"
    count = g.get("llm_calls") or 0
    return [
        f"{count:,}",
        tokens(g.get("input_tokens")),
        tokens(g.get("output_tokens")),
        text,
        usd(cost / count) if cost is not None and count else "-",
    ]


# -- the span tree -------------------------------------------------------------


def build_tree(spans: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest spans under their parents: ``[{**span, "children": [...]}, ...]``.

    A span whose parent is not in the trace (lost, sampled out, not written
    yet) is a root and gets ``"orphan": True``. Order is start time.
    """
    nodes = [{**span, "children": []} for span in spans]
    by_id: dict[str, dict[str, Any]] = {}
    for node in nodes:
        by_id.setdefault(node["span_id"], node)
    roots: list[dict[str, Any]] = []
    for node in nodes:
        parent_id = node.get("parent_span_id")
        parent = by_id.get(parent_id) if parent_id else None
        if parent is None or parent is node:
            if parent_id:
                node["orphan"] = True
            roots.append(node)
        else:
            parent["children"].append(node)
    # A cycle of parents (corrupt data) is reachable from no root: show it at the root.
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        seen.add(id(node))
        stack.extend(node["children"])
    for node in nodes:
        if id(node) not in seen:
            node["orphan"] = True
            roots.append(node)
            stack = [node]
            while stack:
                n = stack.pop()
                seen.add(id(n))
                stack.extend(c for c in n["children"] if id(c) not in seen)
    return roots


def span_label(node: dict[str, Any], t0: datetime | None) -> Text:
    text = Text()
    text.append(str(node["operation_name"]), style="bold red" if node["error"] else "bold")
    text.append(f"  {node['operation_type']}", style="dim")
    text.append(f"  {duration(node['duration_ms'])}", style="cyan")
    if t0 is not None and node.get("timestamp") is not None:
        offset = (node["timestamp"] - t0).total_seconds() * 1000
        text.append(f"  @+{duration(offset)}", style="dim")
    if node["error"]:
        text.append(f"  ✗ {error_text(node)}", style="red")
    if node.get("orphan"):
        text.append("  (parent span missing)", style="yellow")
    m = metrics(node)
    if m:
        text.append(f"  {m}", style="green")
    return text


def trace_tree(trace_id: str, spans: Sequence[dict[str, Any]]) -> Tree:
    roots = build_tree(spans)
    t0 = min((s["timestamp"] for s in spans if s.get("timestamp")), default=None)
    errors = sum(1 for s in spans if s["error"])
    sessions = sorted({str(s["session_id"]) for s in spans})
    head = Text()
    head.append(f"trace {trace_id}", style="bold magenta")
    head.append(f"  session {', '.join(sessions)}  ·  {len(spans)} spans", style="dim")
    if errors:
        head.append(f"  ·  {errors} failed", style="red")
    if t0 is not None:
        head.append(f"  ·  started {timestamp(t0)} UTC", style="dim")
    tree = Tree(head, guide_style="dim")
    stack: list[tuple[Tree, dict[str, Any]]] = [(tree, r) for r in reversed(roots)]
    while stack:
        parent, node = stack.pop()
        branch = parent.add(span_label(node, t0))
        stack.extend((branch, c) for c in reversed(node["children"]))
    return tree


def strip_tree(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nested tree as JSON-ready dicts."""
    out = []
    for n in nodes:
        span = for_json({k: v for k, v in n.items() if k != "children"})
        out.append({**span, "children": strip_tree(n["children"])})
    return out
