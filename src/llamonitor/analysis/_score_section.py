"""The scores section of a report: distributions and trends of the scores on
the spans of the report's scope.

A score belongs to the scope when what it judges has a span there: a span
score its span, a trace score the trace's spans, a session score the
session's. Each is attributed to a model, an operation, an agent and a prompt
hash: a span score takes its span's; a trace or session score takes the root
span's operation and agent (the first span's when no root is in the scope)
and the first model and prompt hash seen in it. Its time, for the trend, is
the time of that span (when the judged work ran), not when the score was
given: an evaluator run over last week's spans tells about last week.

Scores of targets outside the scope (another session, a span not stored, a
typo) are left out and counted in ``unmatched``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from llamonitor.storage._scores import ScoreFilters, read_scores

DIMENSIONS = {
    "model": "model",
    "operation": "operation_name",
    "agent": "agent_name",
    "prompt_hash": "prompt_hash",
}
"""The report's score breakdowns: name -> span column."""

BUCKET_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

SCORES_AFTER_SCOPE = timedelta(days=1)
"""How long after a scope's ``until`` a score of its spans is still read (a
score is given after the work it judges: an evaluation run, a user's feedback)."""

MAX_ID_PARAMETERS = 10_000
"""Up to this many scored ids of a kind, the store reads only their spans (the ids
are a parameter); past it, it aggregates every span of the scope (a column scan
is cheaper than binding a longer list)."""

_SPANS = """
SELECT span_id AS gid, model, operation_name, agent_name, prompt_hash, "timestamp"
FROM {rel} {where}
"""
"""What a span score is attributed to: its span."""

_GROUPS = """
SELECT {kind} AS gid,
       arg_min(operation_name, rank) AS operation_name,
       arg_min(agent_name, rank) AS agent_name,
       arg_min(model, "timestamp") FILTER (WHERE model IS NOT NULL) AS model,
       arg_min(prompt_hash, "timestamp") FILTER (WHERE prompt_hash IS NOT NULL) AS prompt_hash,
       min("timestamp") AS "timestamp"
FROM (
  -- The root first, then the earliest: one BIGINT to compare (a struct is slower).
  SELECT {kind}, operation_name, agent_name, model, prompt_hash, "timestamp",
         CASE WHEN parent_span_id IS NULL THEN 0 ELSE 4611686018427387904 END
           + epoch_us("timestamp") AS rank
  FROM {rel} {where}
) GROUP BY {kind}
"""
"""What a trace's (or a session's) scores are attributed to."""

_JOINED = """
CREATE TEMP TABLE joined AS
SELECT s.name, s.value, s.label, f.model, f.operation_name, f.agent_name, f.prompt_hash,
       f."timestamp", f.gid IS NOT NULL AS matched
FROM scores s LEFT JOIN span_facts f ON f.gid = s.span_id WHERE s.target = 'span'
-- A span stored twice is one score: the first of its rows (cheaper here than a GROUP BY
-- over every span of the store).
QUALIFY row_number() OVER (PARTITION BY s.score_id ORDER BY f."timestamp") = 1
UNION ALL
SELECT s.name, s.value, s.label, t.model, t.operation_name, t.agent_name, t.prompt_hash,
       t."timestamp", t.gid IS NOT NULL
FROM scores s LEFT JOIN trace_facts t ON t.gid = s.trace_id WHERE s.target = 'trace'
UNION ALL
SELECT s.name, s.value, s.label, g.model, g.operation_name, g.agent_name, g.prompt_hash,
       g."timestamp", g.gid IS NOT NULL
FROM scores s LEFT JOIN session_facts g ON g.gid = s.session_id WHERE s.target = 'session'
"""

_STATS = """
SELECT name, {key} AS key, count(*) AS count, count(value) AS numeric,
       avg(value) AS mean, min(value) AS min, max(value) AS max,
       quantile_cont(value, 0.5) AS median, count(label) AS labelled
FROM joined WHERE matched GROUP BY ALL ORDER BY name, count DESC, key NULLS LAST
"""

_LABELS = """
SELECT name, {key} AS key, label, count(*) AS count
FROM joined WHERE matched AND label IS NOT NULL
GROUP BY ALL ORDER BY name, key NULLS LAST, count DESC, label
"""

_TREND = """
SELECT name, time_bucket(INTERVAL '{step} seconds', "timestamp") AS start,
       count(*) AS count, count(value) AS numeric, avg(value) AS mean
FROM joined WHERE matched GROUP BY ALL ORDER BY name, start
"""


def _facts_empty() -> pa.Table:
    s = pa.string()
    return pa.table({
        "gid": pa.array([], s), "model": pa.array([], s), "operation_name": pa.array([], s),
        "agent_name": pa.array([], s), "prompt_hash": pa.array([], s),
        "timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
    })


