"""Data the original system (llamonitor-async 0.2.0) writes, made the way it
makes it, for the tests of llamonitor reading and migrating it.

- Parquet: its ``ParquetBackend`` turns each event into a flat record, makes a
  pandas DataFrame and calls ``df.to_parquet(path, "pyarrow", None, "snappy")``
  under ``output_dir/YYYY-MM-DD/events_YYYYmmdd_HHMMSS_ffffff.parquet``. The
  positional arguments mean no compression and the index written as a column
  (``__index_level_0__``); pandas makes a naive ``timestamp[ns]`` of its
  ``datetime.utcnow()``, a float column of an int column holding a None, and
  Arrow's null type of a column of Nones. :func:`write_parquet` writes the same
  file with pyarrow alone (pandas is not a dependency of ours).
- SQL: its ``metric_events`` table (the DDL of its PostgreSQL and MySQL
  backends) and its INSERT of 25 values per event.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2024, 5, 1, 12, 0)  # naive UTC, as datetime.utcnow() gives

RECORD_COLUMNS = (
    "event_id", "schema_version", "session_id", "trace_id", "span_id", "parent_span_id",
    "operation_name", "operation_type", "timestamp", "duration_ms", "error", "error_type",
    "text_char_count", "text_word_count", "text_byte_size", "text_line_count",
    "text_custom_metrics", "image_count", "image_total_pixels", "image_file_size_bytes",
    "image_width", "image_height", "image_format", "image_custom_metrics", "custom_attributes",
)  # fmt: skip


def event(
    i: int, error: str | None = None, chars: int | None = 100, **values: Any
) -> dict[str, Any]:
    """One event as the original's backends flatten it (a record)."""
    text = chars is not None
    record: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=i + 1)),
        "schema_version": "1.0.0",
        "session_id": "legacy-session",
        "trace_id": "legacy-trace",
        "span_id": f"span-{i}",
        "parent_span_id": None if i == 0 else "span-0",
        "operation_name": "legacy_op" if i else "legacy_root",
        "operation_type": "llm_call",
        "timestamp": T0 + timedelta(seconds=i),
        "duration_ms": 10.0 + i,
        "error": error,
        "error_type": "ValueError" if error is not None else None,
        "text_char_count": chars,
        "text_word_count": chars // 5 if text else None,
        "text_byte_size": chars if text else None,
        "text_line_count": 1 if text else None,
        "text_custom_metrics": json.dumps({}) if text else None,
        "image_count": None,
        "image_total_pixels": None,
        "image_file_size_bytes": None,
        "image_width": None,
        "image_height": None,
        "image_format": None,
        "image_custom_metrics": None,
        "custom_attributes": json.dumps({"model": "gpt-4"}),
    }
    record.update(values)
    return record


