"""Where metric points are kept: the configured store, beside the spans.

One pair of calls for every store: :func:`write_points` and
:func:`read_points`. The store is the ``StorageConfig`` the spans use:

- Parquet (``parquet``, and the file stores ``jsonl``): files under
  ``<output_dir>/metrics/YYYY-MM-DD/points_*.parquet`` (the UTC day of the
  points), written atomically like the span files and the scores' files
  (``storage._side_files``), sorted by series then time, with
  the encodings a time series wants: ``DELTA_BINARY_PACKED`` timestamps and
  counts, ``BYTE_STREAM_SPLIT`` floats (``PLAIN`` for a float column that
  zstd compresses smaller that way: see :func:`float_encoding`),
  dictionary-encoded names, kinds, labels and sources, all zstd-compressed.
  The span reader never lists the ``metrics`` directory.
- SQLite, PostgreSQL, MySQL/MariaDB: a table ``metric_points`` (in
  ``storage.schema_name`` if set) derived from
  :data:`~llamonitor.metrics._schema.METRIC_SCHEMA` with the dialect type
  maps of the span table (``storage._sql_types``); see ``_sql_points``.
- ClickHouse: a ``MergeTree`` table ``metric_points`` in the database of the
  connection string; see ``_clickhouse_points``.

Reads go through DuckDB (Parquet: ``read_parquet`` with the filters; SQL:
the filters pushed into the database's ``WHERE``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from llamonitor.metrics._schema import conform_points, empty_points
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _side_files
from llamonitor.storage._files import write_atomic

METRICS_DIR = "metrics"
"""The Parquet store's points live in ``<output_dir>/metrics/``."""

POINTS_TABLE = "metric_points"
"""The SQL stores' table of points."""

FILE_STORES = _side_files.FILE_STORES
SQL_STORES = _side_files.SQL_STORES

ZSTD_LEVEL = 9
"""zstd level of the point files (points are written every few seconds, in
small batches: the cost is small and the files are read many times)."""

_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def store_kind(storage: StorageConfig) -> str:
    """``parquet``, the SQL backend's name or ``clickhouse`` for ``storage``.

    Raises:
        ConfigurationError: a backend that cannot hold metric points
            (``memory``, a custom class), naming ``storage.backend``.
    """
    return _side_files.store_kind(storage, "metric points")


def metrics_root(storage: StorageConfig) -> Path:
    """``<output_dir>/metrics``: the Parquet store's points."""
    return Path(storage.output_dir) / METRICS_DIR


def write_points(storage: StorageConfig, table: pa.Table) -> int:
    """Store a table of metric points.

    Args:
        storage: the store (the spans' ``StorageConfig``).
        table: points with :data:`METRIC_SCHEMA`'s columns (missing nullable
            columns are nulls).

    Returns:
        The number of points written.

    Raises:
        ValueError: the table is not points (see ``conform_points``).
        ConfigurationError: a backend that cannot hold points.
        RowsRejected: a SQL store refused some points for their content
            (``rejected``, with the database's error for each); every other
            point was written.
        StoreError / OSError: the store failed (worth retrying when transient).
    """
    kind = store_kind(storage)
    points = conform_points(table)
    if points.num_rows == 0:
        return 0
    if kind == "parquet":
        _write_parquet(metrics_root(storage), points)
    elif kind == "clickhouse":
        from llamonitor.metrics import _clickhouse_points

        _clickhouse_points.write(storage, points)
    else:
        from llamonitor.metrics import _sql_points

        _sql_points.write(storage, kind, points)
    return int(points.num_rows)


def read_points(
    storage: StorageConfig,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: int | None = None,
    kind: str | None = None,
    source: str | None = None,
) -> pa.Table:
    """Points of the store, in order of series then time.

    Args:
        storage: the store.
        name: only this metric.
        labels: only series whose labels include these (``{"model": "gpt-4o"}``).
        start: points at or after this time (naive: UTC).
        end: points before this time.
        resolution: only this resolution (0 raw, 60, 300, 3600).
        kind: only this kind.
        source: only this source.

    Returns:
        A table of :data:`METRIC_SCHEMA` (empty if the store has none).

    Raises:
        ValueError: a label key that is not a valid label name.
    """
    where, params = point_filters(name, labels, start, end, resolution, kind, source)
    sql = f"SELECT * FROM {{rel}} {where} ORDER BY name, labels, resolution_seconds, timestamp"
    return query_points(
        storage, sql, params, start=start, end=end, sql_filters=(name, start, end, resolution)
    )


