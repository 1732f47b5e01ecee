"""Small inline SVG charts, generated in Python (no script, nothing loaded).

Each function returns an ``<svg>`` element as a string, sized in CSS pixels,
with every label escaped. Colors come from :data:`PALETTE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape

PALETTE = ("#4f6bed", "#f0883e", "#2da44e", "#cf222e", "#8250df", "#1b7c83", "#bf8700", "#6e7781")
INK, MUTED, GRID = "#1f2328", "#656d76", "#e6e8eb"
FONT = "font-family:inherit;font-size:12px"

Fmt = Callable[[float], str]


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _text(x: float, y: float, text: str, *, anchor: str = "start", color: str = INK,
          weight: str = "normal", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{color}" '
        f'font-size="{size}" font-weight="{weight}">{escape(text)}</text>'
    )


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    # Scales down to its container (viewBox), never up past its natural size.
    return (
        f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet" '
        f'style="{FONT};width:100%;max-width:{width:.0f}px;height:auto">'
        + "".join(body) + "</svg>"
    )


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power: float = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10.0 * power


def empty(width: float, message: str) -> str:
    return _svg(width, 40, [_text(8, 24, message, color=MUTED)], message)


def bars(
    rows: Sequence[tuple[str, float, str]],
    *,
    label: str,
    width: float = 520,
    color: str = PALETTE[0],
    label_chars: int = 26,
) -> str:
    """Horizontal bars: (label, value, value shown at the end of the bar)."""
    if not rows or max(v for _, v, _ in rows) <= 0:
        return empty(width, "nothing to show")
    left, right, row_h = 170.0, 96.0, 24.0
    top = max(v for _, v, _ in rows)
    body = []
    for i, (name, value, shown) in enumerate(rows):
        y = 6 + i * row_h
        w = max(1.0, (width - left - right) * value / top) if value > 0 else 0.0
        body.append(
            f"<g><title>{escape(name)}: {escape(shown)}</title>"
            + _text(left - 8, y + 15, _clip(name, label_chars), anchor="end")
            + f'<rect x="{left}" y="{y + 3:.1f}" width="{w:.1f}" height="{row_h - 8}" '
            f'rx="3" fill="{color}"/>'
            + _text(left + w + 6, y + 15, shown, color=MUTED)
            + "</g>"
        )
    return _svg(width, 12 + len(rows) * row_h, body, label)


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[float]]],
    *,
    names: Sequence[str],
    label: str,
    fmt: Fmt,
    width: float = 520,
) -> str:
    """Horizontal bars split in parts (e.g. input and output tokens), with a legend."""
    totals = [sum(parts) for _, parts in rows]
    if not rows or max(totals) <= 0:
        return empty(width, "nothing to show")
    left, right, row_h = 170.0, 96.0, 24.0
    top = max(totals)
    body = [_legend(left, 14, names)]
    for i, ((name, parts), total) in enumerate(zip(rows, totals, strict=True)):
        y = 26 + i * row_h
        x = left
        tip = ", ".join(f"{n} {fmt(v)}" for n, v in zip(names, parts, strict=True))
        body.append(f"<g><title>{escape(name)}: {escape(tip)}</title>")
        body.append(_text(left - 8, y + 15, _clip(name, 26), anchor="end"))
        for j, value in enumerate(parts):
            w = (width - left - right) * value / top
            body.append(
                f'<rect x="{x:.1f}" y="{y + 3:.1f}" width="{w:.1f}" height="{row_h - 8}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"/>'
            )
            x += w
        body.append(_text(x + 6, y + 15, fmt(total), color=MUTED) + "</g>")
    return _svg(width, 32 + len(rows) * row_h, body, label)


def _legend(x: float, y: float, names: Sequence[str], colors: Sequence[str] = PALETTE) -> str:
    out = []
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" rx="2" '
            f'fill="{colors[i % len(colors)]}"/>' + _text(x + 14, y, name, color=MUTED)
        )
        x += 22 + 7 * len(name)
    return "".join(out)


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    exp = math.floor(math.log10(lo))
    while 10**exp <= hi * 1.0001:
        if 10**exp >= lo * 0.9999:
            ticks.append(10.0**exp)
        exp += 1
    return ticks


def _tick_ms(value: float) -> str:
    if value < 1:
        return f"{value:g} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:g} s"


def percentiles(
    rows: Sequence[tuple[str, float, float, float, float]],
    *,
    label: str,
    fmt: Fmt,
    width: float = 520,
) -> str:
    """Per row (label, p50, p95, p99, max) on a log scale: a box p50..p95, a line to p99."""
    values = [v for _, *vs in rows for v in vs if v > 0]
    if not values:
        return empty(width, "nothing to show")
    left, right, row_h = 170.0, 24.0, 24.0
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    span = math.log10(hi) - math.log10(lo)

    def x(v: float) -> float:
        v = max(v, lo)
        return left + (width - left - right) * (math.log10(v) - math.log10(lo)) / span

    height = 40 + len(rows) * row_h
    body = []
    for t in _log_ticks(lo, hi):
        body.append(
            f'<line x1="{x(t):.1f}" y1="22" x2="{x(t):.1f}" y2="{height - 14:.1f}" '
            f'stroke="{GRID}"/>'
            + _text(x(t), height - 2, _tick_ms(t), anchor="middle", color=MUTED)
        )
    body.append(_legend(left, 12, ["p50", "p50 to p95", "p95 to p99", "max"],
                        [INK, PALETTE[0], "#9aa7f5", MUTED]))
    for i, (name, p50, p95, p99, mx) in enumerate(rows):
        y = 26 + i * row_h
        mid = y + row_h / 2 - 1
        tip = f"p50 {fmt(p50)}, p95 {fmt(p95)}, p99 {fmt(p99)}, max {fmt(mx)}"
        body.append(
            f"<g><title>{escape(name)}: {escape(tip)}</title>"
            + _text(left - 8, mid + 4, _clip(name, 26), anchor="end")
            + f'<line x1="{x(p95):.1f}" y1="{mid:.1f}" x2="{x(p99):.1f}" y2="{mid:.1f}" '
            f'stroke="#9aa7f5" stroke-width="3"/>'
            + f'<rect x="{x(p50):.1f}" y="{mid - 6:.1f}" width="{max(2.0, x(p95) - x(p50)):.1f}" '
            f'height="12" rx="2" fill="{PALETTE[0]}"/>'
            + f'<line x1="{x(p50):.1f}" y1="{mid - 8:.1f}" x2="{x(p50):.1f}" y2="{mid + 8:.1f}" '
            f'stroke="{INK}" stroke-width="2"/>'
            + f'<circle cx="{x(mx):.1f}" cy="{mid:.1f}" r="3" fill="{MUTED}"/>'
            + "</g>"
        )
    return _svg(width, height, body, label)


def _time_label(t: datetime, span_seconds: float) -> str:
    if span_seconds <= 2 * 86400:
        return t.strftime("%H:%M")
    return t.strftime("%m-%d")


def lines(
    times: Sequence[datetime],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    label: str,
    fmt: Fmt,
    width: float = 520,
    height: float = 200,
) -> str:
    """Line chart over time: one line per (name, values), zero-based y axis, a legend."""
    if len(times) < 1 or not series:
        return empty(width, "nothing to show")
    left, right, top, bottom = 64.0, 16.0, 26.0, 26.0
    ymax = nice_max(max((v for _, vs in series for v in vs), default=0.0))
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = max(t1 - t0, 1.0)

    def px(t: datetime) -> float:
        if len(times) == 1:
            return left + (width - left - right) / 2
        return left + (width - left - right) * (t.timestamp() - t0) / span

    def py(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / ymax)

    body = [_legend(left, 14, [name for name, _ in series])]
    for i in range(5):
        v = ymax * i / 4
        body.append(
            f'<line x1="{left}" y1="{py(v):.1f}" x2="{width - right}" y2="{py(v):.1f}" '
            f'stroke="{GRID}"/>'
            + _text(left - 6, py(v) + 4, fmt(v) if i else "0", anchor="end", color=MUTED)
        )
    ticks = min(6, len(times))
    for i in range(ticks):
        t = times[round(i * (len(times) - 1) / max(ticks - 1, 1))]
        body.append(_text(px(t), height - 8, _time_label(t, span), anchor="middle", color=MUTED))
    for j, (name, values) in enumerate(series):
        color = PALETTE[j % len(PALETTE)]
        points = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in zip(times, values, strict=True))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2" '
            f'stroke-linejoin="round"><title>{escape(name)}</title></polyline>'
        )
        if len(times) <= 60:
            body.extend(
                f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(name)} {t:%Y-%m-%d %H:%M}: {escape(fmt(v))}</title></circle>"
                for t, v in zip(times, values, strict=True)
            )
    return _svg(width, height, body, label)
