"""The report as CSV: one long ("tidy") table for every section.

Columns: ``section, table, key, metric, value``. One row per figure:
``cost, by_model, gpt-4o, cost_usd, 12.5``. ``key`` is the group (a model,
an operation, a trace id, a bucket's ISO time...; empty for a section's
totals, ``(none)`` for the group of spans without a value). Lists and dicts
are JSON; times are ISO 8601 UTC; floats have 12 significant digits. A spreadsheet pivot or
``pandas.read_csv(...).pivot_table(index=["table", "key"], columns="metric",
values="value", aggfunc="first")`` gives back the wide tables.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from llamonitor.analysis._format import clean_float, clean_floats
from llamonitor.analysis._models import Report, SessionReport

CSV_COLUMNS = ("section", "table", "key", "metric", "value")

# (section, table, attribute path, the field that is the key)
_TABLES: tuple[tuple[str, str, str, str | None], ...] = (
    ("overview", "scope", "scope", None),
    ("overview", "overview", "overview", None),
    ("cost", "total", "cost", None),
    ("cost", "by_model", "cost.by_model", "key"),
    ("cost", "by_provider", "cost.by_provider", "key"),
    ("cost", "by_agent", "cost.by_agent", "key"),
    ("cost", "by_operation", "cost.by_operation", "key"),
    ("cost", "top_sessions", "cost.top_sessions", "session_id"),
    ("cost", "top_traces", "cost.top_traces", "trace_id"),
    ("latency", "overall", "latency.overall", None),
    ("latency", "by_operation", "latency.by_operation", "key"),
    ("latency", "by_model", "latency.by_model", "key"),
    ("latency", "by_agent", "latency.by_agent", "key"),
    ("latency", "critical_path", "latency.critical_path", None),
    ("latency", "bottlenecks", "latency.bottlenecks", "operation"),
    ("latency", "slowest_traces", "latency.slowest_traces", "trace_id"),
    ("tokens", "total", "tokens", None),
    ("tokens", "by_model", "tokens.by_model", "key"),
    ("tokens", "by_agent", "tokens.by_agent", "key"),
    ("tokens", "top_operations", "tokens.top_operations", "key"),
    ("quality", "total", "quality", None),
    ("quality", "by_error_type", "quality.by_error_type", "error_type"),
    ("quality", "by_operation", "quality.by_operation", "operation"),
    ("quality", "patterns", "quality.patterns", "pattern"),
    ("quality", "retries", "quality.retries", "operation"),
    ("trends", "points", "trends.points", "start"),
    ("suggestions", "suggestions", "suggestions", None),
)


def _value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return clean_float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(clean_floats(value), default=str, ensure_ascii=False)
    return value


def _get(report: Report, path: str) -> Any:
    obj: Any = report
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def csv_rows(report: Report) -> Iterable[tuple[str, str, str, str, Any]]:
    """The report as ``(section, table, key, metric, value)`` rows (see module doc)."""
    if isinstance(report, SessionReport):
        yield ("overview", "scope", "", "session_id", report.session_id)
    for section, table, path, key_field in _TABLES:
        obj = _get(report, path)
        items = obj if isinstance(obj, list) else [obj]
        for i, item in enumerate(items):
            if key_field is None:
                key = str(i + 1) if isinstance(obj, list) else ""
            else:
                raw = getattr(item, key_field)
                key = "(none)" if raw is None else str(_value(raw))
            for f in dataclasses.fields(item):
                value = getattr(item, f.name)
                if f.name == key_field or dataclasses.is_dataclass(value) or (
                    isinstance(value, list) and value and dataclasses.is_dataclass(value[0])
                ) or f.name in _NESTED:
                    continue
                yield (section, table, key, f.name, _value(value))


# Lists of dataclasses and sub-results, written as their own tables.
_NESTED = frozenset({
    "by_model", "by_provider", "by_agent", "by_operation", "top_sessions", "top_traces",
    "overall", "critical_path", "bottlenecks", "slowest_traces", "top_operations",
    "by_error_type", "patterns", "retries", "points",
})


def write_csv(report: Report, out: str | os.PathLike[str] | IO[str]) -> None:
    """Write :func:`csv_rows` with a header line to a path or an open text file."""
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", newline="", encoding="utf-8") as f:
            write_csv(report, f)
        return
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(report))


def to_csv(report: Report) -> str:
    """:func:`write_csv` into a string."""
    buffer = io.StringIO()
    write_csv(report, buffer)
    return buffer.getvalue()
