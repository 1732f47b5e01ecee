"""Batches of records (see ``llamonitor._records``) to Arrow tables.

A column at a time: what every span record has becomes whole arrays in a few
vectorized steps (ids, times and the decorator's facts in ``_vectors``, text
metrics in ``_measure``); what only some records carry — collector output and
its ``Deferred`` work, span attributes, stream facts, errors — is applied to
those rows alone, through row lists (:func:`column`). Which columns a table
has, and of which types, is read from the schema once per batch
(:func:`records_to_table` passes it down; :func:`_table` lays the columns out).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor import _handoff
from llamonitor._internal import report_internal_error
from llamonitor._records import StreamFacts, TextMeasure
from llamonitor.llm import _settings as llm_settings
from llamonitor.llm.pricing import fill_costs
from llamonitor.schema import _extensions
from llamonitor.schema._columns import (
    COLUMN_NAMES,
    SCHEMA,
)
from llamonitor.transport._convert_rows import TEXT_COLS, column, row_facts
from llamonitor.transport._measure import measure_texts
from llamonitor.transport._vectors import (
    BySpec,
    event_ids,
    int64s,
    parent_ids,
    span_ids,
    strings,
)

TOKEN_SOURCE_USER = "user"
"""``token_source`` of counts given by the application rather than read from a response."""

# What ``fill_costs`` reads, as row lists.
_COST_INPUTS = (
    "model",
    "response_model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "cost_source",
)

_FIELDS = [itemgetter(k) for k in range(7)]  # of a span record (see llamonitor._records)
_session = attrgetter("session_id")
_trace = attrgetter("trace_id")


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


# -- span records -------------------------------------------------------------


def _span_columns(
    recs: Sequence[tuple[Any, ...]], pid: int, offset: int, schema: pa.Schema
) -> dict[str, Any]:
    """The columns of span records: Arrow arrays, numpy arrays or row lists."""
    n = len(recs)
    _handoff.refresh_id_time()  # ids of spans started from now on begin with this time
    # A field at a time: zip(*recs) would make an iterator per record, and those
    # allocations set off garbage collections that walk every queued record.
    specs, spans, t0s, t1s, errs, texts, extras = [tuple(map(g, recs)) for g in _FIELDS]
    by_spec = BySpec(specs)
    t0 = int64s(t0s)
    cols: dict[str, Any] = {
        "event_id": event_ids(n),
        "session_id": strings(list(map(_session, spans))),
        "trace_id": strings(list(map(_trace, spans))),
        "span_id": span_ids(spans),
        "parent_span_id": parent_ids(spans),
        "timestamp": (t0 + offset) // 1000,
        "duration_ms": (int64s(t1s) - t0) / 1e6,
        "process_id": np.full(n, pid, np.int64),
    }
    _spec_columns(by_spec, cols, schema)
    _error_columns(errs, n, cols)
    if texts.count(None) != n:
        _text_columns(texts, by_spec, cols)
    row_facts(specs, spans, extras, cols, n)
    _llm_columns(cols, n)
    return cols


def _spec_columns(by_spec: BySpec, cols: dict[str, Any], schema: pa.Schema) -> None:
    """What the decorator says: its names, attributes, and the columns they fill
    (``custom_attributes={"model": ...}``)."""
    specs = by_spec.specs
    cols["operation_name"] = by_spec.column([s.operation_name for s in specs], pa.string())
    cols["operation_type"] = by_spec.column([s.operation_type for s in specs], pa.string())
    cols["custom_attributes"] = by_spec.column([s.custom_json for s in specs], pa.string())
    keys = sorted({k for s in specs if s.columns for k in s.columns})
    for key in keys:
        index = schema.get_field_index(key)
        if index >= 0:
            values = [s.columns.get(key) if s.columns else None for s in specs]
            cols[key] = by_spec.column(values, schema.field(index).type)


def _error_columns(errs: tuple[Any, ...], n: int, cols: dict[str, Any]) -> None:
    """``error``, ``error_type`` and ``error_message`` (the one place they are filled)."""
    if errs.count(None) == n:
        return  # all null
    # TRUE or NULL (schema version 3): the seed's "error IS NOT NULL" counts failures.
    cols["error"] = [None if e is None else True for e in errs]
    cols["error_type"] = [None if e is None else e[0] for e in errs]
    cols["error_message"] = [None if e is None else e[1] for e in errs]


def _text_columns(texts: tuple[Any, ...], by_spec: BySpec, cols: dict[str, Any]) -> None:
    """Char, word, byte and line counts of the texts of a batch (null where none).

    Words are exactly ``len(text.split())``. A ``TextMeasure`` was taken on
    the hot path (a long text); a ``str`` is measured here, with the whole
    batch (``_measure``).
    """
    n = len(texts)
    values: list[Any] = []
    absent = None
    if texts.count(None) == 0:
        try:  # the common case: every text is a str (a join would refuse others)
            values = list(measure_texts(list(texts)))
        except TypeError:
            pass
    if not values:
        strs = [i for i, t in enumerate(texts) if isinstance(t, str)]
        values = [np.zeros(n, np.int64) for _ in range(4)]
        absent = np.ones(n, np.bool_)
        if strs:
            rows = np.array(strs, np.intp)
            for col, got in zip(values, measure_texts([texts[i] for i in strs]), strict=True):
                col[rows] = got
            absent[rows] = False
        for i, t in enumerate(texts):
            if t is not None and not isinstance(t, str):
                measured = TextMeasure(*t)  # taken on the hot path; raises if malformed
                for j in range(4):
                    values[j][i] = measured[j]
                absent[i] = False
    specs = by_spec.specs
    for j, name in enumerate(TEXT_COLS):
        nulls = absent
        # measure_text=[...] without this metric
        drop = [k for k, s in enumerate(specs) if s.text_metrics and not s.text_metrics[j]]
        if drop:
            masked = by_spec.rows_of(drop)
            nulls = masked if nulls is None else nulls | masked
        cols[name] = pa.array(values[j], pa.int64(), mask=nulls)


def _llm_columns(cols: dict[str, Any], n: int) -> None:
    """Project name, total tokens and cost of the rows of a batch."""
    project = llm_settings.SETTINGS.project_name
    if project is not None:
        col = cols.get("project_name")
        if col is None:
            cols["project_name"] = pa.repeat(pa.scalar(project, pa.string()), n)
        elif isinstance(col, list):
            cols["project_name"] = [project if v is None else v for v in col]
        else:
            cols["project_name"] = pc.fill_null(col, project)
    if cols.get("input_tokens") is None and cols.get("output_tokens") is None:
        return
    for name in _COST_INPUTS:  # fill_costs reads row lists
        if cols.get(name) is not None:
            column(cols, name, n)
    ins = cols.get("input_tokens") or [None] * n
    outs = cols.get("output_tokens") or [None] * n
    total = column(cols, "total_tokens", n)
    source: list[Any] | None = None
    for i in range(n):
        if ins[i] is not None or outs[i] is not None:
            if total[i] is None:
                total[i] = (ins[i] or 0) + (outs[i] or 0)
            if source is None:
                source = column(cols, "token_source", n)
            if source[i] is None:
                # Counts the application set itself (gen_ai.usage.* attributes,
                # collector values, custom_attributes): say where they come from.
                source[i] = TOKEN_SOURCE_USER
    fill_costs(cols, n, column)


# -- tables -------------------------------------------------------------------


_NULLS: dict[pa.DataType, pa.Array] = {}


def _nulls(n: int, typ: pa.DataType) -> pa.Array:
    """An all-null column: a slice of one array per type, shared by every table
    (most columns of most spans are null; each would hold 8 bytes a row)."""
    nulls = _NULLS.get(typ)
    if nulls is None or len(nulls) < n:
        nulls = _NULLS[typ] = pa.nulls(max(n, 1024), typ)
    return nulls.slice(0, n)


def _table(cols: dict[str, Any], n: int) -> pa.Table:
    """The batch's table. Its schema is chosen here, once: the base columns,
    then the extension columns (metric groups) the batch has values in; a
    column without values is all null."""
    schema = _extensions.batch_schema(name for name in cols if name not in _BASE_NAMES)
    arrays = []
    for field in schema:
        col = cols.get(field.name)
        if col is None:
            arrays.append(_nulls(n, field.type))
        elif isinstance(col, pa.Array):
            arrays.append(col if col.type == field.type else col.cast(field.type))
        else:  # a row list or a numpy array
            arrays.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


_BASE_NAMES = frozenset(COLUMN_NAMES)


def records_to_table(records: Sequence[tuple[Any, ...]], pid: int) -> tuple[pa.Table | None, int]:
    """Convert a batch; returns the table and how many records were invalid.

    A record that cannot be converted is dropped (and reported) alone: the
    rest of its batch is kept.
    """
    schema = SCHEMA  # the base columns and their types, read once per batch (see _table)
    offset = wall_offset_ns()
    rows = [r[1] for r in records if r[0] is None]  # MetricEvent rows (writer.record)
    spans = [r for r in records if r[0] is not None] if rows else records
    tables: list[pa.Table] = []
    invalid = 0
    if rows and any(row.__class__ is pa.Table for row in rows):
        # Rows of ready tables (writer.record_table): slices, no conversion.
        ready = [r for r in records if r[0] is None and r[1].__class__ is pa.Table]
        tables.extend(_table_runs(ready))
        rows = [row for row in rows if row.__class__ is not pa.Table]
    if spans:
        try:
            tables.append(_table(_span_columns(spans, pid, offset, schema), len(spans)))
        except Exception:
            for rec in spans:
                try:
                    tables.append(_table(_span_columns([rec], pid, offset, schema), 1))
                except Exception as exc:
                    invalid += 1
                    report_internal_error("invalid_event", exc)
    if rows:
        _price_rows(rows)
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


def _table_runs(records: list[tuple[Any, ...]]) -> list[pa.Table]:
    """The slices of the tables that runs of table row records name (a record
    ``(None, table, index, ...)`` is row ``index`` of ``table``)."""
    out: list[pa.Table] = []
    table: Any = None
    start = end = 0
    for rec in records:
        t, i = rec[1], rec[2]
        if t is table and i == end:
            end += 1
            continue
        if table is not None:
            out.append(table.slice(start, end - start))
        table, start, end = t, i, i + 1
    if table is not None:
        out.append(table.slice(start, end - start))
    return out


def _price_rows(rows: list[dict[str, Any]]) -> None:
    """Price the rows that have tokens and a model but no cost (an ingested OTLP
    span, a recorded ``MetricEvent``), as span records are priced."""
    todo = [
        r
        for r in rows
        if r.get("cost_usd") is None
        and (r.get("input_tokens") is not None or r.get("output_tokens") is not None)
        and (r.get("model") or r.get("response_model"))
    ]
    if not todo:
        return
    n = len(todo)
    cols: dict[str, Any] = {name: [r.get(name) for r in todo] for name in _COST_INPUTS}
    try:
        fill_costs(cols, n, column)
    except Exception as exc:  # the rows are kept unpriced
        report_internal_error("pricing", exc)
        return
    for name in _COST_OUTPUTS:
        col = cols.get(name)
        if col is not None:
            for row, value in zip(todo, col, strict=True):
                if value is not None:
                    row[name] = value


_COST_OUTPUTS = ("input_cost_usd", "output_cost_usd", "cost_usd", "cost_source")


class _Stub:
    """Stands in for a decorator's spec and a span in :func:`warm_up`."""

    def __init__(self, **facts: Any) -> None:
        self.__dict__.update(facts)


def warm_up() -> None:
    """Convert a few made-up records, on the thread that starts monitoring.

    The first conversion imports what pyarrow and numpy load lazily (pyarrow
    looks for pandas, ``mask=`` imports ``numpy.ma``...), each under an import
    lock. Done here, before the worker exists: on the worker, a ``fork()``
    meanwhile would leave the child a lock held for good, and its worker stuck.
    """
    spec = _Stub(
        operation_name="warm_up",
        operation_type="tool",
        custom_attributes={"model": "m"},
        custom_json='{"model": "m"}',
        columns={"model": "m"},
        text_metrics=(True, False, True, True),
    )
    root = _Stub(session_id="s", trace_id="t", _sid=1, _parent=None, _attrs={"k": 1})
    child = _Stub(session_id="s", trace_id="t", _sid=2, _parent=1, _attrs=None)
    records = [
        (spec, root, 0, 1, None, "a b\n", None),
        (spec, child, 0, 1, ("ValueError", "x"), TextMeasure(1, 1, 1, 1), {"agent_name": "a"}),
        (spec, child, 0, 1, None, None, StreamFacts(1, 0.5, None)),
    ]
    for batch in (records, records[:1]):
        _table(_span_columns(batch, 0, 0, SCHEMA), len(batch))
