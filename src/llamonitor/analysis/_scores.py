"""Score distributions and trends by model, operation, agent and prompt hash.

Scores are read through the storage query side (``storage._scores``) and
joined with the spans they judge (a span score: that span; a trace score: the
trace's root span for operation and agent, its first model for the model), so
analysis imports no ``quality``.
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

_FACTS = """
SELECT span_id, trace_id, model, operation_name, agent_name, prompt_hash,
       parent_span_id IS NULL AS is_root, "timestamp"
FROM {rel} WHERE list_contains(?, span_id) OR list_contains(?, trace_id)
"""

_SUMMARY = """
WITH trace_facts AS (
  SELECT trace_id,
         arg_min(operation_name, CASE WHEN is_root THEN 0 ELSE 1 END) AS operation_name,
         arg_min(agent_name, CASE WHEN is_root THEN 0 ELSE 1 END) AS agent_name,
         arg_min(model, "timestamp") FILTER (WHERE model IS NOT NULL) AS model,
         arg_min(prompt_hash, "timestamp") FILTER (WHERE prompt_hash IS NOT NULL) AS prompt_hash
  FROM facts GROUP BY trace_id
),
joined AS (
  SELECT s.name, s.value, s.label, s."timestamp",
         coalesce(f.{col}, t.{col}) AS key
  FROM scores s
  LEFT JOIN facts f ON s.target = 'span' AND f.span_id = s.span_id
  LEFT JOIN trace_facts t ON s.target = 'trace' AND t.trace_id = s.trace_id
)
SELECT name, key, count(*) AS scores, count(value) AS numeric,
       avg(value) AS mean, min(value) AS min, max(value) AS max,
       quantile_cont(value, 0.5) AS median,
       mode(label) AS top_label
FROM joined GROUP BY name, key ORDER BY name, scores DESC, key
"""

_TREND = """
SELECT name, time_bucket(INTERVAL '{step} seconds', "timestamp") AS bucket,
       count(*) AS scores, avg(value) AS mean
FROM scores GROUP BY name, bucket ORDER BY name, bucket
"""


def score_report(
    storage: Any,
    spans: Any,
    by: str = "model",
    since: datetime | None = None,
    until: datetime | None = None,
    step_seconds: int = 86400,
) -> dict[str, Any]:
    """Scores of ``storage`` grouped by ``by`` (a key of :data:`DIMENSIONS`), and
    their trend per ``step_seconds``.

    Args:
        storage: the store's ``StorageConfig`` (its scores).
        spans: its span query (a ``DuckDBQuery``).

    Raises:
        ValueError: ``by`` is not one of :data:`DIMENSIONS`.
    """
    import duckdb

    if by not in DIMENSIONS:
        raise ValueError(f"by: one of {sorted(DIMENSIONS)}, not {by!r}")
    scores = read_scores(storage, ScoreFilters(since=since, until=until))
    if scores.num_rows == 0:
        return {"by": by, "groups": [], "trend": []}
    span_ids = [v for v in scores.column("span_id").to_pylist() if v]
    trace_ids = sorted({v for v in scores.column("trace_id").to_pylist() if v})
    facts = spans.run(_FACTS, [span_ids, trace_ids])
    if facts is None or not isinstance(facts, pa.Table):
        facts = pa.table(
            {"span_id": pa.array([], pa.string()), "trace_id": pa.array([], pa.string()),
             "model": pa.array([], pa.string()), "operation_name": pa.array([], pa.string()),
             "agent_name": pa.array([], pa.string()), "prompt_hash": pa.array([], pa.string()),
             "is_root": pa.array([], pa.bool_()),
             "timestamp": pa.array([], pa.timestamp("us", tz="UTC"))}
        )
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("scores", scores)
        con.register("facts", facts)
        groups = con.sql(_SUMMARY.replace("{col}", DIMENSIONS[by])).fetchall()
        cols = ["name", "key", "scores", "numeric", "mean", "min", "max", "median", "top_label"]
        trend = con.sql(_TREND.replace("{step}", str(int(step_seconds)))).fetchall()
    finally:
        con.close()
    return {
        "by": by,
        "groups": [dict(zip(cols, row, strict=True)) for row in groups],
        "trend": [dict(zip(["name", "bucket", "scores", "mean"], r, strict=True)) for r in trend],
    }
