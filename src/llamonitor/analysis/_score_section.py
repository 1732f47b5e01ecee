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

from datetime import datetime
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

_FACTS = """
SELECT span_id, trace_id, session_id, model, operation_name, agent_name, prompt_hash,
       parent_span_id IS NULL AS is_root, "timestamp"
FROM {rel} {where}
  (span_id IN (SELECT unnest(?::VARCHAR[])) OR trace_id IN (SELECT unnest(?::VARCHAR[]))
   OR session_id IN (SELECT unnest(?::VARCHAR[])))
"""

_GROUP = """
  SELECT {kind} AS gid,
         arg_min(operation_name, rank) AS operation_name,
         arg_min(agent_name, rank) AS agent_name,
         arg_min(model, "timestamp") FILTER (WHERE model IS NOT NULL) AS model,
         arg_min(prompt_hash, "timestamp") FILTER (WHERE prompt_hash IS NOT NULL) AS prompt_hash,
         min("timestamp") AS "timestamp"
  FROM ranked
  WHERE {kind} IN (SELECT {kind} FROM scores WHERE target = '{target}')
  GROUP BY {kind}
"""
"""What a trace's (or a session's) scores are attributed to."""

_JOINED = (
    # The root first, then the earliest: one BIGINT to compare (a struct is slower).
    "CREATE TEMP TABLE joined AS WITH ranked AS (SELECT *, CASE WHEN is_root THEN 0 "
    "ELSE 4611686018427387904 END + epoch_us(\"timestamp\") AS rank FROM facts), "
    "traces AS (" + _GROUP.replace("{kind}", "trace_id").replace("{target}", "trace")
    + "), sessions AS ("
    + _GROUP.replace("{kind}", "session_id").replace("{target}", "session") + "),"
) + """
spans AS (SELECT * FROM facts WHERE span_id IN (SELECT span_id FROM scores WHERE target = 'span')
          QUALIFY row_number() OVER (PARTITION BY span_id) = 1)
SELECT s.name, s.value, s.label, f.model, f.operation_name, f.agent_name, f.prompt_hash,
       f."timestamp", f.span_id IS NOT NULL AS matched
FROM scores s LEFT JOIN spans f ON f.span_id = s.span_id WHERE s.target = 'span'
UNION ALL
SELECT s.name, s.value, s.label, t.model, t.operation_name, t.agent_name, t.prompt_hash,
       t."timestamp", t.gid IS NOT NULL
FROM scores s LEFT JOIN traces t ON t.gid = s.trace_id WHERE s.target = 'trace'
UNION ALL
SELECT s.name, s.value, s.label, g.model, g.operation_name, g.agent_name, g.prompt_hash,
       g."timestamp", g.gid IS NOT NULL
FROM scores s LEFT JOIN sessions g ON g.gid = s.session_id WHERE s.target = 'session'
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
        "span_id": pa.array([], s), "trace_id": pa.array([], s), "session_id": pa.array([], s),
        "model": pa.array([], s), "operation_name": pa.array([], s),
        "agent_name": pa.array([], s), "prompt_hash": pa.array([], s),
        "is_root": pa.array([], pa.bool_()),
        "timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
    })


def _ids(scores: pa.Table, target: str) -> list[str]:
    import pyarrow.compute as pc

    mask = pc.equal(scores.column("target"), target)
    return sorted({v for v in pc.filter(scores.column(f"{target}_id"), mask).to_pylist() if v})


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

    # A score is given after the work it judges: the scope's start bounds both.
    scores = read_scores(storage, ScoreFilters(since=filters.since))
    if scores.num_rows == 0:
        return {}
    where, params = spans.where(filters)
    where = (where + " AND") if where else "WHERE"
    ids = [_ids(scores, "span"), _ids(scores, "trace"), _ids(scores, "session")]
    # A span score's trace is kept too (a span of the trace may be in scope).
    facts = spans.run(_FACTS.replace("{where}", where), [*params, *ids], filters)
    if not isinstance(facts, pa.Table):
        facts = _facts_empty()
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Native tables: the joins below read them several times, faster than Arrow scans.
        con.register("scores_in", scores)
        con.register("facts_in", facts)
        con.sql("CREATE TEMP TABLE scores AS SELECT name, value, label, target, trace_id, "
                "span_id, session_id, \"timestamp\" FROM scores_in")
        con.sql("CREATE TEMP TABLE facts AS SELECT * FROM facts_in")
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
