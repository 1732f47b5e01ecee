"""The ClickHouse store's query side.

Two ways of reading, both ``FINAL`` (each span once, however often it was
delivered) unless no partition can hold a copy (:func:`final`):

* **rows streamed to DuckDB**, like every SQL store: the rows the filters
  select (pushed into ClickHouse's ``WHERE``), only the columns the statement
  reads when it says which (:attr:`Filters.columns`), decoded block by block
  into Arrow record batches; DuckDB runs its one SQL over them (``events``,
  ``trace``, the server, the report's structure pass);
* **aggregates computed by ClickHouse** (:meth:`ClickHouseQuery.native`): a
  statement in ClickHouse's SQL over ``{rel}``, the span table as
  :data:`NATIVE_COLUMNS` with the filters applied exactly; only its (small)
  result travels. ``stats``, ``overview``, ``count`` and the report's
  aggregates (:mod:`llamonitor.analysis._sql_clickhouse`) run this way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema._extensions import failed_or_null
from llamonitor.storage import _clickhouse_ddl, _sql_query
from llamonitor.storage._clickhouse_ddl import MICROS_SUFFIX, q
from llamonitor.storage._duckdb import (
    GROUPABLE_COLUMNS,
    NO_FILTERS,
    DuckDBQuery,
    Filters,
    _rows,
    _sessions,
)
from llamonitor.storage._sql import StoreError

_TS = "timestamp"
_TS_ALIAS = "llamonitor_timestamp_us"
_BLOCK_ROWS = _sql_query.CHUNK_ROWS
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

NATIVE_COLUMNS: tuple[str, ...] = (
    "session_id", "trace_id", "span_id", "parent_span_id", "operation_name",
    "operation_type", "project_name", "agent_name", "provider", "model", "duration_ms",
    "error_type", "error_message", "input_tokens", "output_tokens", "total_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "input_cost_usd",
    "output_cost_usd", "cost_usd", "prompt_hash", "custom_attributes",
)
"""The schema columns ``{rel}`` has in a native statement (``NULL`` where the
table lacks one), besides ``ts_us`` (the start, µs since the epoch, Int64) and
``failed`` (``UInt8``: 1 for a failed span, else 0)."""

SAMPLE_WEIGHT = (
    "ifNull(1.0 / nullIf(toFloat64OrNull(if(position(custom_attributes, "
    "'\"llamonitor.sample_rate\"') = 0, NULL, if(startsWith(replaceRegexpAll("
    "visitParamExtractRaw(custom_attributes, 'llamonitor.sample_rate'), '^\\\\s+', ''), '\"'), "
    "visitParamExtractString(custom_attributes, 'llamonitor.sample_rate'), replaceRegexpAll("
    "visitParamExtractRaw(custom_attributes, 'llamonitor.sample_rate'), '^\\\\s+|\\\\s+$', '')))"
    "), 0), 1.0)"
)
"""A span's weight in ClickHouse's SQL (DuckDB's ``SAMPLE_WEIGHT_SQL``): 1 / its
``custom_attributes["llamonitor.sample_rate"]`` (a number, or a string of
one), 1 without one. ClickHouse 18.16 has no JSON path functions: the value is
found with ``visitParamExtract*``, the first ``"llamonitor.sample_rate"`` key
of the text (the top-level one llamonitor writes)."""


def describe(exc: BaseException) -> str:
    """``TypeName: message`` without the server's stack trace."""
    text = str(exc).split("Stack trace:", 1)[0].strip() or repr(exc)
    return f"{type(exc).__name__}: {' '.join(text.split())}"


_PUSHDOWN = _sql_query.Pushdown(quote=q, placeholder=lambda i: f"%(p{i})s", timestamp=lambda t: t)


def _us(value: datetime) -> int:
    return (_sql_query.aware(value) - _EPOCH) // timedelta(microseconds=1)


def _where(f: Filters, exact: bool = False) -> tuple[str, dict[str, Any]]:
    """The filters as ClickHouse's ``WHERE``: the string filters exactly, the
    time range widened to whole seconds (DuckDB applies it exactly) unless
    ``exact`` (then to the microsecond as well), an operation glob left to
    DuckDB. The times are compared as numbers (Unix seconds), which no time
    zone (the server's, the column's) can shift."""
    operation = f.operation
    if operation is not None and any(c in operation for c in "*?["):
        if exact:
            raise ValueError("a ClickHouse native statement takes no operation glob")
        operation = None
    sessions = f.session_id
    many = isinstance(sessions, tuple) and len(sessions) > _sql_query.MAX_PUSHED_SESSIONS
    if many and exact:
        sessions = None
    pushed = Filters(sessions, f.trace_id, operation, None, None, f.project_name)
    where, values = _PUSHDOWN.where(pushed)
    params = {f"p{i + 1}": v for i, v in enumerate(values)}
    clauses = [where[len("WHERE ") :]] if where else []
    if many and exact:
        clauses.append(f"{q('session_id')} IN %(sessions)s")
        params["sessions"] = tuple(f.session_id or ())
    if f.since is not None:
        since = int(_sql_query.aware(f.since).timestamp() // 1)
        clauses.append(f"{q(_TS)} >= {max(0, min(since, _clickhouse_ddl.MAX_DATETIME))}")
    if f.until is not None:
        until = -int(-_sql_query.aware(f.until).timestamp() // 1)  # ceiling
        if until <= 0:
            clauses.append("0")
        elif until <= _clickhouse_ddl.MAX_DATETIME:
            clauses.append(f"{q(_TS)} < {until}")
    if exact and (f.since is not None or f.until is not None):
        us = f"(toInt64(toUInt32({q(_TS)})) * 1000000 + {q(_TS + MICROS_SUFFIX)})"
        if f.since is not None:
            clauses.append(f"{us} >= {_us(f.since)}")
        if f.until is not None:
            clauses.append(f"{us} < {_us(f.until)}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


@cache
def numpy_columns() -> bool:
    """Whether the driver decodes the streamed blocks a column at a time.

    clickhouse-driver's Arrow stream takes its columns from the driver's NumPy
    path (``use_numpy``, the ``clickhouse-driver[numpy]`` extra: numpy and
    pandas): strings as one buffer and offsets, numbers with their null map,
    no Python object per value. Without it every value of a ``Nullable``
    column passes through Python, which made reading rows 4-5 times slower
    (1M spans of the report's structure and agent-graph columns: 14.4 s
    against 3.1 s). Used when both are importable (checked once).
    """
    return all(importlib.util.find_spec(m) is not None for m in ("numpy", "pandas"))


def final(execute: Any, t: Any) -> str:
    """``FINAL`` unless no partition of the table can hold two copies of a span.

    Copies of a span have the same sorting key and partition; a merge keeps
    one. A partition made of one merged part (level above 0) holds none, so
    when every partition is one (after ``OPTIMIZE TABLE ... FINAL``, or once
    the background merges are done) the table is read without ``FINAL``, which
    in 18.16 costs more than the rest of a scan. A part written after this
    check and before the statement reads is read as it is (a redelivered
    batch landing in that moment can be counted twice by that statement).
    """
    try:
        rows = execute(
            "SELECT count() FROM (SELECT partition_id, count() AS parts, min(level) AS lowest "
            "FROM system.parts WHERE active AND database = %(d)s AND table = %(t)s "
            "GROUP BY partition_id) WHERE parts > 1 OR lowest = 0",
            {"d": t.database, "t": t.table},
        )
        return "FINAL" if int(rows[0][0]) else ""
    except Exception:
        return "FINAL"


def _select(
    t: Any, present: set[str], extra: list[pa.Field], f: Filters, final_: str = "FINAL"
) -> tuple[str, Any, pa.Schema]:
    schema = _sql_query.read_schema(extra)
    if f.columns is not None:
        schema = pa.schema([x for x in schema if x.name in f.columns], metadata=schema.metadata)
    exprs = []
    for name in schema.names:
        if name == _TS:
            micros = f" + {q(_TS + MICROS_SUFFIX)}" if _TS + MICROS_SUFFIX in present else ""
            # Not aliased "timestamp": in ClickHouse an alias shadows the column in WHERE.
            exprs.append(f"toInt64(toUInt32({q(_TS)})) * 1000000{micros} AS {q(_TS_ALIAS)}")
        elif name in present:
            exprs.append(q(name))
        else:  # typed: a bare NULL is Nullable(Nothing), which the NumPy path lacks
            ch_type = _clickhouse_ddl.clickhouse_type(schema.field(name).with_nullable(True))
            exprs.append(f"CAST(NULL AS {ch_type}) AS {q(name)}")
    where, params = _where(f)
    sql = f"SELECT {', '.join(exprs or ['1'])} FROM {t.qualified} {final_} {where}"
    return sql, params, schema


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A driver batch with ``schema``'s types: the time as microseconds, the
    booleans from ``UInt8``, an absent column's NULLs typed."""
    if not schema.names:
        return pa.RecordBatch.from_arrays([], schema=schema)
    arrays = []
    for f, col in zip(schema, batch.columns, strict=True):
        if col.type != f.type:
            if pa.types.is_null(col.type):
                col = pa.nulls(len(col), f.type)
            elif pa.types.is_timestamp(f.type):
                col = col.cast(pa.int64()).cast(f.type)
            else:
                col = col.cast(f.type)
        if f.name == "error":
            col = failed_or_null(col)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def open_reader(t: Any, filters: Filters) -> pa.RecordBatchReader | None:
    """The rows ``filters`` select (only ``filters.columns`` if set), or
    ``None`` if the table is not there."""
    client: Any = None
    error: StoreError | None = None
    try:
        client = t.client()
        found = _clickhouse_ddl.columns(client.execute, t.database, t.table)
        if not found:
            client.disconnect()
            return None
        extra = _clickhouse_ddl.extension_fields(found)
        sql, params, schema = _select(t, set(found), extra, filters, final(client.execute, t))
        settings: dict[str, Any] = {"max_block_size": _BLOCK_ROWS}
        if numpy_columns():
            settings["use_numpy"] = True  # a client setting, for this statement only
        reader = client.query_arrow_stream(sql, params, settings=settings, field_metadata=False)
    except Exception as exc:
        error = t.error("query", exc)
    if error is not None:
        if client is not None:
            client.disconnect()
        raise error

    def batches() -> Iterator[pa.RecordBatch]:
        failed: StoreError | None = None
        try:
            for batch in reader:
                if batch.num_rows:
                    yield _conform(batch, schema)
        except Exception as exc:
            failed = StoreError(t.secrets.scrub(f"reading the store failed: {describe(exc)}"))
        finally:
            client.disconnect()
        if failed is not None:
            raise failed

    return pa.RecordBatchReader.from_batches(schema, batches())


def relation(
    t: Any, present: Mapping[str, str], f: Filters, final_: str = "FINAL"
) -> tuple[str, dict[str, Any]]:
    """``{rel}`` of a native statement: :data:`NATIVE_COLUMNS`, ``ts_us`` and
    ``failed`` of the spans ``f`` selects (exactly), ``FINAL``."""
    exprs = []
    for name in NATIVE_COLUMNS:
        if name in present:
            exprs.append(q(name))
        else:
            field = SCHEMA.field(name)
            ch_type = _clickhouse_ddl.clickhouse_type(field.with_nullable(True))
            exprs.append(f"CAST(NULL AS {ch_type}) AS {q(name)}")
    micros = f" + {q(_TS + MICROS_SUFFIX)}" if _TS + MICROS_SUFFIX in present else ""
    exprs.append(f"toInt64(toUInt32({q(_TS)})) * 1000000{micros} AS ts_us")
    exprs.append("toUInt8(ifNull(`error`, 0) != 0) AS failed" if "error" in present
                 else "toUInt8(0) AS failed")
    where, params = _where(f, exact=True)
    return f"(SELECT {', '.join(exprs)} FROM {t.qualified} {final_} {where})", params


class ClickHouseQuery(DuckDBQuery):
    """The query side of a ClickHouse span table (see the module docstring)."""

    native_dialect = "clickhouse"
    """Statements of :meth:`native` are ClickHouse's SQL (18.16 and later)."""

    def __init__(self, target: Any) -> None:
        super().__init__(lambda filters: open_reader(target, filters))
        self._t = target

    def native(
        self, sql: str, params: Mapping[str, Any] | None = None, filters: Filters = NO_FILTERS
    ) -> pa.Table | None:
        """Run ``sql`` (ClickHouse's SQL, parameters as ``%(name)s``; a literal
        ``%`` written ``%%``) in ClickHouse, ``{rel}`` replaced by the spans
        ``filters`` select (see :func:`relation`); its result as an Arrow
        table, or ``None`` if the table is not there.

        Raises:
            StoreError: the query failed (scrubbed).
            ValueError: ``filters`` has an operation glob.
        """
        t = self._t
        client: Any = None
        error: StoreError | None = None
        try:
            client = t.client()
            found = _clickhouse_ddl.columns(client.execute, t.database, t.table)
            if not found:
                return None
            rel, rparams = relation(t, found, filters, final(client.execute, t))
            table: pa.Table = client.query_arrow(
                sql.replace("{rel}", rel), {**rparams, **(params or {})}, field_metadata=False
            )
        except ValueError:
            raise
        except Exception as exc:
            error = t.error("query", exc)
        finally:
            if client is not None:
                client.disconnect()
        if error is not None:
            raise error
        return table

    def count(self) -> int:
        table = self.native("SELECT count() AS n FROM {rel}")
        return 0 if table is None else int(table.column("n")[0].as_py())

    def overview(self, session_id: Any = None) -> dict[str, Any]:
        table = self.native(
            "SELECT count() AS spans, uniqExact(session_id) AS sessions, "
            "uniqExact(trace_id) AS traces, countIf(failed = 1) AS errors, "
            "min(ts_us) AS first, max(ts_us) AS last FROM {rel}",
            filters=Filters(_sessions(session_id)),
        )
        row = _native_rows(table, times=("first", "last"))
        if not row or not row[0]["spans"]:
            return dict(spans=0, sessions=0, traces=0, errors=0, first=None, last=None)
        return row[0]

    def stats(
        self,
        since: Any = None,
        until: Any = None,
        group_by: str | None = "operation_name",
        session_id: Any = None,
    ) -> list[dict[str, Any]]:
        """:meth:`DuckDBQuery.stats`, computed by ClickHouse (the same figures;
        the percentiles interpolated as ``quantile_cont`` does, from the sorted
        durations of each group)."""
        if group_by is not None and group_by not in GROUPABLE_COLUMNS:
            raise ValueError(f"group_by: {group_by!r} is not one of {list(GROUPABLE_COLUMNS)}")
        f = Filters(_sessions(session_id), since=since, until=until)
        table = self.native(stats_sql(group_by), filters=f)
        return _native_rows(table)


def _quantile(q_: float) -> str:
    """``quantile_cont(duration_ms, q_)`` over the sorted durations ``s`` (``m`` of them)."""
    rn = f"((m - 1) * {q_!r})"
    lo = f"s[toUInt64(floor({rn})) + 1]"
    hi = f"s[toUInt64(ceil({rn})) + 1]"
    return f"if(m = 0, NULL, {lo} + ({rn} - floor({rn})) * ({hi} - {lo}))"


_STATS_COLUMNS = (
    "count", "errors", "error_rate", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms",
    "input_tokens__", "output_tokens__", "total_tokens__", "cost_usd__", "llm_calls",
    "unpriced", "estimated_count", "sampled", "estimated_cost_usd",
)


def stats_sql(group_by: str | None) -> str:
    """``stats()`` in ClickHouse's SQL (columns as ``DuckDBQuery.stats``).

    The sorted durations (``s``) the percentiles are read from stay in the
    server: the outer ``SELECT`` leaves them out (sent, they were every
    span's duration, decoded by the client: half of ``stats()``'s time)."""
    key = f"{q(group_by)}, " if group_by else ""
    w = SAMPLE_WEIGHT
    sql = (
        f"SELECT {key}count() AS count, countIf(failed = 1) AS errors, "
        "countIf(failed = 1) / count() AS error_rate, avg(duration_ms) AS avg_ms, "
        "arraySort(groupArray(duration_ms)) AS s, length(s) AS m, "
        f"{_quantile(0.5)} AS p50_ms, {_quantile(0.95)} AS p95_ms, "
        f"{_quantile(0.99)} AS p99_ms, max(duration_ms) AS max_ms, "
        "sum(input_tokens) AS input_tokens__, sum(output_tokens) AS output_tokens__, "
        "sum(total_tokens) AS total_tokens__, sum(cost_usd) AS cost_usd__, "
        "countIf(isNotNull(total_tokens) OR isNotNull(cost_usd)) AS llm_calls, "
        "countIf(isNull(cost_usd) AND isNotNull(total_tokens)) AS unpriced, "
        f"sum({w}) AS estimated_count, countIf({w} > 1) AS sampled, "
        f"sum(cost_usd * {w}) AS estimated_cost_usd FROM {{rel}}"
    )
    names = ([group_by] if group_by else []) + list(_STATS_COLUMNS)
    outer = f"SELECT {', '.join(q(n) for n in names)} FROM ("
    if group_by:
        return f"{outer}{sql} GROUP BY {q(group_by)}) ORDER BY `count` DESC, {q(group_by)}"
    return f"{outer}{sql} HAVING count() > 0)"


_DROP = ("s", "m")
# A native result's column named ``x__`` is ``x`` (in ClickHouse an alias named
# as a column shadows it in the whole statement).


def _native_rows(table: pa.Table | None, times: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a native result: helper columns dropped, ``times`` (µs) as UTC times."""
    if table is None:
        return []
    for name in _DROP:
        if name in table.column_names:
            table = table.drop_columns([name])
    renamed = [n[:-2] if n.endswith("__") else n for n in table.column_names]
    table = table.rename_columns(renamed)
    for name in times:
        i = table.column_names.index(name)
        col = table.column(name).cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        table = table.set_column(i, name, col)
    return _rows(table)
