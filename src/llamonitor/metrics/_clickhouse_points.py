"""Metric points in the ClickHouse store: the ``metric_points`` table, in the
database of the span table's connection string (a side table, see
``storage._clickhouse_side``: creation, migration, writes and reads).

``MergeTree`` partitioned by (resolution, month), ordered by (name,
resolution, time): a series' range of the primary index is what ``llamonitor
metrics`` and the API read, and a month of raw points can be dropped without
its rollups (``ALTER TABLE ... DROP PARTITION (0, 202601)``; the rollups are
built by ``llamonitor metrics rollup``). A table made before that (partitioned
by month only) is kept and used as it is: ``CREATE TABLE IF NOT EXISTS``
leaves it, and only its partitions differ.

Like the other SQL stores' points table it has no key: the worker retries
only a batch that failed for the store, so a point is written twice only if
an insert landed and its answer was lost. A point whose time a
``DateTime`` cannot hold is refused alone (``RowsRejected``), the others
written. NaN and the infinities are kept (ClickHouse's ``Float64`` has them).
Retention is not applied on ClickHouse (see ``metrics._retention.check_store``).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from llamonitor.metrics._schema import METRIC_SCHEMA
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _clickhouse_side as side
from llamonitor.storage._clickhouse_ddl import q

POINTS_TABLE = "metric_points"
POINTS = side.SideTable(
    POINTS_TABLE,
    METRIC_SCHEMA,
    "metric points",
    f"MergeTree PARTITION BY ({q('resolution_seconds')}, toYYYYMM({q('timestamp')})) "
    f"ORDER BY ({q('name')}, {q('resolution_seconds')}, {q('timestamp')})",
)


def write(storage: StorageConfig, points: pa.Table) -> None:
    """Insert ``points`` (conformed); see :func:`storage._clickhouse_side.write`."""
    side.write(POINTS, storage, points)


def fetch(
    storage: StorageConfig,
    name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: int | None = None,
) -> pa.Table:
    """The points of ``name`` in ``[start, end)`` at ``resolution`` (each
    filter only when given; the times in whole seconds, the caller cuts
    exactly)."""
    return side.fetch(
        POINTS,
        storage,
        [
            ("name", "=", name),
            ("timestamp", ">=", start),
            ("timestamp", "<", end),
            ("resolution_seconds", "=", resolution),
        ],
    )
