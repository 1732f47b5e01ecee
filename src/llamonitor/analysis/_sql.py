"""Every aggregate of the report, written once in DuckDB SQL over ``{rel}``.

The statements run through :meth:`DuckDBQuery.run`, so they run unchanged on
every store: Parquet files, JSON Lines, and SQL stores that stream Arrow into
DuckDB. ``{where}`` is the query's :class:`Filters` as a ``WHERE`` clause;
``{rel}`` appears exactly once in each statement (the store's relation and
its parameters are spliced in there) and no ``?`` comes before it.

The per-group breakdowns are a small declarative spec: :data:`PARTIALS`
(aggregates over span rows that add up), :data:`MEASURES` (the figures, made
of partials, filtered on per-span flags) and the :data:`DIMENSIONS` they are
broken down by. :func:`profile_sql` compiles them into one statement: the
spans are aggregated once by every dimension column and flag together (a
few thousand groups), and that small table is rolled up into each dimension
with ``GROUPING SETS``. Percentiles do not
roll up: they come from the structure pass (:mod:`._structure`), exactly
and in bounded memory, with the critical path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llamonitor.analysis._models import Bucket
from llamonitor.storage._duckdb import SAMPLE_WEIGHT_SQL

# -- shared expressions ---------------------------------------------------------------

IS_LLM = (
    "(model IS NOT NULL OR provider IS NOT NULL OR input_tokens IS NOT NULL "
    "OR output_tokens IS NOT NULL OR total_tokens IS NOT NULL OR cost_usd IS NOT NULL)"
)
"""An LLM call: a span with a model, a provider, a token count or a cost."""

HAS_TOKENS = "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR total_tokens IS NOT NULL)"
TOKENS = "coalesce(total_tokens, coalesce(input_tokens, 0) + coalesce(output_tokens, 0))"
END_US = 'epoch_us("timestamp") + CAST(round(coalesce(duration_ms, 0) * 1000) AS BIGINT)'

# Masks applied in order, so that messages differing only in these group together.
# RE2 syntax (DuckDB's regexp_replace).
ERROR_MASKS: tuple[tuple[str, str], ...] = (
    (r"'[^']*'|" + r'"[^"]*"', "<str>"),  # quoted strings
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"0[xX][0-9a-fA-F]+", "<hex>"),  # 0x1f3a
    (r"\b[0-9a-fA-F]{8,}\b", "<hex>"),  # ids: 8+ hex digits (3fa9c2b1d0e4, 1715000000)
    (r"\d+(?:\.\d+)?", "<n>"),  # any other number: 3.2s, 429, 10.0.3.4:5678
)
"""How error messages are normalized before grouping (pattern, replacement)."""

PATTERN_CHARS = 300
"""Messages are cut to this many characters before they are normalized."""


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def normalize_sql(column: str) -> str:
    """The SQL expression that normalizes the message in ``column``."""
    expr = f"left(coalesce({column}, ''), {PATTERN_CHARS})"
    for pattern, replacement in ERROR_MASKS:
        expr = f"regexp_replace({expr}, {_sql_string(pattern)}, {_sql_string(replacement)}, 'g')"
    return expr


# -- the profile: decomposable measures by every dimension ----------------------------


@dataclass(frozen=True)
class Partial:
    """An aggregate over span rows that adds up across groups (``sum`` of its values)."""

    name: str
    sql: str
    rollup: Literal["sum", "min", "max"] = "sum"


@dataclass(frozen=True)
class Measure:
    """A figure of every group: ``sql`` aggregates the partials (and may filter on a flag)."""

    name: str
    sql: str


SHORT_OUTPUT_TOKENS = 256
"""A call whose output is at most this many tokens has a *short output*: a
candidate for a cheaper model (see the ``cheaper_model`` suggestion)."""


def profile_flags(short_output_tokens: int = SHORT_OUTPUT_TOKENS) -> dict[str, str]:
    """Per-span conditions the measures filter on; spans are grouped by them first."""
    return {
        "error": "coalesce(error, false)",
        "llm": IS_LLM,
        "has_tokens": HAS_TOKENS,
        "short": (
            f"coalesce(output_tokens <= {int(short_output_tokens)} AND cost_usd IS NOT NULL "
            "AND input_tokens IS NOT NULL, false)"
        ),
    }


PARTIALS: tuple[Partial, ...] = (
    Partial("n", "count(*)"),
    Partial("priced", "count(cost_usd)"),
    Partial("cost", "sum(cost_usd)"),
    Partial("input_cost", "sum(input_cost_usd)"),
    Partial("output_cost", "sum(output_cost_usd)"),
    Partial("input_tok", "sum(input_tokens)"),
    Partial("output_tok", "sum(output_tokens)"),
    Partial("total_tok", f"sum({TOKENS})"),
    Partial("cache_read", "sum(cache_read_tokens)"),
    Partial("cache_write", "sum(cache_write_tokens)"),
    Partial("reasoning", "sum(reasoning_tokens)"),
    Partial("ms", "sum(duration_ms)"),
    Partial("max_ms", "max(duration_ms)", "max"),
    # spans kept at a sample rate (llamonitor.observability), scaled back up
    Partial("weighted", f"sum({SAMPLE_WEIGHT_SQL})"),
    Partial("sampled", f"count(*) FILTER (WHERE {SAMPLE_WEIGHT_SQL} > 1)"),
)
"""What the spans are first aggregated to, by dimension columns and flags."""

MEASURES: tuple[Measure, ...] = (
    Measure("spans", "sum(n)"),
    Measure("estimated_spans", "sum(weighted)"),
    Measure("sampled_spans", "sum(sampled)"),
    Measure("errors", "sum(n) FILTER (WHERE error)"),
    Measure("llm_calls", "sum(n) FILTER (WHERE llm)"),
    Measure("priced_calls", "sum(priced)"),
    Measure("unpriced_calls", "sum(n - priced) FILTER (WHERE llm)"),
    Measure("cost_usd", "sum(cost)"),
    Measure("input_cost_usd", "sum(input_cost)"),
    Measure("output_cost_usd", "sum(output_cost)"),
    Measure("token_calls", "sum(n) FILTER (WHERE has_tokens)"),
    Measure("missing_token_calls", "sum(n) FILTER (WHERE llm AND NOT has_tokens)"),
    Measure("input_tokens", "sum(input_tok)"),
    Measure("output_tokens", "sum(output_tok)"),
    Measure("total_tokens", "sum(total_tok)"),
    Measure("cache_read_tokens", "sum(cache_read)"),
    Measure("cache_write_tokens", "sum(cache_write)"),
    Measure("reasoning_tokens", "sum(reasoning)"),
    Measure("total_ms", "sum(ms)"),
    Measure("max_ms", "max(max_ms)"),
    Measure("failed_cost_usd", "sum(cost) FILTER (WHERE error)"),
    Measure("failed_ms", "sum(ms) FILTER (WHERE error)"),
    Measure("short_calls", "sum(n) FILTER (WHERE short)"),
    Measure("short_input_tokens", "sum(input_tok) FILTER (WHERE short)"),
    Measure("short_output_tokens", "sum(output_tok) FILTER (WHERE short)"),
    Measure("short_cache_read_tokens", "sum(cache_read) FILTER (WHERE short)"),
    Measure("short_cache_write_tokens", "sum(cache_write) FILTER (WHERE short)"),
    Measure("short_cost_usd", "sum(cost) FILTER (WHERE short)"),
)
"""The profile's figures of every group (cost, tokens, time, errors, short calls)."""


