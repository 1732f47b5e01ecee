"""The store the server reads: a small pool of query objects over one store,
each query bounded in time.

Every query object (:class:`~llamonitor.storage._duckdb.DuckDBQuery`) owns one
DuckDB connection, used by one query at a time: the pool lets
``query_workers`` requests query at once. A query still running after
``query_timeout_seconds`` is interrupted and answered with a 503 that names
the setting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from llamonitor.storage._duckdb import NO_FILTERS, DuckDBQuery, Filters

__all__ = ["QueryTimeout", "ServerStore", "open_server_store"]


class QueryTimeout(Exception):
    """A query ran past ``server.query_timeout_seconds`` and was interrupted."""


@dataclass(frozen=True)
class StoreInfo:
    label: str
    """Where the rows are, a password masked (``./monitoring_data``, ``postgresql://u:***@h/db``)."""
    kind: str
    """``parquet``, ``jsonl``, ``postgres``, ``mysql`` or ``sqlite``."""
    directory: Path | None
    """The Parquet/JSONL location, when the store is files."""
    dsn: str | None = None
    """The database's connection string, when the store is one (never shown:
    ``label`` is the masked form); the metrics endpoints read its ``metric_points``."""
    table: str | None = None
    """The span table (``serve --table``: ``[schema.]name``), when the store is a database."""


class ServerStore:
    """``workers`` query objects made by ``factory``, handed out one per query."""

    def __init__(
        self,
        factory: Callable[[], DuckDBQuery],
        info: StoreInfo,
        workers: int = 2,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.info = info
        self.timeout_seconds = timeout_seconds
        self._pool: queue.Queue[DuckDBQuery] = queue.Queue()
        self._all = [factory() for _ in range(workers)]
        for q in self._all:
            self._pool.put(q)

    def close(self) -> None:
        for q in self._all:
            q.close()

    @contextmanager
    def query(self) -> Iterator[DuckDBQuery]:
        """A query object of the pool, for the analysis functions (no time bound)."""
        q = self._pool.get()
        try:
            yield q
        finally:
            self._pool.put(q)

    def run(
        self, sql: str, params: Sequence[Any] = (), filters: Filters = NO_FILTERS
    ) -> pa.Table | None:
        """:meth:`DuckDBQuery.run` on a pooled connection, interrupted after the timeout.

        Raises:
            QueryTimeout: the query ran past ``timeout_seconds``.
        """
        with self.query() as q:
            timer = threading.Timer(self.timeout_seconds, q.interrupt)
            timer.daemon = True
            timer.start()
            try:
                return q.run(sql, params, filters)
            except duckdb.InterruptException:
                raise QueryTimeout(
                    f"the query ran longer than {self.timeout_seconds:g} s "
                    "(server.query_timeout_seconds, LLMOPS_SERVER__QUERY_TIMEOUT_SECONDS): "
                    "narrow the filters or the time range"
                ) from None
            finally:
                timer.cancel()

    def rows(
        self, sql: str, params: Sequence[Any] = (), filters: Filters = NO_FILTERS
    ) -> list[dict[str, Any]]:
        """:meth:`run`'s result as one dict per row (``[]`` for an empty store)."""
        table = self.run(sql, params, filters)
        return [] if table is None else table.to_pylist()


def open_server_store(
    directory: Path,
    dsn: str | None = None,
    table: str | None = None,
    workers: int = 2,
    timeout_seconds: float = 10.0,
) -> ServerStore:
    """The store ``llamonitor serve`` reads: the database ``dsn``, or the files at ``directory``.

    A directory that does not exist yet is an empty store (the server shows
    spans as soon as something writes there).

    Raises:
        click.ClickException: a database that cannot be opened (a bad DSN...).
    """
    from llamonitor.cli._options import _use_dsn, open_store, store_label

    label = store_label(directory, dsn)
    if dsn and _use_dsn(dsn):
        from llamonitor.schema.config import DSN_SCHEMES

        scheme = dsn.split(":", 1)[0].split("+", 1)[0].lower()
        kind = DSN_SCHEMES.get(scheme, scheme)
        return ServerStore(
            lambda: open_store(directory, dsn, table),
            StoreInfo(label, kind, None, dsn, table),
            workers,
            timeout_seconds,
        )
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
    kind = "jsonl" if directory.is_file() else "parquet"
    return ServerStore(
        lambda: open_store(directory), StoreInfo(label, kind, directory), workers, timeout_seconds
    )
