"""Scores in the ClickHouse store: the ``llamonitor_scores`` table, in the
database of the span table's connection string (a side table, see
``_clickhouse_side``: creation, migration, writes and reads).

``ReplacingMergeTree(version) ORDER BY score_id``, one partition (a score
written again in a later month must meet its first copy to replace it).
``version`` is the score's time in microseconds, so a score written again
keeps the row with the later ``timestamp``, as the upsert of the other SQL
stores does; reads say ``FINAL`` (and ``read_scores`` keeps the latest row per
``score_id`` on top), so a copy not merged away yet is never counted twice.
``read_scores`` pushes its time range and its name, trace (one), source and
evaluator filters into the ``WHERE``, which ClickHouse applies after ``FINAL``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from llamonitor.schema._scores import SCORE_SCHEMA
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _clickhouse_side as side
from llamonitor.storage._clickhouse_ddl import q

SCORES_TABLE = "llamonitor_scores"
SCORES = side.SideTable(
    SCORES_TABLE,
    SCORE_SCHEMA,
    "scores",
    f"ReplacingMergeTree({q(side.VERSION_COLUMN)}) ORDER BY {q('score_id')}",
    versioned=True,
)


def write(storage: StorageConfig, scores: pa.Table) -> None:
    """Insert ``scores`` (conformed); see :func:`._clickhouse_side.write`."""
    side.write(SCORES, storage, scores)


def fetch(
    storage: StorageConfig,
    since: datetime | None = None,
    until: datetime | None = None,
    **equal: str | None,
) -> pa.Table:
    """The scores given in ``[since, until)`` (each bound only when given; in
    whole seconds, the caller cuts exactly) whose columns ``equal`` names
    hold those values (``name="helpful"``; ``None`` is no filter), one row
    per ``score_id``: its latest.

    ClickHouse applies ``WHERE`` after ``FINAL`` has kept the latest row of
    each ``score_id``, so a filter never brings back a copy a later write
    replaced (a score re-given after ``until`` is not read as its older
    value): what the caller's own filter over the latest rows keeps.
    """
    clauses: list[side.Clause] = [("timestamp", ">=", since), ("timestamp", "<", until)]
    clauses += [(column, "=", value) for column, value in sorted(equal.items())]
    return side.fetch(SCORES, storage, clauses)