Dimension = Literal["total", "model", "provider", "agent", "operation", "bucket"]

DIMENSIONS: dict[Dimension, tuple[str, ...]] = {
    "total": (),
    "model": ("provider", "model"),
    "provider": ("provider",),
    "agent": ("agent_name",),
    "operation": ("operation_name",),
    "bucket": ("bucket",),
}
"""Each breakdown and the columns it groups by (``bucket``: the trend's time bucket)."""

_KEYS = ("provider", "model", "agent_name", "operation_name", "bucket")


def grouping_ids(dimensions: tuple[Dimension, ...]) -> dict[int, Dimension]:
    """``grouping_id(provider, model, agent_name, operation_name, bucket)`` of each dimension."""
    out: dict[int, Dimension] = {}
    for dim in dimensions:
        cols = DIMENSIONS[dim]
        gid = sum(1 << (len(_KEYS) - 1 - i) for i, key in enumerate(_KEYS) if key not in cols)
        out[gid] = dim
    return out


BUCKET_US: dict[str, int] = {"minute": 60_000_000, "hour": 3_600_000_000, "day": 86_400_000_000}


def bucket_sql(bucket: Bucket) -> str:
    """The bucket of a span as an integer (microseconds since the epoch // width).

    Integer division, not ``date_trunc``: five times cheaper per row.
    """
    if bucket not in BUCKET_US:
        raise ValueError(f"bucket: {bucket!r} is not one of minute, hour, day")
    return f'epoch_us("timestamp") // {BUCKET_US[bucket]}'


def _sets(dimensions: tuple[Dimension, ...]) -> str:
    return ", ".join("(" + ", ".join(DIMENSIONS[d]) + ")" for d in dimensions)


