"""Fixtures of the API tests (``tests/server/test_api_*.py`` share them: keep
the names and signatures stable).

``demo_store`` (session scope)
    The :class:`~pathlib.Path` of a Parquet store written by
    ``llamonitor.cli._demo.run_demo(dir, 7, first_run=True)``: sessions
    ``alice-1``, ``alice-2``, ``bob-1``... Shared by every test: read it, never
    write into it.

``client_for``
    A function ``client_for(store, **config) -> TestClient``: the app of
    ``create_app(store, ServerConfig(**config))`` behind a
    ``fastapi.testclient.TestClient`` with ``base_url="http://127.0.0.1:8585"``.
    ``store`` is a :class:`~llamonitor.server.ServerStore`, a Parquet/JSONL
    directory (a :class:`~pathlib.Path`) or a :class:`RowStore`. Stores it
    opened and clients are closed after the test.

``any_store``
    A :class:`RowStore`, once for each of ``parquet``, ``sqlite`` and
    ``postgres`` (real PostgreSQL at 127.0.0.1:5432; the test is skipped
    when it does not answer, failed under ``CI``). Empty until
    ``any_store.write(rows)``; ``any_store.open()`` is a ``ServerStore`` over
    it, ``client_for(any_store)`` a client. Make complete rows with
    ``_helpers.span_row(i, **columns)`` (``from _helpers import T0, span_row``).

``write_store``
    A function ``write_store(kind, rows=()) -> RowStore`` for a test that
    wants one kind (``"parquet"``, ``"sqlite"``, ``"postgres"``, ``"mysql"``)
    or several stores at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

import llamonitor
from _servers import Store, open_store
from llamonitor import StorageConfig
from llamonitor.server import ServerConfig, ServerStore, create_app, open_server_store
from llamonitor.storage.parquet import ParquetBackend

BASE_URL = "http://127.0.0.1:8585"
STORE_KINDS = ("parquet", "sqlite", "postgres")


def rows_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """``rows`` (complete span rows) as a table of the span schema."""
    return pa.Table.from_pylist(list(rows), schema=llamonitor.SCHEMA)


class RowStore:
    """One test's store of one kind, filled by :meth:`write`.

    Attributes:
        kind: ``parquet``, ``sqlite``, ``postgres`` or ``mysql``.
        location: the Parquet directory, or the SQL store's DSN.
        table: the SQL store's table (``None`` for Parquet).
    """

    def __init__(self, kind: str, tmp_path: Path, sql: Store | None = None) -> None:
        self.kind = kind
        self.sql = sql
        self.directory = tmp_path / "store"
        self.location: Path | str = sql.dsn if sql else self.directory
        self.table: str | None = sql.table if sql else None
        self._opened: list[ServerStore] = []

    def __repr__(self) -> str:
        return f"RowStore({self.kind})"

    def write(self, rows: Sequence[dict[str, Any]]) -> RowStore:
        """Append ``rows`` (an empty list makes an empty SQL table); returns ``self``."""
        table = rows_table(rows)
        if self.sql is not None:
            self.sql.write(table)
        elif rows:
            backend = ParquetBackend(StorageConfig(output_dir=self.directory))
            asyncio.run(backend.write_table(table))
        return self

    def open(self, **store_settings: Any) -> ServerStore:
        """A :class:`ServerStore` over the store (closed after the test)."""
        dsn = self.location if isinstance(self.location, str) else None
        store = open_server_store(self.directory, dsn, self.table, **store_settings)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's Parquet store (seed 7, first run); read-only."""
    from llamonitor.cli._demo import run_demo

    directory = tmp_path_factory.mktemp("demo")
    run = run_demo(directory, 7, first_run=True)
    assert run.flushed
    return directory


@pytest.fixture
def write_store(tmp_path: Path) -> Iterator[Callable[..., RowStore]]:
    """``write_store(kind, rows=())``: a fresh store of ``kind`` holding ``rows``."""
    made: list[RowStore] = []
    closers: list[Iterator[Store]] = []

    def make(kind: str, rows: Sequence[dict[str, Any]] = ()) -> RowStore:
        where = tmp_path / f"{kind}-{len(made)}"
        where.mkdir()
        sql = None
        if kind != "parquet":
            opener = open_store(kind, where)
            sql = next(opener)
            closers.append(opener)
        store = RowStore(kind, where, sql)
        made.append(store)
        if rows or sql is not None:
            store.write(rows)
        return store

    yield make
    for store in made:
        store.close()
    for opener in closers:
        for _ in opener:  # runs open_store's cleanup: the table is dropped
            pass


@pytest.fixture(params=STORE_KINDS)
def any_store(
    request: pytest.FixtureRequest, write_store: Callable[..., RowStore]
) -> RowStore:
    """An empty store of each kind in turn (parquet, sqlite, postgres)."""
    store = write_store(request.param)
    return store


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """``client_for(store, **config)``: a TestClient of the app over ``store``."""
    clients: list[TestClient] = []
    opened: list[ServerStore] = []

    def make(store: ServerStore | RowStore | Path, **config: Any) -> TestClient:
        if isinstance(store, RowStore):
            store = store.open()
        elif isinstance(store, Path):
            store = open_server_store(store)
            opened.append(store)
        client = TestClient(create_app(store, ServerConfig(**config)), base_url=BASE_URL)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for store in opened:
        store.close()
