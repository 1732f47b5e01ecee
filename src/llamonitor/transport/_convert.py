"""Batches of records (see ``llamonitor._records``) to Arrow tables."""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from llamonitor._internal import report_internal_error
from llamonitor._records import Deferred, TextMeasure, measure_text, safe_json
from llamonitor.schema._columns import COLUMN_NAMES, SCHEMA

_TEXT_COLS = ("text_char_count", "text_word_count", "text_byte_size", "text_line_count")

def _python_types(t: pa.DataType) -> Any:
    if pa.types.is_integer(t):
        return numbers.Integral
    if pa.types.is_floating(t):
        return numbers.Real
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_string(t):
        return str
    return None


# Columns a collector may set, with the Python values that fit each.
_SETTABLE: dict[str, Any] = {
    f.name: _python_types(f.type)
    for f in SCHEMA
    if _python_types(f.type) is not None
    and f.name not in ("event_id", "span_id", "trace_id", "session_id", "parent_span_id")
}


def wall_offset_ns() -> int:
    """Add to a ``perf_counter_ns`` reading to get UTC epoch nanoseconds."""
    return time.time_ns() - time.perf_counter_ns()


def _event_ids(n: int) -> list[str]:
    h = os.urandom(16 * n).hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]


def _span_columns(recs: Sequence[tuple[Any, ...]], pid: int, offset: int) -> list[list[Any]]:
    n = len(recs)
    specs, spans, t0s, t1s, errs, texts, extras = zip(*recs, strict=True)
    cols: dict[str, list[Any]] = {
        "event_id": _event_ids(n),
        "session_id": [s.session_id for s in spans],
        "trace_id": [s.trace_id for s in spans],
        "span_id": [f"{s._sid:016x}" for s in spans],
        "parent_span_id": [None if s._parent is None else f"{s._parent:016x}" for s in spans],
        "operation_name": [s.operation_name for s in specs],
        "operation_type": [s.operation_type for s in specs],
        "timestamp": [(t0 + offset) // 1000 for t0 in t0s],
        "duration_ms": [(t1 - t0) / 1e6 for t0, t1 in zip(t0s, t1s, strict=True)],
        "error": [e is not None for e in errs],
        "error_type": [None if e is None else e[0] for e in errs],
        "error_message": [None if e is None else e[1] for e in errs],
        "process_id": [pid] * n,
    }
    for name in COLUMN_NAMES:
        if name not in cols:
            cols[name] = [None] * n

    tc = [cols[c] for c in _TEXT_COLS]
    custom = cols["custom_attributes"]
    for i in range(n):
        spec = specs[i]
        text = texts[i]
        if text is not None:
            m = measure_text(text) if text.__class__ is str else text
            keep = spec.text_metrics
            for j in range(4):
                if keep is None or keep[j]:
                    tc[j][i] = m[j]
        extra = extras[i]
        attrs = spans[i]._attrs
        if extra is None and not attrs:
            custom[i] = spec.custom_json
            continue
        merged = dict(spec.custom_attributes) if spec.custom_attributes else {}
        if extra is not None:
            _apply_extra(extra, cols, i, merged)
        if attrs:
            merged.update(attrs)
        custom[i] = safe_json(merged)
    return [cols[name] for name in COLUMN_NAMES]


def _apply_extra(
    extra: dict[str, Any], cols: dict[str, list[Any]], i: int, merged: dict[str, Any]
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
            if out:
                items.extend(out.items())
        elif key == "custom_attributes" and isinstance(value, dict):
            merged.update(value)
        elif key == "text" and isinstance(value, (str, TextMeasure)):
            m = measure_text(value) if isinstance(value, str) else value
            for j, c in enumerate(_TEXT_COLS):
                cols[c][i] = m[j]
        elif key in _SETTABLE:
            if isinstance(value, _SETTABLE[key]) and not (
                isinstance(value, bool) and _SETTABLE[key] is not bool
            ):
                cols[key][i] = value
            else:  # keep the value, but not in a column it does not fit
                merged[key] = value
                report_internal_error(
                    f"collector_value:{key}",
                    TypeError(f"{key}={value!r} does not fit its column; kept as an attribute"),
                )
        else:
            merged[key] = value  # unknown metric names are kept, not dropped


def _table(columns: list[list[Any]]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )


def records_to_table(records: Sequence[tuple[Any, ...]], pid: int) -> tuple[pa.Table | None, int]:
    """Convert a batch; returns the table and how many records were invalid.

    A record that cannot be converted is dropped (and reported) alone: the
    rest of its batch is kept.
    """
    offset = wall_offset_ns()
    spans = [r for r in records if r[0] is not None]
    rows = [r[1] for r in records if r[0] is None]
    tables: list[pa.Table] = []
    invalid = 0
    if spans:
        try:
            tables.append(_table(_span_columns(spans, pid, offset)))
        except Exception:
            for rec in spans:
                try:
                    tables.append(_table(_span_columns([rec], pid, offset)))
                except Exception as exc:
                    invalid += 1
                    report_internal_error("invalid_event", exc)
    if rows:
        try:
            tables.append(pa.Table.from_pylist(rows, schema=SCHEMA))
        except Exception:
            for row in rows:
                try:
                    tables.append(pa.Table.from_pylist([row], schema=SCHEMA))
                except Exception as exc:
                    invalid += 1
                    report_internal_error("invalid_event", exc)
    if not tables:
        return None, invalid
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table, invalid
