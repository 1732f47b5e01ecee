"""The report's aggregates in ClickHouse's SQL (18.16 and later), for a store
whose query side runs statements natively (``ClickHouseQuery.native``).

Each statement gives what its DuckDB twin in :mod:`._sql` gives, so the report
is the same on every store: the heavy part -- every pass over the spans --
runs in ClickHouse, and only its small result travels. Where DuckDB's SQL
does more than ClickHouse 18.16 has (``GROUPING SETS``, window functions,
the error messages' regular expressions), ClickHouse computes the first step
(the partials by every key, the distinct messages, the repeated prompts) and
the DuckDB statement's second step (``profile_rollup_sql``,
``errors_rollup_sql``, ``cache_rollup_sql``) runs over that table, unchanged.

``{rel}`` is the span table as ``ClickHouseQuery.native`` gives it: the
columns by their names, ``ts_us`` (the start in µs) and ``failed`` (0/1); the
filters already applied. A result column named ``x__`` is ``x`` (an alias named
as a column would shadow it in the whole statement).
"""

from __future__ import annotations

from llamonitor.analysis._models import Bucket
from llamonitor.analysis._sql import BUCKET_US, SHORT_OUTPUT_TOKENS, Partial
from llamonitor.storage._clickhouse_query import SAMPLE_WEIGHT

IS_LLM = (
    "(isNotNull(model) OR isNotNull(provider) OR isNotNull(input_tokens) "
    "OR isNotNull(output_tokens) OR isNotNull(total_tokens) OR isNotNull(cost_usd))"
)
HAS_TOKENS = "(isNotNull(input_tokens) OR isNotNull(output_tokens) OR isNotNull(total_tokens))"
TOKENS = "ifNull(total_tokens, ifNull(input_tokens, 0) + ifNull(output_tokens, 0))"
# round() of ClickHouse (as DuckDB's): half away from zero.
END_US = "ts_us + toInt64(round(ifNull(duration_ms, 0) * 1000))"

RANGE_SQL = "SELECT count() AS spans, min(ts_us) AS first, max(ts_us) AS last FROM {rel}"

_KEYS = ("provider", "model", "agent_name", "operation_name")

# The flags of ``_sql.profile_flags`` and the partials of ``_sql.PARTIALS``.
_FLAGS = {
    "error": "failed",
    "llm": IS_LLM,
    "has_tokens": HAS_TOKENS,
    "short": (
        "(isNotNull(output_tokens) AND ifNull(output_tokens <= {short}, 0) "
        "AND isNotNull(cost_usd) AND isNotNull(input_tokens))"
    ),
}
_PARTIALS = {
    "n": "count()",
    "priced": "count(cost_usd)",
    "cost": "sum(cost_usd)",
    "input_cost": "sum(input_cost_usd)",
    "output_cost": "sum(output_cost_usd)",
    "input_tok": "sum(input_tokens)",
    "output_tok": "sum(output_tokens)",
    "total_tok": f"sum({TOKENS})",
    "cache_read": "sum(cache_read_tokens)",
    "cache_write": "sum(cache_write_tokens)",
    "reasoning": "sum(reasoning_tokens)",
    "ms": "sum(duration_ms)",
    "max_ms": "max(duration_ms)",
    "weighted": f"sum({SAMPLE_WEIGHT})",
    "sampled": f"countIf({SAMPLE_WEIGHT} > 1)",
}
FLAG_NAMES = tuple(_FLAGS)


def check_partials(partials: tuple[Partial, ...]) -> None:
    """The DuckDB profile's partials are the ones written here (a guard for edits)."""
    missing = {p.name for p in partials} ^ set(_PARTIALS)
    if missing:  # pragma: no cover - a partial added to _sql.PARTIALS only
        raise AssertionError(f"partials not in ClickHouse's profile: {sorted(missing)}")


def profile_sql(bucket: Bucket, short_output_tokens: int = SHORT_OUTPUT_TOKENS) -> str:
    """The profile's first step (DuckDB's ``l1``): the partials by every key and
    flag; the flags come back as ``f_<flag>`` (0/1), the rest by name."""
    width = BUCKET_US[bucket]
    flags = {
        f"f_{name}": sql.replace("{short}", str(int(short_output_tokens)))
        for name, sql in _FLAGS.items()
    }
    cols = [*_KEYS, f"intDiv(ts_us, {width}) AS bucket"]
    cols += [f"toUInt8({sql}) AS {name}" for name, sql in flags.items()]
    cols += [f"{sql} AS {name}" for name, sql in _PARTIALS.items()]
    group = ", ".join([*_KEYS, "bucket", *flags])
    return f"SELECT {', '.join(cols)} FROM {{rel}} GROUP BY {group}"


def _dur() -> str:
    return f"(max({END_US}) - min(ts_us)) / 1000.0"


