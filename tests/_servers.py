"""The real database servers the SQL store tests run against.

PostgreSQL on 127.0.0.1:5432 and MariaDB/MySQL on 127.0.0.1:3306 (trust /
empty-password logins, database ``test``; override with
``LLMOPS_TEST_POSTGRES_DSN`` / ``LLMOPS_TEST_MYSQL_DSN``), SQLite in a
temporary file. A server that does not answer skips its tests, or fails them
when ``CI`` is set. Each test gets its own table, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from pydantic import SecretStr

import llamonitor
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql_ddl, create_backend
from llamonitor.storage import mysql as mysql_store
from llamonitor.storage import postgres as postgres_store
from llamonitor.storage import sqlite as sqlite_store
from llamonitor.storage._duckdb import DuckDBQuery

IN_CI = bool(os.environ.get("CI"))
KINDS = ("postgres", "mysql", "sqlite")

POSTGRES_DSNS = [
    d
    for d in (
        os.environ.get("LLMOPS_TEST_POSTGRES_DSN"),
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://root@127.0.0.1:5432/test",
    )
    if d
]
MYSQL_DSNS = [
    d for d in (os.environ.get("LLMOPS_TEST_MYSQL_DSN"), "mysql://root@127.0.0.1:3306/test") if d
]

_reachable: dict[str, str | Exception] = {}


def unavailable(what: str, reason: object) -> NoReturn:
    """Skip (or, in CI, fail) a test whose server does not answer."""
    message = f"{what} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def server_dsn(kind: str) -> str:
    """A working connection string of the ``postgres`` or ``mysql`` test server."""
    if kind not in _reachable:
        last: Exception = RuntimeError("no connection string")
        for dsn in POSTGRES_DSNS if kind == "postgres" else MYSQL_DSNS:
            try:
                _execute(kind, dsn, "SELECT 1")
            except Exception as exc:
                last = exc
                continue
            _reachable[kind] = dsn
            break
        else:
            _reachable[kind] = last
    found = _reachable[kind]
    if isinstance(found, Exception):
        unavailable(f"the {kind} test server", found)
    return found


async def _pg(dsn: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        if params and isinstance(params[0], (list, tuple)):
            await conn.executemany(sql, params)
            return []
        return [tuple(r) for r in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


def _execute(kind: str, dsn: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``params``: one row, or a list of rows) and return its rows."""
    many = bool(params) and isinstance(params[0], (list, tuple))
    if kind == "postgres":
        return asyncio.run(_pg(dsn, sql, params))
    if kind == "mysql":
        import pymysql

        parts = urlsplit(dsn)
        conn = pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=parts.username,
            password=parts.password or "",
            database=parts.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                if many:
                    cur.executemany(sql, params)
                    return []
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()
    conn3 = sqlite3.connect(dsn[len("sqlite:///") :], isolation_level=None)
    try:
        if many:
            conn3.executemany(sql, params)
            return []
        return list(conn3.execute(sql, params).fetchall())
    finally:
        conn3.close()


