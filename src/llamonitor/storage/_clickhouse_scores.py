"""Scores in the ClickHouse store: the ``llamonitor_scores`` table, in the
database of the span table's connection string (a side table, see
``_clickhouse_side``: creation, migration, writes and reads).

``ReplacingMergeTree(version) ORDER BY score_id``, one partition (a score
written again in a later month must meet its first copy to replace it).
``version`` is the score's time in microseconds, so a score written again
keeps the row with the later ``timestamp``, as the upsert of the other SQL
stores does; reads say ``FINAL`` (and ``read_scores`` keeps the latest row per
``score_id`` on top), so a copy not merged away yet is never counted twice.
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


def fetch(storage: StorageConfig, since: datetime | None = None) -> pa.Table:
    """The scores given at or after ``since`` (all without), one row per ``score_id``."""
    return side.fetch(SCORES, storage, [("timestamp", ">=", since)])
