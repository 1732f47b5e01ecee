"""Numbers for people, in one place: dollars, durations, token counts,
percentages, sizes; and floats for machines (JSON, CSV) without binary noise.

Every view of a figure -- ``llamonitor stats``, the report in the terminal,
its HTML page, the suggestions' sentences -- formats it with these
functions, so the same cost reads the same everywhere.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

USD_SIGNIFICANT_DIGITS = 3
"""A cost under $1 keeps this many significant digits: LLM calls cost
fractions of a cent, and a suggestion compares two such costs."""

USD_MAX_DECIMALS = 8
"""Costs smaller than half of the last of these decimals read ``<$0.00000001``."""

FLOAT_SIGNIFICANT_DIGITS = 12
"""Floats in JSON and CSV are rounded to this many significant digits: sums of
doubles carry noise in the last of their ~16 (``0.0013800000000000002``)."""


def usd(value: float | None) -> str:
    """A cost: ``$1,234.50``, ``$12.35``, ``$0.0145``, ``$0.000318``, ``$0``, ``-``.

    From $1 up, cents; below, :data:`USD_SIGNIFICANT_DIGITS` significant
    digits, so that a cost never rounds away (``$0.0023`` is not ``$0.00``)
    and two small costs can be compared.
    """
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "$0"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v < 1:
        magnitude = math.floor(math.log10(v))
        decimals = USD_SIGNIFICANT_DIGITS - 1 - magnitude
        if float(f"{v:.{decimals}f}") >= 10.0 ** (magnitude + 1):
            decimals -= 1  # 0.009996 rounds to 0.0100, not 0.01000
        if decimals > USD_MAX_DECIMALS:
            return f"{sign}<${10.0 ** -USD_MAX_DECIMALS:.{USD_MAX_DECIMALS}f}"
        text = f"{v:.{decimals}f}"
        if float(text) < 1:  # else it rounded up to $1.00: cents below
            return f"{sign}${text}"
    return f"{sign}${v:,.2f}"


def _small_ms(value: float) -> str:
    """A duration under 1 ms with two significant digits (``0.42``, ``0.0031``)."""
    if value <= 0:
        return "0"
    decimals = max(2, 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}" if decimals <= 6 else "<0.000001"


def millis(value: float | None) -> str:
    """Milliseconds as a bare number for a column headed ms: ``0.042``,
    ``4.20``, ``123.4``, ``1,234``, ``-``."""
    if value is None:
        return "-"
    if value < 1:
        return _small_ms(value)
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def duration(value: float | None) -> str:
    """A span's duration, precisely: ``0.042 ms``, ``123.4 ms``, ``1.23 s``, ``2m 03s``."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{millis(value)} ms"
    if value < 60_000:
        return f"{value / 1000:.2f} s"
    minutes, seconds = divmod(value / 1000, 60)
    return f"{int(minutes)}m {seconds:02.0f}s"


def ms(value: float | None) -> str:
    """An aggregate duration, briefly: ``0.042 ms``, ``4.20 ms``, ``123 ms``,
    ``4.2 s``, ``3.1 min``, ``2.5 h``, ``-``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{_small_ms(value)} ms"
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


def tokens(value: int | None) -> str:
    """A token count in full: ``12,345``, ``-``."""
    return "-" if value is None else f"{value:,}"


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


def size(n: int | None) -> str:
    """Bytes as ``512 B``, ``12.3 KB``, ``4.5 MB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def timestamp(ts: datetime | None) -> str:
    """``2024-05-01 12:00:00.123`` (the caller says UTC), ``-``."""
    return "-" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def label(key: str | None) -> str:
    """A group key; ``None`` is the group of spans without a value."""
    return "(none)" if key is None else str(key)


def clean_float(value: float) -> float:
    """``value`` rounded to :data:`FLOAT_SIGNIFICANT_DIGITS` significant digits
    (``0.0013800000000000002`` -> ``0.00138``); NaN and infinities as they are."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{FLOAT_SIGNIFICANT_DIGITS}g}")


def clean_floats(obj: Any) -> Any:
    """``obj`` (JSON-ready data: dicts, lists, tuples, scalars) with every float
    passed through :func:`clean_float`."""
    if isinstance(obj, float):
        return clean_float(obj)
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    return obj
