"""The query side of the file stores: DuckDB over Parquet or JSON Lines files.

A :class:`DuckDBQuery` wraps one *relation*: the SQL of a table expression
(``read_parquet(?, ...)``) and its parameters. Every user-provided value goes
into the statement as a ``?`` parameter; identifiers (the ``group_by``
column) are checked against the schema. Each query object owns a fresh
in-memory DuckDB connection, so it shares no state with anything else.

An empty or missing store is not an error: every method returns an empty
result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from llamonitor.schema._columns import SCHEMA

Relation = tuple[str, list[Any]]
"""The SQL of a table expression and its ``?`` parameters."""

RelationSource = Callable[[], "Relation | None"]
"""Builds the relation at query time; ``None`` means an empty store."""

DEFAULT_LIMIT = 50
_NOT_GROUPABLE = ("event_id", "span_id", "parent_span_id", "error_message", "custom_attributes")
GROUPABLE_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in SCHEMA if pa.types.is_string(f.type) and f.name not in _NOT_GROUPABLE
)
"""Columns ``stats(group_by=...)`` accepts."""

# A file listed, then removed by a concurrent compaction before DuckDB opens
# it, is an IOException: if the store's file list changed, read it again.
_RETRIES = 8
_RETRY_SLEEP_SECONDS = 0.005

_DUCK_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}


def parquet_relation(files: Sequence[str | Path]) -> Relation | None:
    """``read_parquet`` over ``files`` (``None`` when there are none)."""
    if not files:
        return None
    return (
        "read_parquet(?, union_by_name = true, hive_partitioning = false)",
        [[str(f) for f in files]],
    )


def jsonl_relation(path: str | Path) -> Relation | None:
    """``read_json`` over one JSON Lines file written by ``JSONLBackend``.

    Column types come from the Arrow schema (not sniffed), so a file where
    some keys are always null still reads with the right types.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return None
    except OSError:
        return None
    columns = ", ".join(
        f"'{f.name}': '{'JSON' if f.name == 'custom_attributes' else _DUCK_TYPES[str(f.type)]}'"
        for f in SCHEMA
    )
    sql = (
        "(SELECT * REPLACE (CAST(custom_attributes AS VARCHAR) AS custom_attributes) "
        f"FROM read_json(?, format = 'newline_delimited', columns = {{{columns}}}))"
    )
    return sql, [str(p)]


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)  # naive times are UTC, like the store


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime) and value.tzinfo is not None:
                row[key] = value.astimezone(timezone.utc)
    return rows