def _column(values: list[Any]) -> pa.Array:
    """The Arrow column pandas makes of a DataFrame column of these values."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values))  # an all-None object column: Arrow's null type
    if isinstance(present[0], datetime):
        return pa.array(values, pa.timestamp("ns"))
    if isinstance(present[0], bool):
        return pa.array(values, pa.bool_())
    if isinstance(present[0], int):
        # An int column with a None is float64 (NaN) in pandas.
        return pa.array(values, pa.int64() if len(present) == len(values) else pa.float64())
    if isinstance(present[0], float):
        return pa.array(values, pa.float64())
    return pa.array(values, pa.string())


def write_parquet(output_dir: Path, records: list[dict[str, Any]], written: datetime) -> Path:
    """Write ``records`` as one file of the original's ``ParquetBackend``
    (partition of the first event's date, file named by ``written``)."""
    directory = output_dir / records[0]["timestamp"].strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"events_{written.strftime('%Y%m%d_%H%M%S_%f')}.parquet"
    names = [*RECORD_COLUMNS, *(k for k in records[0] if k not in RECORD_COLUMNS)]
    arrays = [_column([r.get(n) for r in records]) for n in names]
    arrays.append(pa.array(range(len(records)), pa.int64()))
    pandas_meta = {"index_columns": ["__index_level_0__"], "pandas_version": "2.3.3"}
    schema = pa.schema(
        [pa.field(n, a.type) for n, a in zip([*names, "__index_level_0__"], arrays, strict=True)],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path, compression=None)
    return path


# -- SQL: the original backends' table and INSERT ------------------------------

POSTGRES_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    event_id UUID PRIMARY KEY,
    schema_version VARCHAR(20) NOT NULL,
    session_id VARCHAR(255) NOT NULL,
    trace_id VARCHAR(255) NOT NULL,
    span_id VARCHAR(255) NOT NULL,
    parent_span_id VARCHAR(255),
    operation_name VARCHAR(255) NOT NULL,
    operation_type VARCHAR(50) NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    duration_ms FLOAT,
    text_char_count INTEGER,
    text_word_count INTEGER,
    text_byte_size INTEGER,
    text_line_count INTEGER,
    text_custom_metrics JSONB,
    image_count INTEGER,
    image_total_pixels BIGINT,
    image_file_size_bytes BIGINT,
    image_width INTEGER,
    image_height INTEGER,
    image_format VARCHAR(20),
    image_custom_metrics JSONB,
    error TEXT,
    error_type VARCHAR(255),
    custom_attributes JSONB,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""

POSTGRES_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_{table}_session ON {table}(session_id, timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS idx_{table}_trace ON {table}(trace_id, timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS idx_{table}_span ON {table}(span_id)",
    "CREATE INDEX IF NOT EXISTS idx_{table}_parent_span ON {table}(parent_span_id)",
    "CREATE INDEX IF NOT EXISTS idx_{table}_timestamp ON {table}(timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS idx_{table}_operation ON {table}(operation_name, timestamp DESC)",
)

MYSQL_DDL = """
CREATE TABLE IF NOT EXISTS `{table}` (
    event_id CHAR(36) PRIMARY KEY,
    schema_version VARCHAR(20) NOT NULL,
    session_id VARCHAR(255) NOT NULL,
    trace_id VARCHAR(255) NOT NULL,
    span_id VARCHAR(255) NOT NULL,
    parent_span_id VARCHAR(255),
    operation_name VARCHAR(255) NOT NULL,
    operation_type VARCHAR(50) NOT NULL,
    timestamp DATETIME(6) NOT NULL,
    duration_ms DOUBLE,
    text_char_count INT,
    text_word_count INT,
    text_byte_size INT,
    text_line_count INT,
    text_custom_metrics JSON,
    image_count INT,
    image_total_pixels BIGINT,
    image_file_size_bytes BIGINT,
    image_width INT,
    image_height INT,
    image_format VARCHAR(20),
    image_custom_metrics JSON,
    error TEXT,
    error_type VARCHAR(255),
    custom_attributes JSON,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    INDEX idx_session (session_id, timestamp),
    INDEX idx_trace (trace_id, timestamp),
    INDEX idx_span (span_id),
    INDEX idx_parent_span (parent_span_id),
    INDEX idx_timestamp (timestamp),
    INDEX idx_operation (operation_name, timestamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

INSERT_COLUMNS = (
    "event_id, schema_version, session_id, trace_id, span_id, parent_span_id, "
    "operation_name, operation_type, timestamp, duration_ms, "
    "text_char_count, text_word_count, text_byte_size, text_line_count, text_custom_metrics, "
    "image_count, image_total_pixels, image_file_size_bytes, image_width, image_height, "
    "image_format, image_custom_metrics, error, error_type, custom_attributes"
)
_INSERT_ORDER = [c.strip() for c in INSERT_COLUMNS.split(",")]


def insert_sql(kind: str, table: str) -> str:
    """The original's INSERT (``$n`` for asyncpg, ``%s`` for aiomysql)."""
    marks = [f"${i + 1}" if kind == "postgres" else "%s" for i in range(len(_INSERT_ORDER))]
    quoted = f"`{table}`" if kind == "mysql" else table
    return f"INSERT INTO {quoted} ({INSERT_COLUMNS}) VALUES ({', '.join(marks)})"


def insert_values(record: dict[str, Any], kind: str) -> tuple[Any, ...]:
    """The 25 values the original binds for one event (its MySQL backend
    writes no custom-metrics JSON for an empty dict)."""
    values = dict(record)
    if kind == "mysql" and values["text_custom_metrics"] == "{}":
        values["text_custom_metrics"] = None
    return tuple(values[c] for c in _INSERT_ORDER)
