"""The typed results of an analysis: plain dataclasses, JSON-ready with ``to_dict()``.

Units are in the names: ``*_usd`` dollars, ``*_ms`` milliseconds, ``*_tokens``
tokens; rates and shares are fractions (0..1). A group ``key`` of ``None``
holds the spans without a value in that column (tools and agents have no
model, for example), so the groups of a breakdown always add up to its total.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from llamonitor.analysis._format import clean_float

Bucket = Literal["minute", "hour", "day"]
SuggestionKind = Literal[
    "cheaper_model", "cache", "errors", "bottleneck", "agent_loop", "agent_bottleneck",
    "context_growth",
]


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return clean_float(value)  # no binary noise: 0.00138, not 0.0013800000000000002
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Result:
    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (times as ISO 8601 strings, floats to 12
        significant digits: see :func:`~llamonitor.analysis._format.clean_float`)."""
        out: dict[str, Any] = _plain(dataclasses.asdict(self))  # type: ignore[call-overload]
        return out


# -- scope and overview ------------------------------------------------------------


@dataclass
class Scope(_Result):
    """What was analyzed: the filters (``None`` = any) and the trend bucket."""

    since: datetime | None = None
    until: datetime | None = None
    project: str | None = None
    session: str | None = None
    trace: str | None = None
    bucket: Bucket = "hour"


@dataclass
class Overview(_Result):
    """Counts over the scope. ``first``/``last`` are the starts of the first and last span.

    ``sampled_spans`` were kept at a sample rate below 1 (recorded by
    ``llamonitor.observability`` in ``custom_attributes["llamonitor.sample_rate"]``);
    ``estimated_spans`` counts each span as ``1 / rate``: the spans there were.
    """

    spans: int = 0
    sampled_spans: int = 0
    estimated_spans: float = 0.0
    traces: int = 0
    sessions: int = 0
    errors: int = 0
    llm_calls: int = 0
    first: datetime | None = None
    last: datetime | None = None


# -- cost ----------------------------------------------------------------------------


@dataclass
class CostGroup(_Result):
    """Cost of one model / provider / agent / operation.

    ``calls`` are LLM calls (spans with a model, provider, token count or
    cost); ``unpriced_calls`` the ones among them without a cost (unknown
    price: counted, never guessed).
    """

    key: str | None
    provider: str | None = None
    spans: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    input_cost_usd: float = 0.0
    output_cost_usd: float = 0.0
    unpriced_calls: int = 0
    share: float = 0.0


@dataclass
class SessionSummary(_Result):
    """One session's totals (``duration_ms``: first start to last end)."""

    session_id: str
    spans: int = 0
    traces: int = 0
    llm_calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    tokens: int = 0
    start: datetime | None = None
    duration_ms: float = 0.0


@dataclass
class TraceSummary(_Result):
    """One trace's totals (``duration_ms``: first start to last end of its spans)."""

    trace_id: str
    session_id: str | None = None
    root_operation: str | None = None
    spans: int = 0
    llm_calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    tokens: int = 0
    start: datetime | None = None
    duration_ms: float = 0.0


@dataclass
class CostBreakdown(_Result):
    """Where the money goes. Only known costs are summed; see ``unpriced_calls``."""

    total_usd: float = 0.0
    input_usd: float = 0.0
    output_usd: float = 0.0
    llm_calls: int = 0
    priced_calls: int = 0
    unpriced_calls: int = 0
    by_model: list[CostGroup] = field(default_factory=list)
    by_provider: list[CostGroup] = field(default_factory=list)
    by_agent: list[CostGroup] = field(default_factory=list)
    by_operation: list[CostGroup] = field(default_factory=list)
    top_sessions: list[SessionSummary] = field(default_factory=list)
    top_traces: list[TraceSummary] = field(default_factory=list)


# -- latency -------------------------------------------------------------------------


@dataclass
class LatencyGroup(_Result):
    """Duration statistics of one group; percentiles interpolate linearly."""

    key: str | None
    provider: str | None = None
    count: int = 0
    total_ms: float = 0.0
    avg_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass
class Bottleneck(_Result):
    """An operation's time on the critical path of the traces.

    ``critical_ms`` is the sum of its spans' critical-path self time;
    ``share`` that over the length of every critical path (the roots'
    durations). ``excess_ms`` is the time on the path its spans spent beyond
    the operation's median duration: what bringing its slow calls down to the
    median would save, at most.
    """

    operation: str
    critical_ms: float = 0.0
    share: float = 0.0
    spans_on_path: int = 0
    avg_ms_on_path: float = 0.0
    excess_ms: float = 0.0


@dataclass
class CriticalPath(_Result):
    """Totals of the critical-path analysis.

    ``roots`` counts the subtrees walked: root spans, plus spans whose parent
    is missing (``orphans``), each the root of its own subtree.
    ``total_ms`` is the sum of their durations (the critical paths' lengths).
    """

    roots: int = 0
    orphans: int = 0
    spans: int = 0
    total_ms: float = 0.0