def profile_sql(
    dimensions: tuple[Dimension, ...],
    bucket: Bucket,
    *,
    flags: dict[str, str] | None = None,
    partials: tuple[Partial, ...] = PARTIALS,
    measures: tuple[Measure, ...] = MEASURES,
) -> str:
    """One statement: every measure by every dimension (column ``gid`` tells which).

    The spans are aggregated once to ``partials`` by every dimension column and
    flag together (a few thousand groups), and that small table is rolled up
    into each dimension, where the measures filter on the flags: no per-span
    condition is evaluated more than once.
    """
    flags = profile_flags() if flags is None else flags
    flag_cols = ", ".join(f"{sql} AS {name}" for name, sql in flags.items())
    inner = ", ".join(f"{p.sql} AS {p.name}" for p in partials)
    group = ", ".join([*_KEYS, *flags])
    return (
        f"WITH l1 AS (SELECT {group}, {inner} FROM (SELECT *, {bucket_sql(bucket)} AS bucket, "
        f"{flag_cols} FROM {{rel}} {{where}}) GROUP BY {group}) "
        + profile_rollup_sql(dimensions, measures).replace("{rel}", "l1")
    )


def profile_rollup_sql(
    dimensions: tuple[Dimension, ...], measures: tuple[Measure, ...] = MEASURES
) -> str:
    """The profile's second step: ``{rel}`` (the partials by every key and flag,
    ``l1``) rolled up into each dimension."""
    outer = ", ".join(f"{m.sql} AS {m.name}" for m in measures)
    keys = ", ".join(_KEYS)
    return (
        f"SELECT grouping_id({keys}) AS gid, {keys}, {outer}, "
        "max(hash(operation_name)) AS op_hash, max(hash(provider, model)) AS model_hash, "
        "max(hash(agent_name)) AS agent_hash "
        f"FROM {{rel}} GROUP BY GROUPING SETS ({_sets(dimensions)})"
    )


RANGE_SQL = (
    'SELECT count(*) AS spans, min("timestamp") AS first, max("timestamp") AS last '
    "FROM {rel} {where}"
)


# -- sessions and traces ---------------------------------------------------------------

_SUMMARY = (
    "count(*) AS spans, count(*) - count(parent_span_id) AS roots, "
    f"count(*) FILTER (WHERE {IS_LLM}) AS llm_calls, count(*) FILTER (WHERE error) AS errors, "
    "coalesce(sum(cost_usd), 0) AS cost, "
    f"count(*) FILTER (WHERE {IS_LLM} AND cost_usd IS NULL) AS unpriced_calls, "
    f"coalesce(sum({TOKENS}), 0) AS tokens, min(\"timestamp\") AS start, "
    f"(max({END_US}) - epoch_us(min(\"timestamp\"))) / 1000.0 AS duration_ms"
)


def top_sql(top: int) -> str:
    """The ids of the ``top`` most expensive sessions, the ``top`` most expensive and
    ``top`` longest traces (column ``rank_by``), and how many sessions and traces."""
    n = int(top)
    return (
        "WITH g AS MATERIALIZED (SELECT grouping_id(session_id, trace_id) AS gid, session_id, "
        "trace_id, coalesce(sum(cost_usd), 0) AS cost, "
        f"(max({END_US}) - epoch_us(min(\"timestamp\"))) / 1000.0 AS dur "
        "FROM {rel} {where} GROUP BY GROUPING SETS ((session_id), (trace_id))) "
        "(SELECT 'session_cost' AS rank_by, session_id AS id, NULL AS n FROM g WHERE gid = 1 "
        f"ORDER BY cost DESC, session_id LIMIT {n}) "
        "UNION ALL (SELECT 'trace_cost', trace_id, NULL FROM g WHERE gid = 2 "
        f"ORDER BY cost DESC, trace_id LIMIT {n}) "
        "UNION ALL (SELECT 'trace_time', trace_id, NULL FROM g WHERE gid = 2 "
        f"ORDER BY dur DESC, trace_id LIMIT {n}) "
        "UNION ALL (SELECT CASE gid WHEN 1 THEN 'sessions' ELSE 'traces' END, NULL, count(*) "
        "FROM g GROUP BY gid)"
    )


def details_sql() -> str:
    """Totals of the sessions and traces listed in the two ``?`` parameters (lists of ids).

    Grouped by session and by trace over the spans of both lists: the caller
    keeps the listed ones.
    """
    return (
        f"SELECT grouping_id(session_id, trace_id) AS gid, session_id, trace_id, {_SUMMARY}, "
        "min(sid) AS trace_session, "
        "coalesce(arg_min(operation_name, \"timestamp\") FILTER (WHERE parent_span_id IS NULL), "
        "arg_min(operation_name, \"timestamp\")) AS root_operation "
        "FROM (SELECT *, session_id AS sid FROM {rel} {where}) AS s "
        "WHERE s.session_id IN (SELECT unnest(?)) OR s.trace_id IN (SELECT unnest(?)) "
        "GROUP BY GROUPING SETS ((session_id), (trace_id))"
    )


# -- errors ---------------------------------------------------------------------------