class Store:
    """One test's span table in one store, and SQL run beside the backend."""

    def __init__(self, kind: str, dsn: str, table: str) -> None:
        self.kind = kind
        self.dsn = dsn
        self.table = table

    def __repr__(self) -> str:
        return f"Store({self.kind}, {self.table})"

    def with_dsn(self, dsn: str) -> Store:
        """The same table reached through another connection string."""
        return Store(self.kind, dsn, self.table)

    @property
    def module(self) -> Any:
        return {"postgres": postgres_store, "mysql": mysql_store, "sqlite": sqlite_store}[self.kind]

    def config(self, **settings: Any) -> StorageConfig:
        settings.setdefault("table_name", self.table)
        return StorageConfig(backend=self.kind, connection_string=SecretStr(self.dsn), **settings)

    def backend(self, **settings: Any) -> Any:
        return create_backend(self.config(**settings))

    def query(self, **settings: Any) -> DuckDBQuery:
        query: DuckDBQuery = self.module.query(self.config(**settings))
        return query

    def write(self, table: pa.Table, **settings: Any) -> None:
        """Initialize a fresh backend, write ``table``, close."""

        async def go() -> None:
            backend = self.backend(**settings)
            await backend.initialize()
            try:
                await backend.write_table(table)
            finally:
                await backend.close()

        asyncio.run(go())

    # -- SQL beside the backend ------------------------------------------

    def quote(self, name: str) -> str:
        return f"`{name}`" if self.kind == "mysql" else f'"{name}"'

    def mark(self, i: int) -> str:
        return {"postgres": f"${i}", "mysql": "%s", "sqlite": "?"}[self.kind]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return _execute(self.kind, self.dsn, sql, params)

    def count(self) -> int:
        return int(self.execute(f"SELECT count(*) FROM {self.quote(self.table)}")[0][0])

    def columns(self) -> dict[str, str]:
        """The table's columns, name -> database type."""
        if self.kind == "postgres":
            sql = (
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = $1"
            )
        elif self.kind == "mysql":
            sql = (
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
            )
        else:
            return {r[1]: r[2] for r in self.execute(f"PRAGMA table_info({self.table})")}
        return {r[0]: r[1] for r in self.execute(sql, (self.table,))}

    def schema_version(self) -> int | None:
        rows = self.execute(
            f"SELECT schema_version FROM {_sql_ddl.META_TABLE} WHERE table_name = {self.mark(1)}",
            (self.table,),
        )
        return int(rows[0][0]) if rows else None

    def create_table(self, fields: Sequence[pa.Field]) -> None:
        """A span table of ``fields`` (types from the backend's own mapping),
        primary key ``event_id``: what an older llamonitor created."""
        defs = _sql_ddl.column_defs(self.module.sql_type, self.quote, fields)
        extra = " DEFAULT CHARSET=utf8mb4" if self.kind == "mysql" else ""
        self.execute(
            f"CREATE TABLE {self.quote(self.table)} ({', '.join(defs)}, "
            f"PRIMARY KEY ({self.quote('event_id')})){extra}"
        )

    def insert_rows(self, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        """Insert rows by plain SQL (values converted the way each driver binds them)."""
        marks = ", ".join(self.mark(i + 1) for i in range(len(columns)))
        sql = (
            f"INSERT INTO {self.quote(self.table)} "
            f"({', '.join(self.quote(c) for c in columns)}) VALUES ({marks})"
        )
        self.execute(sql, [tuple(self._bind(r[c]) for c in columns) for r in rows])

    def _bind(self, value: Any) -> Any:
        if isinstance(value, datetime):
            value = value.astimezone(timezone.utc)
            if self.kind == "mysql":
                return value.replace(tzinfo=None)
            if self.kind == "sqlite":
                return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def drop(self) -> None:
        if self.kind == "postgres":
            self.execute(f"DROP TABLE IF EXISTS {self.quote(self.table)} CASCADE")
        else:
            self.execute(f"DROP TABLE IF EXISTS {self.quote(self.table)}")
        try:
            self.execute(
                f"DELETE FROM {_sql_ddl.META_TABLE} WHERE table_name = {self.mark(1)}",
                (self.table,),
            )
        except Exception:
            pass  # no meta table yet


def unique_table() -> str:
    return f"t_{secrets.token_hex(5)}"


def open_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A :class:`Store` with a fresh table name, dropped afterwards."""
    dsn = f"sqlite:///{tmp_path / 'spans.db'}" if kind == "sqlite" else server_dsn(kind)
    store = Store(kind, dsn, unique_table())
    try:
        yield store
    finally:
        llamonitor.shutdown_monitoring(10.0)  # its sink may hold the table
        store.drop()


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each SQL store in turn, with a table of its own."""
    yield from open_store(request.param, tmp_path)


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Store]:
    yield from open_store("postgres", tmp_path)


@pytest.fixture
def mysql_db(tmp_path: Path) -> Iterator[Store]:
    yield from open_store("mysql", tmp_path)


@pytest.fixture(params=("postgres", "mysql"))
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The stores behind a network server (connection strings with passwords)."""
    yield from open_store(request.param, tmp_path)