class DuckDBQuery:
    """Typed queries over a span table.

    Args:
        source: a :data:`Relation`, ``None`` (an empty store), or a callable
            returning either, called at each query so files written since are
            seen.

    Times are UTC ``datetime`` objects; a naive ``since``/``until`` is taken
    as UTC. Durations are milliseconds.
    """

    def __init__(self, source: Relation | RelationSource | None) -> None:
        self._source: RelationSource = source if callable(source) else (lambda: source)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()  # one DuckDB connection is not for concurrent use

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> DuckDBQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] = ()) -> pa.Table | None:
        """Run ``sql`` with ``{rel}`` replaced by the store; ``None`` if the store is empty."""
        for attempt in range(_RETRIES + 1):
            relation = self._source()
            if relation is None:
                return None
            rel_sql, rel_params = relation
            try:
                with self._lock:
                    result = self._con.sql(
                        sql.replace("{rel}", rel_sql), params=[*rel_params, *params]
                    )
                    fetch = getattr(result, "to_arrow_table", None) or result.arrow
                    table: pa.Table = fetch()
                    return table
            except duckdb.IOException as exc:
                if attempt < _RETRIES and self._source() != relation:
                    time.sleep(_RETRY_SLEEP_SECONDS * attempt)
                    continue  # the files changed under us: read the new set
                if "No files found" in str(exc) or "needs at least one file" in str(exc):
                    return None
                raise
        return None  # pragma: no cover - the loop always returns

    @staticmethod
    def _where(
        session_id: str | Sequence[str] | None = None,
        trace_id: str | None = None,
        operation: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if isinstance(session_id, str):
            clauses.append("session_id = ?")
            params.append(session_id)
        elif session_id is not None:
            clauses.append("list_contains(?, session_id)")
            params.append(list(session_id))
        if trace_id is not None:
            clauses.append("trace_id = ?")
            params.append(trace_id)
        if operation is not None:
            # A pattern with * or ? is a glob; anything else an exact name.
            glob = any(c in operation for c in "*?[")
            clauses.append("operation_name GLOB ?" if glob else "operation_name = ?")
            params.append(operation)
        if since is not None:
            clauses.append('"timestamp" >= ?')
            params.append(_aware(since))
        if until is not None:
            clauses.append('"timestamp" < ?')
            params.append(_aware(until))
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    # -- queries ---------------------------------------------------------------

    def count(self) -> int:
        """Number of spans in the store."""
        table = self._run("SELECT count(*) AS n FROM {rel}")
        return 0 if table is None else int(table.column("n")[0].as_py())

    def events(
        self,
        session_id: str | Sequence[str] | None = None,
        trace_id: str | None = None,
        operation: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = DEFAULT_LIMIT,
    ) -> list[dict[str, Any]]:
        """The latest spans, newest first.

        Args:
            session_id: only this session (or any of these sessions).
            trace_id: only this trace.
            operation: an operation name, or a glob such as ``tool.*``.
            since: spans that started at or after this time.
            until: spans that started before this time.
            limit: at most this many rows (``None``: all).

        Returns:
            One dict per span, keyed by column name.
        """
        where, params = self._where(session_id, trace_id, operation, since, until)
        sql = f'SELECT * FROM {{rel}} {where} ORDER BY "timestamp" DESC, event_id'
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        table = self._run(sql, params)
        return [] if table is None else _rows(table)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """All spans of ``trace_id``, in order of start time (empty if unknown)."""
        table = self._run(
            # On a tie of start times (same microsecond) the enclosing span lasts longer.
            'SELECT * FROM {rel} WHERE trace_id = ? '
            'ORDER BY "timestamp", duration_ms DESC, span_id',
            [trace_id],
        )
        return [] if table is None else _rows(table)

    def find_trace_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Trace ids starting with ``prefix``, most recent first."""
        table = self._run(
            "SELECT trace_id, max(\"timestamp\") AS last FROM {rel} "
            "WHERE starts_with(trace_id, ?) GROUP BY trace_id ORDER BY last DESC, trace_id LIMIT ?",
            [prefix, limit],
        )
        return [] if table is None else [str(t) for t in table.column("trace_id").to_pylist()]

    def stats(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = "operation_name",
        session_id: str | Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Counts, errors and duration percentiles per group.

        Percentiles interpolate linearly between the two nearest durations
        (``quantile_cont``, like ``numpy.percentile``'s default).

        Args:
            since: spans that started at or after this time.
            until: spans that started before this time.
            group_by: a string column (:data:`GROUPABLE_COLUMNS`), or ``None``
                for one row over all spans.
            session_id: only this session (or these sessions).

        Returns:
            One dict per group, most spans first: the group column, ``count``,
            ``errors``, ``error_rate`` (0..1), ``avg_ms``, ``p50_ms``,
            ``p95_ms``, ``p99_ms``, ``max_ms``.

        Raises:
            ValueError: ``group_by`` is not a groupable column.
        """
        if group_by is not None and group_by not in GROUPABLE_COLUMNS:
            raise ValueError(f"group_by: {group_by!r} is not one of {list(GROUPABLE_COLUMNS)}")
        where, params = self._where(session_id, None, None, since, until)
        key = f"{group_by}, " if group_by else ""
        sql = (
            f"SELECT {key}count(*) AS count, "
            "count(*) FILTER (WHERE error) AS errors, "
            "CAST(count(*) FILTER (WHERE error) AS DOUBLE) / count(*) AS error_rate, "
            "avg(duration_ms) AS avg_ms, "
            "quantile_cont(duration_ms, 0.5) AS p50_ms, "
            "quantile_cont(duration_ms, 0.95) AS p95_ms, "
            "quantile_cont(duration_ms, 0.99) AS p99_ms, "
            "max(duration_ms) AS max_ms "
            f"FROM {{rel}} {where}"
        )
        if group_by:
            sql += f" GROUP BY {group_by} ORDER BY count DESC, {group_by}"
        else:
            sql += " HAVING count(*) > 0"
        table = self._run(sql, params)
        return [] if table is None else _rows(table)

    def overview(self, session_id: str | Sequence[str] | None = None) -> dict[str, Any]:
        """Spans, sessions, traces, errors and the time range of the store."""
        where, params = self._where(session_id)
        table = self._run(
            "SELECT count(*) AS spans, count(DISTINCT session_id) AS sessions, "
            "count(DISTINCT trace_id) AS traces, count(*) FILTER (WHERE error) AS errors, "
            'min("timestamp") AS first, max("timestamp") AS last '
            f"FROM {{rel}} {where}",
            params,
        )
        if table is None:
            return dict(spans=0, sessions=0, traces=0, errors=0, first=None, last=None)
        return _rows(table)[0]

