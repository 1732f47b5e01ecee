"""What only some span records carry, applied to their rows alone.

Collector output (and its ``Deferred`` work), span attributes and stream facts
fill single rows of a batch's columns through row lists (:func:`column`);
``llamonitor.transport._convert`` builds the columns every record has and
calls :func:`row_facts` for the rest.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import numpy as np

from llamonitor._internal import report_internal_error
from llamonitor._records import Deferred, StreamFacts, TextMeasure, measure_text, safe_json
from llamonitor.schema import _extensions
from llamonitor.schema._columns import (
    ATTRIBUTE_COLUMNS,
    GEN_AI_ATTRIBUTES,
    SETTABLE,
    column_value,
)

TEXT_COLS = ("text_char_count", "text_word_count", "text_byte_size", "text_line_count")

# Extra/attribute keys that name a column: the column itself or its OTel GenAI name.
_COLUMN_OF: dict[str, str] = {
    **{name: name for name in SETTABLE},
    **{k: v for k, v in GEN_AI_ATTRIBUTES.items() if v in SETTABLE},
}

_attrs = attrgetter("_attrs")


def row_facts(
    specs: tuple[Any, ...],
    spans: tuple[Any, ...],
    extras: tuple[Any, ...],
    cols: dict[str, Any],
    n: int,
) -> None:
    """Collector output, stream facts and span attributes, row by row, for the
    rows that have any."""
    attrs = list(map(_attrs, spans))
    if extras.count(None) != n:
        extras = _stream_columns(extras, cols)
    if extras.count(None) == n and attrs.count(None) == n:
        return
    for i in range(n):
        extra = extras[i]
        span_attrs = attrs[i]
        if extra is None and not span_attrs:
            continue
        spec = specs[i]
        merged = dict(spec.custom_attributes) if spec.custom_attributes else {}
        if extra is not None:
            _apply_extra(extra, cols, n, i, merged)
        if span_attrs:
            merged.update(span_attrs)
            if not ATTRIBUTE_COLUMNS.keys().isdisjoint(span_attrs):
                # span.set_attribute("gen_ai.usage.input_tokens", 12) fills the column too
                _attribute_columns(span_attrs, cols, n, i)
        column(cols, "custom_attributes", n)[i] = safe_json(merged)


def _stream_columns(extras: tuple[Any, ...], cols: dict[str, Any]) -> tuple[Any, ...]:
    """The stream columns from the ``StreamFacts`` of a batch; returns the extras
    with each ``StreamFacts`` replaced by what collectors added to it."""
    facts = StreamFacts
    if not any(e.__class__ is facts for e in extras):
        return extras
    cols["stream_item_count"] = [e.items if e.__class__ is facts else None for e in extras]
    cols["time_to_first_token_ms"] = [
        e.time_to_first_token_ms if e.__class__ is facts else None for e in extras
    ]
    return tuple(e.more if e.__class__ is facts else e for e in extras)


def _attribute_columns(attrs: dict[str, Any], cols: dict[str, Any], n: int, i: int) -> None:
    for key, value in attrs.items():
        name = ATTRIBUTE_COLUMNS.get(key)
        if name is not None:
            value = column_value(name, value)
            if value is not None:
                column(cols, name, n)[i] = value


def column(cols: dict[str, Any], key: str, n: int) -> list[Any]:
    """``cols[key]`` as a row list, to set single rows (created empty, or from
    the column's array)."""
    col = cols.get(key)
    if col is None:
        col = cols[key] = [None] * n
    elif isinstance(col, np.ndarray):
        col = cols[key] = col.tolist()
    elif not isinstance(col, list):
        col = cols[key] = col.to_pylist()
    return col


def _apply_extra(
    extra: dict[str, Any], cols: dict[str, Any], n: int, i: int, merged: dict[str, Any]
) -> None:
    items = list(extra.items())
    while items:
        key, value = items.pop()
        if isinstance(value, Deferred):
            try:
                out = value()
            except Exception as exc:
                report_internal_error(f"collector:{key}", exc)
                continue
            if isinstance(out, dict):
                items.extend(out.items())
            elif out:  # a collector's bug: its value is lost, not the span
                report_internal_error(
                    f"collector:{key}",
                    TypeError(f"Deferred work returned {type(out).__name__}, not a dict"),
                )
        elif key == "custom_attributes" and isinstance(value, dict):
            merged.update(value)
        elif key.endswith("_metrics") and _metric_group(key, value, cols, n, i, merged):
            pass  # {"audio_metrics": AudioMetrics(...)}: a metric group's columns
        elif key == "text" and isinstance(value, (str, TextMeasure)):
            m = measure_text(value) if isinstance(value, str) else value
            for j, c in enumerate(TEXT_COLS):
                column(cols, c, n)[i] = m[j]
        elif key in _COLUMN_OF:
            key = _COLUMN_OF[key]
            empty_list = isinstance(value, (list, tuple)) and not value
            if value is None or (key == "finish_reason" and empty_list):  # OTel: an array
                continue
            fitted = column_value(key, value)
            if fitted is not None:
                column(cols, key, n)[i] = fitted
            else:  # keep the value, but not in a column it does not fit
                merged[key] = value
                report_internal_error(
                    f"collector_value:{key}",
                    TypeError(f"{key}={value!r} does not fit its column; kept as an attribute"),
                )
        else:
            merged[key] = value  # unknown metric names are kept, not dropped


def _metric_group(
    key: str, value: Any, cols: dict[str, Any], n: int, i: int, merged: dict[str, Any]
) -> bool:
    """Fill the columns of a ``<prefix>_metrics`` value (a pydantic model, or a
    dict of a registered group); False if ``key`` names no metric group."""
    try:
        g = _extensions.group_of(key, value)
    except (TypeError, ValueError) as exc:  # a model that cannot be registered
        report_internal_error(f"collector_value:{key}", exc)
        merged[key] = value
        return True
    if g is None:
        return False
    columns, leftovers = _extensions.flatten(g, value)
    for name, v in columns.items():
        column(cols, name, n)[i] = v
    merged.update(leftovers)
    return True
