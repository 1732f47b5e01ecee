"""Fixtures of the metrics tests: a private registry, and the point stores
(Parquet in a temporary directory, SQLite in a temporary file, the real
PostgreSQL and MySQL/MariaDB test servers of ``tests/_servers.py``, a private
ClickHouse server of ``tests/_clickhouse.py``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from _clickhouse import clickhouse_server  # noqa: F401  (a fixture, for the ClickHouse store)
from llamonitor.metrics import _api, _rules, _worker
from llamonitor.metrics._registry import Registry
from llamonitor.schema.config import StorageConfig

STORES = ("parquet", "sqlite", "postgres", "mysql", "clickhouse")


@pytest.fixture
def registry() -> Registry:
    """A registry of the test's own (the process's default one is shared)."""
    return Registry()


@pytest.fixture
def name() -> str:
    """A metric name no other test (or test run sharing a database) uses."""
    return "t_" + secrets.token_hex(6)


def storage_of(kind: str, tmp_path: Path) -> Iterator[StorageConfig]:
    """The store ``kind``; on a server, in a schema (PostgreSQL) or database
    (MySQL) of the test's own, dropped afterwards."""
    if kind == "parquet":
        yield StorageConfig(output_dir=tmp_path / "store")
        return
    if kind == "sqlite":
        yield StorageConfig(
            backend="sqlite", connection_string=SecretStr(f"sqlite:///{tmp_path}/points.db")
        )
        return
    from _servers import _execute, server_dsn

    dsn = server_dsn(kind)
    schema = "mt_" + secrets.token_hex(5)
    if kind == "mysql":
        _execute(kind, dsn, f"CREATE DATABASE {schema}")
    try:
        yield StorageConfig(backend=kind, connection_string=SecretStr(dsn), schema_name=schema)
    finally:
        drop = (
            f"DROP SCHEMA IF EXISTS {schema} CASCADE"
            if kind == "postgres"
            else (f"DROP DATABASE IF EXISTS {schema}")
        )
        _execute(kind, dsn, drop)


@pytest.fixture(params=STORES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageConfig]:
    """Each point store in turn (a server that does not answer skips, or fails in CI)."""
    if request.param == "clickhouse":
        yield from clickhouse_of(request.getfixturevalue("clickhouse_server"))
        return
    yield from storage_of(str(request.param), tmp_path)


def clickhouse_of(server: Any) -> Iterator[StorageConfig]:
    """A database of the test's own in the private ClickHouse server, dropped afterwards."""
    with server.fresh_database("mt_") as store:
        yield store


@pytest.fixture
def parquet(tmp_path: Path) -> StorageConfig:
    return StorageConfig(output_dir=tmp_path / "store")


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """configure() and the rules' memory are process-wide: reset after each test."""
    yield
    _worker._settings.storage = None
    _worker._settings.interval_seconds = None
    _worker._settings.max_retries = None
    _worker._settings.rules = []
    _api._max_series[0] = None
    _rules.reset()
