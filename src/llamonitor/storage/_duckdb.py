"""The query side of every store: DuckDB over a store's rows.

A :class:`DuckDBQuery` wraps one *source*, called at each query with the
query's :class:`Filters`. It returns either a *relation* -- the SQL of a table
expression (``read_parquet(?, ...)``) and its parameters -- or Arrow data (a
table or a ``RecordBatchReader``, streamed, not loaded whole) that a SQL store
fetched with the filters pushed down. Every query is written once, in
DuckDB's SQL over ``{rel}``, and runs the same over every store. Every user-provided value goes
into the statement as a ``?`` parameter; identifiers (the ``group_by``
column) are checked against the schema. Each query object owns a fresh
in-memory DuckDB connection, so it shares no state with anything else.

An empty or missing store is not an error: every method returns an empty
result.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa

from llamonitor.schema._columns import SCHEMA
from llamonitor.storage._relations import Relation, jsonl_relation, parquet_relation

__all__ = ["DuckDBQuery", "Filters", "Relation", "Source", "jsonl_relation", "parquet_relation"]

@dataclass(frozen=True)
class Filters:
    """What a query keeps; a SQL store pushes these into its own ``WHERE``.

    ``operation`` is an exact name, or a glob when it holds ``*``, ``?`` or
    ``[``. Times are UTC (naive ones are taken as UTC); ``until`` is exclusive.
    """

    session_id: str | tuple[str, ...] | None = None
    trace_id: str | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    project_name: str | None = None
    columns: frozenset[str] | None = None
    """The columns the statement reads (``None``: any). A store may give only
    these (and no fewer): a SQL store that reads columns one by one
    (ClickHouse) reads just these."""


    def reading(self, columns: frozenset[str] | set[str] | tuple[str, ...]) -> Filters:
        """These filters, for a statement that reads ``columns`` (and those the
        filters themselves test)."""
        return replace(self, columns=frozenset(columns) | FILTER_COLUMNS)


FILTER_COLUMNS = frozenset(
    {"session_id", "trace_id", "operation_name", "timestamp", "project_name"}
)
"""The columns :meth:`DuckDBQuery.where` tests."""

NO_FILTERS = Filters()

Source = Callable[[Filters], "Relation | pa.Table | pa.RecordBatchReader | None"]
"""Builds the store's rows at query time; ``None`` means an empty store."""

DEFAULT_LIMIT = 50
# A span's weight: 1 / the sample rate it was kept at (llamonitor.observability
# records it; a span without one stands for itself). The LIKE spares the JSON
# parse on the rows that do not have the key.
SAMPLE_WEIGHT_SQL = (
    "coalesce(CASE WHEN custom_attributes LIKE '%\"llamonitor.sample_rate\"%' THEN "
    "1.0 / nullif(TRY_CAST(json_extract_string(custom_attributes, "
    "'$.\"llamonitor.sample_rate\"') AS DOUBLE), 0) END, 1.0)"
)

_NOT_GROUPABLE = ("event_id", "span_id", "parent_span_id", "error_message", "custom_attributes")
GROUPABLE_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in SCHEMA if pa.types.is_string(f.type) and f.name not in _NOT_GROUPABLE
)
"""Columns ``stats(group_by=...)`` accepts."""

_ROW = "* REPLACE (coalesce(error, false) AS error)"
"""A span as :meth:`DuckDBQuery.events` / :meth:`~DuckDBQuery.trace` return it:
``error`` a bool (stored, it is TRUE or NULL; see ``SCHEMA_VERSION``)."""

STREAM_BATCH_ROWS = 122_880
"""Rows per record batch of :meth:`DuckDBQuery.stream` (DuckDB's row group size)."""

# A file listed, then removed by a concurrent compaction before DuckDB opens
# it, is an IOException: if the store's file list changed, read it again --
# for as long as it keeps changing, up to a deadline (a store compacted in a
# tight loop on a loaded machine can change many times in a row; a count of
# retries ran out there). A file list that did not change is a real error.
_RETRY_SECONDS = 10.0
_RETRY_SLEEP_SECONDS = 0.005
_RETRY_SLEEP_MAX_SECONDS = 0.1


def _again(attempt: int, deadline: float) -> bool:
    """Sleep a growing pause and say whether to read again (before ``deadline``)."""
    if time.monotonic() >= deadline:
        return False
    time.sleep(min(_RETRY_SLEEP_SECONDS * attempt, _RETRY_SLEEP_MAX_SECONDS))
    return True


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