MAX_PATTERNS = 20
ERRORS_BY_TYPE_GID = 3  # grouping_id(et, op, pat): grouped by et only
ERRORS_BY_OPERATION_GID = 1  # grouped by (op, et)
ERRORS_BY_PATTERN_GID = 2  # grouped by (et, pat)


def errors_sql() -> str:
    """Failed spans by type, by (operation, type), and by (type, normalized message).

    Identical messages are counted first, so each distinct message is
    normalized once.
    """
    return (
        "WITH m AS (SELECT coalesce(error_type, '(unknown)') AS et, operation_name AS op, "
        "coalesce(error_message, '') AS msg, count(*) AS n, min(\"timestamp\") AS first, "
        "max(\"timestamp\") AS last FROM (SELECT * FROM {rel} {where}) AS s WHERE s.error "
        "GROUP BY ALL), " + errors_rollup_sql().replace("{rel}", "m").removeprefix("WITH ")
    )


def errors_rollup_sql() -> str:
    """:func:`errors_sql`'s second step over ``{rel}``: the failed spans counted
    by (type, operation, message) -- ``et``, ``op``, ``msg``, ``n``, ``first``, ``last``."""
    return (
        f"WITH e AS (SELECT *, op AS op2, {normalize_sql('msg')} AS pat FROM {{rel}}), "
        "g AS (SELECT grouping_id(et, op, pat) AS gid, et, op, pat, sum(n) AS n, "
        "min(msg) AS example, min(first) AS first, max(last) AS last, "
        "list(DISTINCT op2 ORDER BY op2) AS ops FROM e "
        "GROUP BY GROUPING SETS ((et), (op, et), (et, pat))) "
        "SELECT * FROM g QUALIFY gid <> 2 OR row_number() OVER "
        f"(PARTITION BY gid ORDER BY n DESC, et, pat) <= {MAX_PATTERNS}"
    )


# -- repeated prompts -------------------------------------------------------------------

CACHE_TOP = 5


def cache_sql() -> str:
    """Successful calls whose (prompt hash, model) was seen before: a cache's savings."""
    return (
        "WITH c AS (SELECT prompt_hash, model, count(*) AS n, "
        "coalesce(sum(cost_usd), 0) - coalesce(arg_min(cost_usd, \"timestamp\"), 0) AS saving_usd, "
        "coalesce(sum(duration_ms), 0) - coalesce(arg_min(duration_ms, \"timestamp\"), 0) "
        "AS saving_ms FROM (SELECT * FROM {rel} {where}) AS s "
        "WHERE s.prompt_hash IS NOT NULL AND s.error IS NOT TRUE "
        "GROUP BY prompt_hash, model HAVING count(*) > 1) "
        + cache_rollup_sql().replace("{rel}", "c")
    )


def cache_rollup_sql() -> str:
    """:func:`cache_sql`'s second step over ``{rel}``: the repeated (prompt hash,
    model) pairs -- ``n``, ``saving_usd``, ``saving_ms`` -- ranked, with totals."""
    return (
        "SELECT prompt_hash, model, n, saving_usd, saving_ms, "
        "count(*) OVER () AS prompts, sum(n - 1) OVER () AS repeats, "
        "sum(saving_usd) OVER () AS total_usd, sum(saving_ms) OVER () AS total_ms "
        f"FROM {{rel}} ORDER BY saving_usd DESC, saving_ms DESC, prompt_hash LIMIT {CACHE_TOP}"
    )


# -- the structure of traces (for the critical path and retries) -----------------------


STRUCTURE_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "timestamp", "duration_ms", "operation_name",
    "provider", "model", "agent_name", "error",
)
"""The span columns :func:`structure_sql` reads."""


def structure_sql(partitions: int) -> str:
    """Per span: trace partition, span and parent keys, start, duration, group hashes, error.

    Keys are 64-bit hashes of (trace, span id): ``k`` identifies a span and
    ``pk`` its parent. A root's ``pk`` hashes (trace, NULL): it matches no
    span, and is the same for every root of a trace. ``op``, ``model`` and
    ``agent`` are the hashes the profile statement reports for its groups.
    """
    return (
        f"SELECT CAST(th % {int(partitions)} AS SMALLINT) AS part, "
        "xor(th, hash(span_id)) AS k, xor(th, hash(parent_span_id)) AS pk, "
        'epoch_us("timestamp") AS a, coalesce(duration_ms, 0) AS dur, '
        "hash(operation_name) AS op, hash(provider, model) AS model, "
        "hash(agent_name) AS agent, coalesce(error, false) AS err, "
        "parent_span_id IS NULL AS declared_root "
        "FROM (SELECT hash(trace_id) AS th, span_id, parent_span_id, \"timestamp\", "
        "duration_ms, operation_name, provider, model, agent_name, error FROM {rel} {where})"
    )
