"""Batches of records (see ``llamonitor._records``) to Arrow tables."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from llamonitor._internal import report_internal_error
from llamonitor._records import (
    CHUNK_CHARS,
    Deferred,
    StreamFacts,
    TextMeasure,
    measure_text,
    safe_json,
    words_and_bytes,
)
from llamonitor.llm import _settings as llm_settings
from llamonitor.llm.pricing import fill_costs
from llamonitor.schema import _extensions
from llamonitor.schema._columns import (
    ATTRIBUTE_COLUMNS,
    COLUMN_NAMES,
    GEN_AI_ATTRIBUTES,
    SETTABLE,
    column_value,
)

_TEXT_COLS = ("text_char_count", "text_word_count", "text_byte_size", "text_line_count")

# Extra/attribute keys that name a column: the column itself or its OTel GenAI name.
_COLUMN_OF: dict[str, str] = {
    **{name: name for name in SETTABLE},
    **{k: v for k, v in GEN_AI_ATTRIBUTES.items() if v in SETTABLE},
}


OFFSET_REFRESH_SECONDS = 60.0
_offset = [0, -1e18]  # (offset ns, monotonic time it was read)


def wall_offset_ns() -> int:
    """Add to a ``perf_counter_ns`` reading to get UTC epoch nanoseconds.

    Read once a minute, and kept unless the wall clock moved by more than a
    millisecond: re-reading per batch would let the jitter between the two
    clock reads reorder spans of consecutive batches.
    """
    now = time.monotonic()
    if now - _offset[1] >= OFFSET_REFRESH_SECONDS:
        fresh = time.time_ns() - time.perf_counter_ns()
        if abs(fresh - _offset[0]) > 1_000_000:
            _offset[0] = fresh
        _offset[1] = now
    return int(_offset[0])


def _event_ids(n: int) -> list[str]:
    h = os.urandom(16 * n).hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]


def _text_columns(texts: Sequence[Any], specs: Sequence[Any]) -> list[list[Any]]:
    """Char, word, byte and line counts of the texts of a batch (``None`` where none).

    Words are exactly ``len(text.split())`` (see ``_records.measure_text``).
    """
    n = len(texts)
    chars: list[Any] = [None] * n
    words: list[Any] = [None] * n
    sizes: list[Any] = [None] * n
    lines: list[Any] = [None] * n
    for i, t in enumerate(texts):
        if t is None:
            continue
        if t.__class__ is not str:  # measured on the hot path (long text)
            chars[i], words[i], sizes[i], lines[i] = t
            continue
        c = len(t)
        chars[i] = c
        if c == 0:
            words[i] = sizes[i] = lines[i] = 0
            continue
        lines[i] = t.count("\n") + (t[-1] != "\n")
        words[i], sizes[i] = words_and_bytes(t) if c <= CHUNK_CHARS else measure_text(t)[1:3]
    columns = [chars, words, sizes, lines]
    for i, spec in enumerate(specs):
        keep = spec.text_metrics
        if keep is not None and texts[i] is not None:
            for j in range(4):
                if not keep[j]:
                    columns[j][i] = None
    return columns


def _hex64(value: int | None) -> str | None:
    return None if value is None else value.to_bytes(8, "big").hex()


def _span_columns(recs: Sequence[tuple[Any, ...]], pid: int, offset: int) -> dict[str, Any]:
    """Columns (lists or Arrow arrays, by name; see :func:`_table`) of span records."""
    n = len(recs)
    specs, spans, t0s, t1s, errs, texts, extras = zip(*recs, strict=True)
    cols: dict[str, Any] = {
        "event_id": _event_ids(n),
        "session_id": [s.session_id for s in spans],
        "trace_id": [s.trace_id for s in spans],
        "span_id": [s._sid.to_bytes(8, "big").hex() for s in spans],
        "parent_span_id": [_hex64(s._parent) for s in spans],
        "operation_name": [s.operation_name for s in specs],
        "operation_type": [s.operation_type for s in specs],
        "timestamp": [(t0 + offset) // 1000 for t0 in t0s],
        "duration_ms": [(t1 - t0) / 1e6 for t0, t1 in zip(t0s, t1s, strict=True)],
        "process_id": pa.repeat(pa.scalar(pid, pa.int64()), n),
        "custom_attributes": [s.custom_json for s in specs],
    }
    if any(e is not None for e in errs):
        # TRUE or NULL (schema version 3): the seed's "error IS NOT NULL" counts failures.
        cols["error"] = [None if e is None else True for e in errs]
        cols["error_type"] = [None if e is None else e[0] for e in errs]
        cols["error_message"] = [None if e is None else e[1] for e in errs]

    if any(t is not None for t in texts):
        cols.update(zip(_TEXT_COLS, _text_columns(texts, specs), strict=True))

    custom = cols["custom_attributes"]
    for i in range(n):
        extra = extras[i]
        if extra.__class__ is StreamFacts:
            _column(cols, "stream_item_count", n)[i] = extra.items
            _column(cols, "time_to_first_token_ms", n)[i] = extra.time_to_first_token_ms
            extra = extra.more
        attrs = spans[i]._attrs
        spec = specs[i]
        if spec.columns is not None:  # custom_attributes={"model": ...}: also a column
            for key, value in spec.columns.items():
                _column(cols, key, n)[i] = value
        if extra is None and not attrs:
            continue
        merged = dict(spec.custom_attributes) if spec.custom_attributes else {}
        if extra is not None:
            _apply_extra(extra, cols, n, i, merged)
        if attrs:
            merged.update(attrs)
            if not ATTRIBUTE_COLUMNS.keys().isdisjoint(attrs):
                # span.set_attribute("gen_ai.usage.input_tokens", 12) fills the column too
                _attribute_columns(attrs, cols, n, i)
        custom[i] = safe_json(merged)
    _llm_columns(cols, n)
    return cols


def _attribute_columns(attrs: dict[str, Any], cols: dict[str, Any], n: int, i: int) -> None:
    for key, value in attrs.items():
        name = ATTRIBUTE_COLUMNS.get(key)
        if name is not None:
            value = column_value(name, value)
            if value is not None:
                _column(cols, name, n)[i] = value


def _llm_columns(cols: dict[str, Any], n: int) -> None:
    """Project name, total tokens and cost of the rows of a batch."""
    settings = llm_settings.SETTINGS
    if settings.project_name is not None:
        project = _column(cols, "project_name", n)
        for i in range(n):
            if project[i] is None:
                project[i] = settings.project_name
    ins, outs = cols.get("input_tokens"), cols.get("output_tokens")
    if ins is None and outs is None:
        return
    ins = ins or [None] * n
    outs = outs or [None] * n
    total = _column(cols, "total_tokens", n)
    for i in range(n):
        if total[i] is None and (ins[i] is not None or outs[i] is not None):
            total[i] = (ins[i] or 0) + (outs[i] or 0)
    fill_costs(cols, n, _column)


def _column(cols: dict[str, Any], key: str, n: int) -> list[Any]:
    """``cols[key]`` as a mutable list (created empty, or from an Arrow array)."""
    col = cols.get(key)
    if col is None:
        col = cols[key] = [None] * n
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
            if out:
                items.extend(out.items())
        elif key == "custom_attributes" and isinstance(value, dict):
            merged.update(value)
        elif key.endswith("_metrics") and _metric_group(key, value, cols, n, i, merged):
            pass  # {"audio_metrics": AudioMetrics(...)}: a metric group's columns
        elif key == "text" and isinstance(value, (str, TextMeasure)):
            m = measure_text(value) if isinstance(value, str) else value
            for j, c in enumerate(_TEXT_COLS):
                _column(cols, c, n)[i] = m[j]
        elif key in _COLUMN_OF:
            key = _COLUMN_OF[key]
            empty_list = isinstance(value, (list, tuple)) and not value
            if value is None or (key == "finish_reason" and empty_list):  # OTel: an array
                continue
            fitted = column_value(key, value)
            if fitted is not None:
                _column(cols, key, n)[i] = fitted
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
    for column, v in columns.items():
        _column(cols, column, n)[i] = v
    merged.update(leftovers)
    return True


def _table(cols: dict[str, Any]) -> pa.Table:
    """The batch's table. Its schema is chosen here, once: the base columns,
    then the extension columns (metric groups) the batch has values in."""
    n = len(cols["event_id"])
    schema = _extensions.batch_schema(name for name in cols if name not in _BASE_NAMES)
    arrays = []
    for field in schema:
        col = cols.get(field.name)
        if col is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(col, list):
            arrays.append(pa.array(col, type=field.type))
        else:
            arrays.append(col if col.type == field.type else col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


_BASE_NAMES = frozenset(COLUMN_NAMES)


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
            tables.append(_extensions.rows_table(rows))
        except Exception:
            for row in rows:
                try:
                    tables.append(_extensions.rows_table([row]))
                except Exception as exc:
                    invalid += 1
                    report_internal_error("invalid_event", exc)
    if not tables:
        return None, invalid
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    return table, invalid