def top_sql(top: int) -> str:
    """As ``_sql.top_sql``: ``rank_by``, ``id``, ``n``."""
    n = int(top)
    cost = "ifNull(sum(cost_usd), 0)"
    return (
        "SELECT 'session_cost' AS rank_by, toNullable(session_id) AS id, "
        "CAST(NULL AS Nullable(UInt64)) AS n FROM "
        f"(SELECT session_id, {cost} AS c FROM {{rel}} GROUP BY session_id "
        f"ORDER BY c DESC, session_id LIMIT {n}) "
        "UNION ALL SELECT 'trace_cost' AS rank_by, toNullable(trace_id) AS id, "
        "CAST(NULL AS Nullable(UInt64)) AS n FROM "
        f"(SELECT trace_id, {cost} AS c FROM {{rel}} GROUP BY trace_id "
        f"ORDER BY c DESC, trace_id LIMIT {n}) "
        "UNION ALL SELECT 'trace_time' AS rank_by, toNullable(trace_id) AS id, "
        "CAST(NULL AS Nullable(UInt64)) AS n FROM "
        f"(SELECT trace_id, {_dur()} AS d FROM {{rel}} GROUP BY trace_id "
        f"ORDER BY d DESC, trace_id LIMIT {n}) "
        "UNION ALL SELECT 'sessions' AS rank_by, CAST(NULL AS Nullable(String)) AS id, "
        "toNullable(uniqExact(session_id)) AS n FROM {rel} "
        "UNION ALL SELECT 'traces' AS rank_by, CAST(NULL AS Nullable(String)) AS id, "
        "toNullable(uniqExact(trace_id)) AS n FROM {rel}"
    )


_SUMMARY = (
    "count() AS spans, count() - count(parent_span_id) AS roots, "
    f"countIf({IS_LLM}) AS llm_calls, countIf(failed = 1) AS errors, "
    "ifNull(sum(cost_usd), 0) AS cost, "
    f"countIf({IS_LLM} AND isNull(cost_usd)) AS unpriced_calls, "
    f"sum({TOKENS}) AS tokens, min(ts_us) AS start, {_dur()} AS duration_ms__"
)


def details_sql(sessions: bool, traces: bool) -> str:
    """As ``_sql.details_sql``, for the sessions listed in ``%(sessions)s`` (if
    ``sessions``) and the traces in ``%(traces)s`` (if ``traces``), tuples;
    ``start`` in µs."""
    root = (
        "if(countIf(isNull(parent_span_id)) > 0, "
        "argMinIf(operation_name, ts_us, isNull(parent_span_id)), "
        "argMin(operation_name, ts_us))"
    )
    by_session = (
        "SELECT toUInt8(1) AS gid, toNullable(session_id) AS session_id__, "
        f"CAST(NULL AS Nullable(String)) AS trace_id__, {_SUMMARY}, "
        "CAST(NULL AS Nullable(String)) AS trace_session, "
        "CAST(NULL AS Nullable(String)) AS root_operation "
        "FROM {rel} WHERE session_id IN %(sessions)s GROUP BY session_id"
    )
    by_trace = (
        "SELECT toUInt8(2) AS gid, CAST(NULL AS Nullable(String)) AS session_id__, "
        f"toNullable(trace_id) AS trace_id__, {_SUMMARY}, "
        "toNullable(min(session_id)) AS trace_session, "
        f"toNullable({root}) AS root_operation "
        "FROM {rel} WHERE trace_id IN %(traces)s GROUP BY trace_id"
    )
    return " UNION ALL ".join([x for x, on in ((by_session, sessions), (by_trace, traces)) if on])


def errors_sql() -> str:
    """The first step of ``_sql.errors_sql`` (``m``): failed spans by type,
    operation and message; ``first``/``last`` in µs."""
    return (
        "SELECT ifNull(error_type, '(unknown)') AS et, operation_name AS op, "
        "ifNull(error_message, '') AS msg, count() AS n, min(ts_us) AS first, "
        "max(ts_us) AS last FROM {rel} WHERE failed = 1 GROUP BY et, op, msg"
    )


def cache_sql() -> str:
    """The first step of ``_sql.cache_sql`` (``c``): repeated (prompt hash, model)."""
    return (
        "SELECT prompt_hash AS prompt_hash__, model AS model__, count() AS n, "
        "ifNull(sum(cost_usd), 0) - ifNull(argMin(cost_usd, ts_us), 0) AS saving_usd, "
        "ifNull(sum(duration_ms), 0) - ifNull(argMin(duration_ms, ts_us), 0) AS saving_ms "
        "FROM {rel} WHERE isNotNull(prompt_hash) AND failed = 0 "
        "GROUP BY prompt_hash, model HAVING count() > 1"
    )
