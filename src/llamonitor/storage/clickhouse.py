"""ClickHouse store (``clickhouse-driver``, the native protocol; the
``[clickhouse]`` extra): writer and query side.

``StorageConfig(backend="clickhouse",
connection_string="clickhouse://user:password@host:9000/database")``
(the database defaults to ``default``; the URL's query string takes the
driver's settings: ``secure=True``, ``compression=lz4``,
``connect_timeout=...``, ``send_receive_timeout=...``).

The table (:mod:`._clickhouse_ddl`) is derived from the one schema: a
``ReplacingMergeTree`` partitioned by month and ordered by (trace, start time,
event id). A batch is one columnar ``INSERT`` (the native protocol sends each
column as one block). ClickHouse has no unique key to refuse a second copy:
a batch written twice (a retry whose first attempt did land, a spool replay,
a broker's redelivery) leaves two copies of its rows until a merge keeps one,
and every read says ``FINAL``, so no query ever counts a span twice.

The query side streams the rows the filters select (pushed into ClickHouse's
``WHERE``) to DuckDB as Arrow record batches (the driver decodes each native
block into Arrow with numpy), like the other SQL stores; the report, ``stats``,
``trace`` and the server run their one DuckDB SQL over them.

Tested against ClickHouse 18.16 (Debian bookworm's package); see
``docs/clickhouse.md`` for what that server version does and does not cover.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema._extensions import rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.schema.events import MetricEvent
from llamonitor.storage import _clickhouse_ddl, _sql, _sql_ddl, _sql_write
from llamonitor.storage._clickhouse_ddl import MICROS_SUFFIX, q
from llamonitor.storage._clickhouse_query import ClickHouseQuery
from llamonitor.storage._clickhouse_query import describe as _describe
from llamonitor.storage._sql import Secrets, StoreError
from llamonitor.storage.base import RowsRejected, StorageBackend

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "ClickHouseBackend",
    "ClickHouseQuery",
    "RECEIVE_TIMEOUT_SECONDS",
    "query",
]

CONNECT_TIMEOUT_SECONDS = 10.0
"""The driver's ``connect_timeout`` unless the connection string sets it."""
RECEIVE_TIMEOUT_SECONDS = 60.0
"""The driver's ``send_receive_timeout`` unless the connection string sets it:
a server that stops answering fails the write (retried, then spooled)."""

_MISSING_CODES = (60, 16, 81, 47)  # unknown table, column, database; unknown identifier
_TS = "timestamp"
_BASE = frozenset(SCHEMA.names)


class _Target:
    """One span table: names, the driver, and how its errors are classified."""

    def __init__(self, config: StorageConfig) -> None:
        dsn = _sql.connection_string(config, "clickhouse")
        self.secrets = Secrets(dsn)
        self.driver = _sql.require_driver("clickhouse_driver", "clickhouse", "clickhouse")
        self.errors = _sql.require_driver("clickhouse_driver.errors", "clickhouse", "clickhouse")
        parts = urlsplit(dsn)
        self.database = unquote(parts.path.lstrip("/")) or "default"
        _sql.check_identifier("storage.connection_string (database)", self.database)
        if config.schema_name:
            raise ConfigurationError(
                "storage.schema_name",
                "ClickHouse has databases, not schemas: name the database in the "
                "connection string (clickhouse://host:9000/database) and leave schema_name unset",
            )
        if config.options:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(sorted(config.options))} for the clickhouse "
                "backend; put the driver's settings in the connection string's query "
                "(?secure=True&compression=lz4&connect_timeout=5)",
            )
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        self.qualified = f"{q(self.database)}.{q(self.table)}"
        self.label = f"table {self.database}.{self.table}"
        query = f"{parts.query}&" if parts.query else ""
        if "connect_timeout=" not in query:
            query += f"connect_timeout={CONNECT_TIMEOUT_SECONDS:g}&"
        if "send_receive_timeout=" not in query:
            query += f"send_receive_timeout={RECEIVE_TIMEOUT_SECONDS:g}&"
        self.url = parts._replace(scheme="clickhouse", query=query.rstrip("&")).geturl()

    def client(self) -> Any:
        return self.driver.Client.from_url(self.url)

    def kind(self, exc: BaseException) -> str:
        code = getattr(exc, "code", None)
        if isinstance(exc, self.errors.ServerException) and code in _MISSING_CODES:
            return "missing"
        return "other"

    def error(self, doing: str, exc: BaseException) -> StoreError:
        e = self.errors
        code = getattr(exc, "code", None)
        transient = (
            isinstance(exc, (e.NetworkError, e.SocketTimeoutError, EOFError))
            or _sql.network_error(exc)
            or self.kind(exc) == "missing"
        )
        return StoreError(
            self.secrets.scrub(f"clickhouse {self.label}: {doing}: {_describe(exc)}"),
            sqlstate=str(code) if code is not None else None,
            transient=transient,
        )