def _facts(spans: Any, filters: Any, sql: str, column: str, ids: list[str]) -> pa.Table:
    """``sql`` (``_SPANS`` or ``_GROUPS``) over the scope's spans, of ``ids`` only
    when there are few of them."""
    if not ids:
        return _facts_empty()
    where, params = spans.where(filters)
    clauses = [where[len("WHERE "):]] if where else []
    if len(ids) <= MAX_ID_PARAMETERS:
        clauses.append(f"{column} IN (SELECT unnest(?::VARCHAR[]))")
        params = [*params, ids]
    text = sql.replace("{kind}", column).replace(
        "{where}", ("WHERE " + " AND ".join(clauses)) if clauses else "")
    got = spans.run(text, params, filters)
    return got if isinstance(got, pa.Table) else _facts_empty()


def _ids(scores: pa.Table, target: str) -> list[str]:
    import pyarrow.compute as pc

    mask = pc.equal(scores.column("target"), target)
    ids = pc.unique(pc.filter(scores.column(f"{target}_id"), mask)).drop_null()
    return [v for v in ids.to_pylist() if v]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _stats(row: dict[str, Any], labels: list[tuple[str, int]]) -> dict[str, Any]:
    labelled = int(row["labelled"])
    return {
        "count": int(row["count"]),
        "numeric": int(row["numeric"]),
        "mean": _float(row["mean"]),
        "median": _float(row["median"]),
        "min": _float(row["min"]),
        "max": _float(row["max"]),
        "labels": [
            {"label": label, "count": n, "share": n / labelled if labelled else 0.0}
            for label, n in labels
        ],
    }


def score_section(
    storage: Any,
    spans: Any,
    filters: Any,
    bucket: str = "hour",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The scores of ``storage`` on the spans ``spans`` (a ``DuckDBQuery``)
    holds within ``filters`` (its ``Filters``).

    Returns:
        ``{}`` when no score is on a span of the scope; else ``names`` (one
        distribution a score name: count, numeric count, mean, median, min,
        max, and the label shares), ``by`` (the same per model, operation,
        agent and prompt hash, under ``key``), ``trend`` (per ``bucket``:
        count and mean a score name) and ``unmatched``.
    """
    import duckdb

    # A score is given after the work it judges: the scope's start bounds both,
    # and its end plus a margin bounds the scores (not the read of every later one).
    until = None if filters.until is None else filters.until + SCORES_AFTER_SCOPE
    scores = read_scores(storage, ScoreFilters(since=filters.since, until=until))
    if scores.num_rows == 0:
        return {}
    span_facts = _facts(spans, filters, _SPANS, "span_id", _ids(scores, "span"))
    trace_facts = _facts(spans, filters, _GROUPS, "trace_id", _ids(scores, "trace"))
    session_facts = _facts(spans, filters, _GROUPS, "session_id", _ids(scores, "session"))
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("scores", scores)
        con.register("span_facts", span_facts)
        con.register("trace_facts", trace_facts)
        con.register("session_facts", session_facts)
        con.sql(_JOINED)
        ((total, matched),) = con.sql(
            "SELECT count(*), count(*) FILTER (WHERE matched) FROM joined"
        ).fetchall()
        if not matched:
            return {}

        def stats(key: str) -> list[dict[str, Any]]:
            labels: dict[tuple[Any, Any], list[tuple[str, int]]] = {}
            for name, k, label, n in con.sql(_LABELS.replace("{key}", key)).fetchall():
                labels.setdefault((name, k), []).append((str(label), int(n)))
            cur = con.sql(_STATS.replace("{key}", key))
            cols = [d[0] for d in cur.description]
            out = []
            for values in cur.fetchall():
                row = dict(zip(cols, values, strict=True))
                item = {"name": row["name"], "key": row["key"],
                        **_stats(row, labels.get((row["name"], row["key"]), []))}
                out.append(item)
            return out

        names = [{k: v for k, v in g.items() if k != "key"} for g in stats("NULL")]
        by = {dim: stats(column) for dim, column in DIMENSIONS.items()}
        step = BUCKET_SECONDS.get(bucket, 3600)
        points = [
            {"name": name, "start": start, "count": int(n), "numeric": int(k),
             "mean": _float(mean)}
            for name, start, n, k, mean in con.sql(
                _TREND.replace("{step}", str(step))).fetchall()
        ]
    finally:
        con.close()
    return {
        "scores": int(matched),
        "unmatched": int(total) - int(matched),
        "names": names,
        "by": by,
        "trend": {"bucket": bucket, "points": points},
    }


def model_scores(section: dict[str, Any]) -> dict[str, dict[str, tuple[int, float]]]:
    """model -> score name -> (numeric scores, mean), from a :func:`score_section`."""
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for g in (section.get("by") or {}).get("model", []):
        if g["key"] is not None and g["numeric"] and g["mean"] is not None:
            out.setdefault(str(g["key"]), {})[str(g["name"])] = (int(g["numeric"]), g["mean"])
    return out