@dataclass
class LatencyBreakdown(_Result):
    """Where the time goes: percentiles per group, and the critical-path bottlenecks."""

    overall: LatencyGroup = field(default_factory=lambda: LatencyGroup(key=None))
    by_operation: list[LatencyGroup] = field(default_factory=list)
    by_model: list[LatencyGroup] = field(default_factory=list)
    by_agent: list[LatencyGroup] = field(default_factory=list)
    critical_path: CriticalPath = field(default_factory=CriticalPath)
    bottlenecks: list[Bottleneck] = field(default_factory=list)
    slowest_traces: list[TraceSummary] = field(default_factory=list)


# -- tokens --------------------------------------------------------------------------


@dataclass
class TokenGroup(_Result):
    """Tokens of one model / agent / operation; ``calls`` counts calls with token counts."""

    key: str | None
    provider: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_per_call: float = 0.0
    output_per_call: float = 0.0


@dataclass
class TokenBreakdown(_Result):
    """Input vs output tokens. ``llm_calls_without_tokens``: calls that reported none."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    calls_with_tokens: int = 0
    llm_calls_without_tokens: int = 0
    input_per_call: float = 0.0
    output_per_call: float = 0.0
    by_model: list[TokenGroup] = field(default_factory=list)
    by_agent: list[TokenGroup] = field(default_factory=list)
    top_operations: list[TokenGroup] = field(default_factory=list)


# -- quality -------------------------------------------------------------------------


@dataclass
class ErrorTypeCount(_Result):
    """Failed spans of one exception type; ``share`` of all failed spans."""

    error_type: str
    count: int = 0
    share: float = 0.0


@dataclass
class OperationErrors(_Result):
    """Failures of one operation, by exception type (most frequent first)."""

    operation: str
    spans: int = 0
    errors: int = 0
    error_rate: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)


@dataclass
class ErrorPattern(_Result):
    """Error messages that are the same once numbers, ids, hex and quoted strings are masked."""

    pattern: str
    error_type: str
    count: int = 0
    example: str = ""
    operations: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None


@dataclass
class RetryStats(_Result):
    """Repeated attempts of one operation (see :mod:`llamonitor.analysis` for the rule)."""

    operation: str
    spans: int = 0
    extra_attempts: int = 0
    after_error: int = 0


@dataclass
class QualityBreakdown(_Result):
    """Success and failure: rates, error types, grouped messages, retries."""

    spans: int = 0
    errors: int = 0
    success_rate: float = 0.0
    error_rate: float = 0.0
    by_error_type: list[ErrorTypeCount] = field(default_factory=list)
    by_operation: list[OperationErrors] = field(default_factory=list)
    patterns: list[ErrorPattern] = field(default_factory=list)
    retries: list[RetryStats] = field(default_factory=list)
    extra_attempts: int = 0
    after_error: int = 0


# -- trends --------------------------------------------------------------------------


@dataclass
class TrendPoint(_Result):
    """One time bucket (``start`` is its beginning, UTC)."""

    start: datetime
    spans: int = 0
    errors: int = 0
    error_rate: float = 0.0
    llm_calls: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass
class Trends(_Result):
    """Each section's headline figures per time bucket, oldest first (empty buckets omitted)."""

    bucket: Bucket = "hour"
    points: list[TrendPoint] = field(default_factory=list)


# -- suggestions and the report -------------------------------------------------------


@dataclass
class Suggestion(_Result):
    """Something to do, the figures that justify it, and what it would save.

    ``saving_usd`` / ``saving_ms`` are computed from the recorded spans (see
    each kind in :mod:`llamonitor.analysis`); ``None`` when not applicable.
    """

    kind: SuggestionKind
    title: str
    detail: str
    saving_usd: float | None = None
    saving_ms: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report(_Result):
    """The full analysis of a scope: cost, latency, tokens, quality, trends, suggestions."""

    scope: Scope = field(default_factory=Scope)
    overview: Overview = field(default_factory=Overview)
    cost: CostBreakdown = field(default_factory=CostBreakdown)
    latency: LatencyBreakdown = field(default_factory=LatencyBreakdown)
    tokens: TokenBreakdown = field(default_factory=TokenBreakdown)
    quality: QualityBreakdown = field(default_factory=QualityBreakdown)
    trends: Trends = field(default_factory=Trends)
    suggestions: list[Suggestion] = field(default_factory=list)
    generated_at: datetime | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    """The scores on the scope's spans (``analysis._score_section``); ``{}``: none,
    or no score store given."""

    @property
    def empty(self) -> bool:
        """True when no span is in the scope."""
        return self.overview.spans == 0


@dataclass
class SessionReport(Report):
    """The report of one session (seed 002's name), with its suggestions."""

    session_id: str = ""
