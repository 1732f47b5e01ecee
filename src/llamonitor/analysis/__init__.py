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
:mod:`llamonitor.analysis._suggest`; the agents' coordination graph
(``agent_graph``: handoffs, loops, chains) in :mod:`llamonitor.analysis._agents_walk`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.analysis._agents import agent_graph
    from llamonitor.analysis._agents_model import (
        AgentChain,
        AgentEdge,
        AgentGraph,
        AgentLoop,
        AgentNode,
        ChainStep,
    )
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

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "AgentChain": "llamonitor.analysis._agents_model",
    "AgentEdge": "llamonitor.analysis._agents_model",
    "AgentGraph": "llamonitor.analysis._agents_model",
    "AgentLoop": "llamonitor.analysis._agents_model",
    "AgentNode": "llamonitor.analysis._agents_model",
    "Bottleneck": "llamonitor.analysis._models",
    "ChainStep": "llamonitor.analysis._agents_model",
    "CostBreakdown": "llamonitor.analysis._models",
    "CostGroup": "llamonitor.analysis._models",
    "CriticalPath": "llamonitor.analysis._models",
    "ErrorPattern": "llamonitor.analysis._models",
    "ErrorTypeCount": "llamonitor.analysis._models",
    "LatencyBreakdown": "llamonitor.analysis._models",
    "LatencyGroup": "llamonitor.analysis._models",
    "OperationErrors": "llamonitor.analysis._models",
    "Overview": "llamonitor.analysis._models",
    "QualityBreakdown": "llamonitor.analysis._models",
    "Report": "llamonitor.analysis._models",
    "RetryStats": "llamonitor.analysis._models",
    "Scope": "llamonitor.analysis._models",
    "SessionReport": "llamonitor.analysis._models",
    "SessionSummary": "llamonitor.analysis._models",
    "Suggestion": "llamonitor.analysis._models",
    "TokenBreakdown": "llamonitor.analysis._models",
    "TokenGroup": "llamonitor.analysis._models",
    "TraceSummary": "llamonitor.analysis._models",
    "TrendPoint": "llamonitor.analysis._models",
    "Trends": "llamonitor.analysis._models",
    "agent_graph": "llamonitor.analysis._agents",
    "analyze": "llamonitor.analysis._report",
    "auto_bucket": "llamonitor.analysis._report",
    "csv_rows": "llamonitor.analysis._export",
    "render_html": "llamonitor.analysis._html",
    "session_report": "llamonitor.analysis._report",
    "to_csv": "llamonitor.analysis._export",
    "write_csv": "llamonitor.analysis._export",
}

__all__ = [
    "AgentChain",
    "AgentEdge",
    "AgentGraph",
    "AgentLoop",
    "AgentNode",
    "Bottleneck",
    "ChainStep",
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
    "agent_graph",
    "analyze",
    "auto_bucket",
    "csv_rows",
    "render_html",
    "session_report",
    "to_csv",
    "write_csv",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
