"""Where the money and the time go, and what to do about it.

::

    from llamonitor.analysis import analyze, session_report, render_html

    report = analyze("./monitoring_data", since=datetime(2024, 5, 1))
    report.cost.by_model[0]            # CostGroup(key='gpt-4o', cost_usd=12.3, ...)
    report.latency.bottlenecks[0]      # the operation holding most of the critical path
    for s in report.suggestions:       # with the figures and the saving of each
        print(s.title, s.saving_usd, s.saving_ms)
    Path("report.html").write_text(render_html(report))

Every aggregate is written once in DuckDB SQL over the store's rows, so the
same report runs on every store. The critical path and retries are defined
in :mod:`llamonitor.analysis._critical`, the suggestions in
:mod:`llamonitor.analysis._suggest`.
"""

from llamonitor.analysis._export import csv_rows, to_csv, write_csv
from llamonitor.analysis._html import render_html
from llamonitor.analysis._models import (
    Bottleneck,
    CostBreakdown,
    CostGroup,
    CriticalPath,
    ErrorPattern,
    ErrorTypeCount,
    LatencyBreakdown,
    LatencyGroup,
    OperationErrors,
    Overview,
    QualityBreakdown,
    Report,
    RetryStats,
    Scope,
    SessionReport,
    SessionSummary,
    Suggestion,
    TokenBreakdown,
    TokenGroup,
    TraceSummary,
    TrendPoint,
    Trends,
)
from llamonitor.analysis._report import analyze, auto_bucket, session_report

__all__ = [
    "Bottleneck",
    "CostBreakdown",
    "CostGroup",
    "CriticalPath",
    "ErrorPattern",
    "ErrorTypeCount",
    "LatencyBreakdown",
    "LatencyGroup",
    "OperationErrors",
    "Overview",
    "QualityBreakdown",
    "Report",
    "RetryStats",
    "Scope",
    "SessionReport",
    "SessionSummary",
    "Suggestion",
    "TokenBreakdown",
    "TokenGroup",
    "TraceSummary",
    "TrendPoint",
    "Trends",
    "analyze",
    "auto_bucket",
    "csv_rows",
    "render_html",
    "session_report",
    "to_csv",
    "write_csv",
]