def point_filters(
    name: str | None = None,
    labels: dict[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: int | None = None,
    kind: str | None = None,
    source: str | None = None,
) -> tuple[str, list[Any]]:
    """``WHERE ...`` (DuckDB SQL over the points) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if name is not None:
        clauses.append("name = ?")
        params.append(name)
    for key, value in sorted((labels or {}).items()):
        if not _LABEL_KEY.match(key):
            raise ValueError(f"labels: {key!r} is not a label name ([A-Za-z_][A-Za-z0-9_]*)")
        clauses.append("json_extract_string(labels, ?) = ?")
        params.extend([f"$.{key}", str(value)])
    if start is not None:
        clauses.append('"timestamp" >= ?')
        params.append(aware(start))
    if end is not None:
        clauses.append('"timestamp" < ?')
        params.append(aware(end))
    if resolution is not None:
        clauses.append("resolution_seconds = ?")
        params.append(int(resolution))
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def query_points(
    storage: StorageConfig,
    sql: str,
    params: list[Any] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    sql_filters: tuple[str | None, datetime | None, datetime | None, int | None] | None = None,
) -> pa.Table:
    """Run DuckDB ``sql`` with ``{rel}`` the store's points.

    ``start``/``end`` prune the Parquet files read (``sql`` must filter on
    time itself); ``sql_filters`` (name, start, end, resolution) are pushed
    into a SQL store's ``WHERE``. Returns an empty points table when the
    store has no points and the query selects ``*``.
    """
    import duckdb

    kind = store_kind(storage)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if kind == "parquet":
            files = point_files(metrics_root(storage), start, end)
            if not files:
                return empty_points() if "SELECT *" in sql else pa.table({})
            rel = "read_parquet(?, union_by_name = true)"
            result = con.sql(
                sql.replace("{rel}", rel), params=[[str(f) for f in files], *(params or [])]
            )
        else:
            from llamonitor.metrics import _clickhouse_points, _sql_points

            pushed = sql_filters or (None, start, end, None)
            if kind == "clickhouse":
                fetched = _clickhouse_points.fetch(storage, *pushed)
            else:
                fetched = _sql_points.fetch(storage, kind, *pushed)
            con.register("__llamonitor_points", fetched)
            result = con.sql(sql.replace("{rel}", "__llamonitor_points"), params=params or [])
        fetch = getattr(result, "to_arrow_table", None) or result.arrow
        out: pa.Table = fetch()
    finally:
        con.close()
    if "SELECT *" in sql:
        return conform_points(out)
    return out


def point_files(
    root: Path, start: datetime | None = None, end: datetime | None = None
) -> list[Path]:
    """The complete point files under ``root``, of the days ``[start, end)`` touches."""
    return _side_files.day_files(root, start, end)


def aware(value: datetime) -> datetime:
    """``value`` with UTC as its zone if it has none."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


# -- the Parquet writer ---------------------------------------------------------


SAMPLE_VALUES = 65_536
"""Values of a float column compressed both ways to choose its encoding."""


def float_encoding(column: pa.ChunkedArray | pa.Array) -> str:
    """``BYTE_STREAM_SPLIT``, unless zstd compresses the values PLAIN smaller.

    Byte stream split wins on noisy floats (their exponents and high mantissa
    bytes group together); on slowly changing values that recur (a gauge
    walking by cents) zstd finds the repeated 8-byte values better in PLAIN
    layout, by up to 4x. A sample of the column is compressed both ways.
    """
    import numpy as np

    sample = column.slice(0, SAMPLE_VALUES)
    if isinstance(sample, pa.ChunkedArray):
        sample = sample.combine_chunks()
    sample = sample.drop_null()
    if len(sample) < 16:
        return "BYTE_STREAM_SPLIT"
    values = np.asarray(sample.to_numpy(zero_copy_only=False), dtype=np.float64)
    plain = values.tobytes()
    split = values.view(np.uint8).reshape(-1, 8).T.tobytes()
    codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
    plain_size = codec.compress(plain, asbytes=True)
    split_size = codec.compress(split, asbytes=True)
    return "PLAIN" if len(plain_size) < len(split_size) else "BYTE_STREAM_SPLIT"


def parquet_options(table: pa.Table) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` arguments for a points table: the
    encodings of the module doc (``column_encoding`` needs the column out of
    ``use_dictionary``)."""
    encodings: dict[str, str] = {}
    dictionary: list[str] = []
    for f in table.schema:
        if pa.types.is_timestamp(f.type) or pa.types.is_int64(f.type):
            encodings[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_float64(f.type):
            encodings[f.name] = float_encoding(table.column(f.name))
        elif pa.types.is_string(f.type) or pa.types.is_int32(f.type):
            dictionary.append(f.name)
        # binary (the sketch): plain
    return {
        "compression": "zstd",
        "compression_level": ZSTD_LEVEL,
        "use_dictionary": dictionary,
        "column_encoding": encodings,
    }


def sort_points(table: pa.Table) -> pa.Table:
    """Series together, then time: what makes deltas small and runs long."""
    return table.sort_by(
        [
            ("name", "ascending"),
            ("labels", "ascending"),
            ("resolution_seconds", "ascending"),
            ("timestamp", "ascending"),
        ]
    )


def write_points_file(table: pa.Table, path: Path) -> None:
    """Write ``table`` (points, sorted) to ``path`` atomically."""
    options = parquet_options(table)

    def write(f: BinaryIO) -> None:
        import pyarrow.parquet as pq

        pq.write_table(table, f, **options)

    write_atomic(path, write)


def _write_parquet(root: Path, points: pa.Table) -> None:
    _side_files.write_by_day(root, sort_points(points), "points", write_points_file)
