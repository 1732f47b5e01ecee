"""Numbers for people: dollars, durations, token counts, percentages."""

from __future__ import annotations


def usd(value: float | None) -> str:
    """``$1,234``, ``$12.34``, ``$0.0123``, ``-``."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 0.01 or value == 0:
        return f"${value:,.2f}"
    if abs(value) < 0.0001:
        return "<$0.0001"
    return f"${value:.4f}"


def ms(value: float | None) -> str:
    """``0.42 ms``, ``123 ms``, ``4.2 s``, ``3.1 min``, ``2.5 h``, ``-``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    if value < 3_600_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:,.1f} h"


def count(value: float | None) -> str:
    """``950``, ``12.3k``, ``4.56M``, ``-``."""
    if value is None:
        return "-"
    if abs(value) < 10_000:
        return f"{value:,.0f}"
    if abs(value) < 1_000_000:
        return f"{value / 1000:,.1f}k"
    return f"{value / 1_000_000:,.2f}M"


def pct(value: float | None) -> str:
    """A fraction as ``12%``, ``4.2%``, ``0.05%``."""
    if value is None:
        return "-"
    p = value * 100
    if p == 0 or p >= 10:
        return f"{p:.0f}%"
    if p >= 1:
        return f"{p:.1f}%"
    return f"{p:.2f}%"


def label(key: str | None) -> str:
    """A group key; ``None`` is the group of spans without a value."""
    return "(none)" if key is None else str(key)