class ClickHouseBackend(StorageBackend):
    """Writes spans to a ClickHouse table (default ``metric_events``).

    The methods are ``async def`` for the interface but do blocking work (the
    driver is synchronous): the transport runs them on the sink's own thread.
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config)
        self._t = _Target(self.config)
        self._client: Any = None
        self._lock = threading.Lock()
        self._ready = False
        self._columns: set[str] = set()

    def __repr__(self) -> str:
        return f"ClickHouseBackend({self._t.secrets.masked}, {self._t.label})"

    def _execute(self, sql: str, params: Any = None, columnar: bool = False) -> Any:
        if self._client is None:
            self._client = self._t.client()
        return self._client.execute(sql, params, columnar=columnar)

    def _guarded(self, doing: str, fn: Callable[[], None]) -> None:
        error: StoreError | None = None
        with self._lock:
            try:
                fn()
                return
            except (ConfigurationError, RowsRejected, StoreError):
                raise
            except Exception as exc:
                if self._t.kind(exc) == "missing":
                    self._ready = False
                self._drop_client()
                error = self._t.error(doing, exc)
        raise error

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            except Exception:
                pass  # the connection is gone already

    # -- setup -------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect, create the meta and span tables, or migrate."""
        self._guarded("initialize", self._setup)

    def _setup(self) -> None:
        t = self._t
        self._columns = _clickhouse_ddl.setup(self._execute, t.database, t.table, t.label)
        self._ready = True

    # -- writing -----------------------------------------------------------

    async def write_table(self, table: pa.Table) -> None:
        """Write a batch as one columnar ``INSERT``; rows whose start time a
        ``DateTime`` cannot hold (before 1970, after 2106) raise
        :class:`RowsRejected` after the others are written."""
        if table.num_rows == 0:
            return
        table = _sql_write.conform(table)
        written, reasons = _extension_columns(table)
        seconds, micros = _clickhouse_ddl.split_times(table.column(_TS))
        bad = (seconds < 0) | (seconds > _clickhouse_ddl.MAX_DATETIME)
        for i in np.flatnonzero(bad):
            reasons.setdefault(int(i), []).insert(0, _clickhouse_ddl.out_of_range(_TS))
        refused = sorted(reasons)
        if refused:
            keep = np.ones(table.num_rows, dtype=bool)
            keep[refused] = False
            good = written.filter(pa.array(keep))
            seconds, micros = seconds[keep], micros[keep]
        else:
            good = written

        def work() -> None:
            if not self._ready:
                self._setup()
            missing = _sql_ddl.missing_columns(good, self._columns)
            if missing:
                t = self._t
                self._columns = _clickhouse_ddl.add_columns(
                    self._execute, t.database, t.table, missing
                )
            if good.num_rows:
                names, columns = _columns(good, seconds, micros)
                sql = f"INSERT INTO {self._t.qualified} ({names}) VALUES"
                self._execute(sql, columns, columnar=True)

        if good.num_rows or not refused:
            self._guarded("write", work)
        if refused:
            raise RowsRejected(table.take(refused), ["; ".join(reasons[i]) for i in refused])

    async def write_batch(self, events: list[MetricEvent]) -> None:
        await self.write_table(rows_table([e.to_row() for e in events]))

    async def health_check(self) -> bool:
        try:
            with self._lock:
                self._execute("SELECT 1")
            return True
        except Exception:
            with self._lock:
                self._drop_client()
            return False

    async def close(self) -> None:
        with self._lock:
            self._drop_client()