def _sessions(session_id: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    return session_id if session_id is None or isinstance(session_id, str) else tuple(session_id)


def _fetch(result: Any) -> pa.Table:
    fetch = getattr(result, "to_arrow_table", None) or result.arrow
    table: pa.Table = fetch()
    return table


class DuckDBQuery:
    """Typed queries over a span table.

    Args:
        source: a :data:`Relation`, ``None`` (an empty store), or a
            :data:`Source` called with the query's filters at each query, so
            rows written since are seen.

    Times are UTC ``datetime`` objects; a naive ``since``/``until`` is taken
    as UTC. Durations are milliseconds.
    """

    def __init__(self, source: Relation | Source | None) -> None:
        self._source: Source = source if callable(source) else (lambda _filters: source)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()  # one DuckDB connection is not for concurrent use

    def close(self) -> None:
        self._con.close()

    def interrupt(self) -> None:
        """Stop the statement running on this object's connection (from another
        thread); it raises ``duckdb.InterruptException`` to its caller."""
        self._con.interrupt()

    def __enter__(self) -> DuckDBQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------

    def run(
        self, sql: str, params: Sequence[Any] = (), filters: Filters = NO_FILTERS
    ) -> pa.Table | None:
        """Run ``sql`` with ``{rel}`` replaced by the store's rows.

        ``filters`` are handed to the source (a SQL store fetches only those
        rows); ``sql`` must apply them too (see :meth:`where`). Returns
        ``None`` if the store is empty.
        """
        deadline = time.monotonic() + _RETRY_SECONDS
        for attempt in itertools.count():
            relation = self._source(filters)
            if relation is None:
                return None
            try:
                with self._lock:
                    if isinstance(relation, tuple):
                        rel_sql, rel_params = relation
                        result = self._con.sql(
                            sql.replace("{rel}", rel_sql), params=[*rel_params, *params]
                        )
                        return _fetch(result)
                    self._con.register("__llamonitor_rows", relation)
                    try:
                        result = self._con.sql(
                            sql.replace("{rel}", "__llamonitor_rows"), params=list(params)
                        )
                        return _fetch(result)
                    finally:
                        self._con.unregister("__llamonitor_rows")
            except duckdb.IOException as exc:
                if self._source(filters) != relation and _again(attempt, deadline):
                    continue  # the files changed under us: read the new set
                if "No files found" in str(exc) or "needs at least one file" in str(exc):
                    return None
                raise
        return None  # pragma: no cover - the loop always returns

    _run = run

    def stream(
        self,
        sql: str,
        params: Sequence[Any] = (),
        filters: Filters = NO_FILTERS,
        batch_rows: int = STREAM_BATCH_ROWS,
    ) -> Generator[pa.RecordBatch, None, None]:
        """Like :meth:`run`, but yield the result in record batches as DuckDB
        produces them, so that a large result is never held whole.

        The stream runs on a cursor of its own (a second connection to the
        same in-memory database), so other statements of this object run
        meanwhile, from other threads: the consumer's work between batches
        overlaps them. Close the iterator when done early (use
        ``contextlib.closing``). Yields nothing if the store is empty.
        """
        deadline = time.monotonic() + _RETRY_SECONDS
        for attempt in itertools.count():
            relation = self._source(filters)
            if relation is None:
                return
            started = False
            with self._lock:  # a cursor is made from the connection: not concurrently
                cursor = self._con.cursor()
            try:
                cursor.execute("SET TimeZone = 'UTC'")
                if isinstance(relation, tuple):
                    text = sql.replace("{rel}", relation[0])
                    args = [*relation[1], *params]
                else:
                    cursor.register("__llamonitor_rows", relation)
                    text, args = sql.replace("{rel}", "__llamonitor_rows"), list(params)
                result = cursor.sql(text, params=args)
                read = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
                for batch in read(batch_rows):
                    started = True
                    yield batch
                return
            except duckdb.IOException as exc:
                if started:
                    raise
                if self._source(filters) != relation and _again(attempt, deadline):
                    continue  # the files changed under us: read the new set
                if "No files found" in str(exc) or "needs at least one file" in str(exc):
                    return
                raise
            finally:
                cursor.close()

    @staticmethod
    def where(f: Filters) -> tuple[str, list[Any]]:
        """``WHERE ...`` (or ``""``) and its parameters for ``f``."""
        clauses: list[str] = []
        params: list[Any] = []
        if isinstance(f.session_id, str):
            clauses.append("session_id = ?")
            params.append(f.session_id)
        elif f.session_id is not None:
            clauses.append("list_contains(?, session_id)")
            params.append(list(f.session_id))
        if f.trace_id is not None:
            clauses.append("trace_id = ?")
            params.append(f.trace_id)
        if f.operation is not None:
            # A pattern with * or ? is a glob; anything else an exact name.
            glob = any(c in f.operation for c in "*?[")
            clauses.append("operation_name GLOB ?" if glob else "operation_name = ?")
            params.append(f.operation)
        if f.since is not None:
            clauses.append('"timestamp" >= ?')
            params.append(_aware(f.since))
        if f.until is not None:
            clauses.append('"timestamp" < ?')
            params.append(_aware(f.until))
        if f.project_name is not None:
            clauses.append("project_name = ?")
            params.append(f.project_name)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _filtered(self, sql: str, f: Filters, params: Sequence[Any] = ()) -> pa.Table | None:
        """Run ``sql``, whose ``{where}`` is replaced by ``f``'s clause."""
        where, wparams = self.where(f)
        return self.run(sql.replace("{where}", where), [*wparams, *params], f)

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
        f = Filters(_sessions(session_id), trace_id, operation, since, until)
        sql = f'SELECT {_ROW} FROM {{rel}} {{where}} ORDER BY "timestamp" DESC, event_id'
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        table = self._filtered(sql, f, params)
        return [] if table is None else _rows(table)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """All spans of ``trace_id``, in order of start time (empty if unknown)."""
        table = self._filtered(
            # On a tie of start times (same microsecond) the enclosing span lasts longer.
            f'SELECT {_ROW} FROM {{rel}} {{where}} ORDER BY "timestamp", duration_ms DESC, span_id',
            Filters(trace_id=trace_id),
        )
        return [] if table is None else _rows(table)

    def find_trace_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Trace ids starting or ending with ``prefix`` (the CLI shows a 32-hex
        id by its end, see ``llamonitor.schema._ids``), most recent first."""
        table = self._run(
            "SELECT trace_id, max(\"timestamp\") AS last FROM {rel} "
            "WHERE starts_with(trace_id, ?) OR ends_with(trace_id, ?) "
            "GROUP BY trace_id ORDER BY last DESC, trace_id LIMIT ?",
            [prefix, prefix, limit],
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
            ``p95_ms``, ``p99_ms``, ``max_ms``, the sums ``input_tokens``,
            ``output_tokens``, ``total_tokens`` and ``cost_usd`` (``None``
            when no span of the group has one), ``llm_calls`` (spans with
            tokens or a cost), and ``unpriced``: spans with
            tokens but no known price; ``sampled``: spans kept at a sample
            rate below 1 (``custom_attributes["llamonitor.sample_rate"]``,
            set by ``llamonitor.observability``), and the estimates scaled
            back up by it: ``estimated_count`` (each span counts
            ``1 / rate``) and ``estimated_cost_usd``.

        Raises:
            ValueError: ``group_by`` is not a groupable column.
        """
        if group_by is not None and group_by not in GROUPABLE_COLUMNS:
            raise ValueError(f"group_by: {group_by!r} is not one of {list(GROUPABLE_COLUMNS)}")
        f = Filters(_sessions(session_id), since=since, until=until)
        key = f"{group_by}, " if group_by else ""
        sql = (
            f"SELECT {key}count(*) AS count, "
            "count(*) FILTER (WHERE error) AS errors, "
            "CAST(count(*) FILTER (WHERE error) AS DOUBLE) / count(*) AS error_rate, "
            "avg(duration_ms) AS avg_ms, "
            "quantile_cont(duration_ms, 0.5) AS p50_ms, "
            "quantile_cont(duration_ms, 0.95) AS p95_ms, "
            "quantile_cont(duration_ms, 0.99) AS p99_ms, "
            "max(duration_ms) AS max_ms, "
            "CAST(sum(input_tokens) AS BIGINT) AS input_tokens, "
            "CAST(sum(output_tokens) AS BIGINT) AS output_tokens, "
            "CAST(sum(total_tokens) AS BIGINT) AS total_tokens, "
            "sum(cost_usd) AS cost_usd, "
            "count(*) FILTER (WHERE total_tokens IS NOT NULL OR cost_usd IS NOT NULL) "
            "AS llm_calls, "
            "count(*) FILTER (WHERE cost_usd IS NULL AND total_tokens IS NOT NULL) AS unpriced, "
            f"sum({SAMPLE_WEIGHT_SQL}) AS estimated_count, "
            f"count(*) FILTER (WHERE {SAMPLE_WEIGHT_SQL} > 1) AS sampled, "
            f"sum(cost_usd * {SAMPLE_WEIGHT_SQL}) AS estimated_cost_usd "
            "FROM {rel} {where}"
        )
        if group_by:
            sql += f" GROUP BY {group_by} ORDER BY count DESC, {group_by}"
        else:
            sql += " HAVING count(*) > 0"
        table = self._filtered(sql, f)
        return [] if table is None else _rows(table)

    def overview(self, session_id: str | Sequence[str] | None = None) -> dict[str, Any]:
        """Spans, sessions, traces, errors and the time range of the store."""
        table = self._filtered(
            "SELECT count(*) AS spans, count(DISTINCT session_id) AS sessions, "
            "count(DISTINCT trace_id) AS traces, count(*) FILTER (WHERE error) AS errors, "
            'min("timestamp") AS first, max("timestamp") AS last '
            "FROM {rel} {where}",
            Filters(_sessions(session_id)),
        )
        if table is None:
            return dict(spans=0, sessions=0, traces=0, errors=0, first=None, last=None)
        return _rows(table)[0]