_INT64_MAX = 2**63 - 1


def _extension_columns(table: pa.Table) -> tuple[pa.Table, dict[int, list[str]]]:
    """``table`` with its extension columns as the store keeps them, and the
    rows refused (index -> reasons).

    Integers of any width become ``int64``, floats ``float64``, strings and
    booleans stay, anything else (a list, a struct, a date...) becomes JSON
    text, as a metric group's JSON field is stored. Refused (and the column
    left out): a column whose name is not an identifier, for the rows with a
    value in it; an unsigned value beyond ``Int64``, for its row.
    """
    reasons: dict[int, list[str]] = {}

    def refuse(mask: Any, reason: str) -> None:
        for i in np.flatnonzero(np.asarray(mask)):
            reasons.setdefault(int(i), []).append(reason)

    for f in list(table.schema):
        if f.name in _BASE:
            continue
        col = table.column(f.name)
        t = f.type
        i = table.schema.get_field_index(f.name)
        if not _clickhouse_ddl.usable_column(f.name):
            refuse(
                col.is_valid(),
                f"{f.name}: not a usable column name (use letters, digits and '_', not first)",
            )
            table = table.remove_column(i)
            continue
        if pa.types.is_integer(t) and not pa.types.is_int64(t):
            if pa.types.is_uint64(t):
                over = pc.fill_null(pc.greater(col, pa.scalar(_INT64_MAX, t)), False)
                if pc.any(over).as_py():
                    refuse(over, f"{f.name}: {t} value beyond ClickHouse's Int64")
                    col = pc.if_else(over, pa.scalar(None, t), col)
            col = col.cast(pa.int64())
        elif pa.types.is_floating(t) and not pa.types.is_float64(t):
            col = col.cast(pa.float64())
        elif pa.types.is_large_string(t):
            col = col.cast(pa.string())
        elif not (
            pa.types.is_string(t)
            or pa.types.is_boolean(t)
            or pa.types.is_int64(t)
            or pa.types.is_float64(t)
        ):
            col = pa.array([_json_text(v) for v in col.to_pylist()], pa.string())
        else:
            continue
        table = table.set_column(i, pa.field(f.name, col.type, nullable=True), col)
    return table, reasons


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=str)


def _columns(table: pa.Table, seconds: Any, micros: Any) -> tuple[str, Any]:
    """The column list of the ``INSERT`` and its columns, for ``execute(...,
    columnar=True)``: nullable columns null in every row are left out."""
    names: list[str] = []
    data: list[Any] = []
    for f in _sql_write.present_fields(table):
        col = table.column(f.name)
        if f.name == _TS:
            names += [f.name, f.name + MICROS_SUFFIX]
            data += [seconds.tolist(), micros.tolist()]
            continue
        if pa.types.is_boolean(f.type):
            col = col.cast(pa.uint8())
        names.append(f.name)
        data.append(col.to_pylist())
    return ", ".join(q(n) for n in names), data


# -- query side: llamonitor.storage._clickhouse_query ---------------------------------


def query(config: StorageConfig) -> ClickHouseQuery:
    """The query side of a ClickHouse span table (see :class:`ClickHouseQuery`):
    a missing table is an empty store.

    Raises:
        ConfigurationError: a missing driver or a bad connection string.
    """
    return ClickHouseQuery(_Target(config))
