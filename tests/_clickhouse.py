"""A private ClickHouse server for the ClickHouse store tests.

The machine has no shared ClickHouse: :class:`ClickHouseServer` runs Debian's
``clickhouse-server`` (18.16 on bookworm) from a minimal ``config.xml`` /
``users.xml`` written to a temporary directory (its data there too), listening
on 127.0.0.1 only, on free ports (native protocol and HTTP), user ``default``
without a password. One server per test session (per xdist worker), stopped
at the end; each test gets a table of its own.

Fixtures (``pytest_plugins = ["_clickhouse"]``): ``clickhouse_server`` and
``ch`` (a :class:`CHStore`: a fresh table, dropped afterwards). Without the
binary, or if the server does not start, the tests are skipped, or failed
when ``CI`` is set (the rule of ``_servers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pytest
from pydantic import SecretStr

from llamonitor.schema.config import StorageConfig
from llamonitor.storage import clickhouse, create_backend
from llamonitor.storage._duckdb import DuckDBQuery

IN_CI = bool(os.environ.get("CI"))
START_TIMEOUT_SECONDS = 90.0

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{root}/server.log</log>
        <errorlog>{root}/server.err.log</errorlog></logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>64</max_concurrent_queries>
    <timezone>{timezone}</timezone>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password>
        <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"""


def unavailable(reason: object) -> NoReturn:
    """Skip (or, in CI, fail) a test that needs the server."""
    message = f"a private ClickHouse server cannot be started: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ClickHouseServer:
    """A ``clickhouse-server`` of its own (see the module docstring).

    ``timezone`` is the server's: not UTC by default, so that a test shows
    the store does not depend on it.
    """

    def __init__(self, binary: str, timezone: str = "Asia/Kolkata") -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="llamonitor-clickhouse-"))
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.timezone = timezone
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/default"

    def start(self) -> None:
        """Start the server and wait until it answers a query.

        Raises:
            RuntimeError: it exited, or did not answer in time (with its log).
        """
        values = dict(
            root=self.root, tcp_port=self.tcp_port, http_port=self.http_port, timezone=self.timezone
        )
        (self.root / "config.xml").write_text(_CONFIG.format(**values))
        (self.root / "users.xml").write_text(_USERS)
        self.proc = subprocess.Popen(
            [self.binary, f"--config-file={self.root / 'config.xml'}"],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "stderr.log").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"clickhouse-server exited ({self.proc.returncode}): {self.log()}"
                )
            if self.http("SELECT 1") == "1":
                return
            time.sleep(0.2)
        raise RuntimeError(f"clickhouse-server did not answer in time: {self.log()}")

    def http(self, sql: str) -> str | None:
        """``sql``'s output over HTTP, or None if the server does not answer."""
        url = f"http://127.0.0.1:{self.http_port}/"
        try:
            with urllib.request.urlopen(url, data=sql.encode(), timeout=10) as r:
                return str(r.read().decode().strip())
        except OSError:
            return None

    @contextlib.contextmanager
    def fresh_database(self, prefix: str) -> Iterator[StorageConfig]:
        """A ClickHouse store in a database of its own (``prefix`` + random),
        dropped afterwards."""
        from clickhouse_driver import Client

        name = prefix + secrets.token_hex(5)
        client = Client.from_url(self.dsn)
        try:
            client.execute(f"CREATE DATABASE {name}")
            try:
                dsn = self.dsn.rsplit("/", 1)[0] + "/" + name
                yield StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn))
            finally:
                client.execute(f"DROP DATABASE IF EXISTS {name}")
        finally:
            client.disconnect()

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "server.err.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> ClickHouseServer:
    binary = shutil.which("clickhouse-server") or shutil.which("clickhouse")
    if binary is None:
        unavailable("no clickhouse-server binary (apt-get install clickhouse-server)")
    server = ClickHouseServer(binary)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        unavailable(exc)
    return server


class CHStore:
    """One test's span table in the private server, and SQL run beside the backend."""

    def __init__(self, server: ClickHouseServer, table: str) -> None:
        self.server = server
        self.dsn = server.dsn
        self.table = table

    def config(self, **settings: Any) -> StorageConfig:
        settings.setdefault("table_name", self.table)
        return StorageConfig(
            backend="clickhouse", connection_string=SecretStr(self.dsn), **settings
        )

    def backend(self, **settings: Any) -> Any:
        return create_backend(self.config(**settings))

    def query(self, **settings: Any) -> DuckDBQuery:
        return clickhouse.query(self.config(**settings))

    def write(self, *tables: pa.Table, **settings: Any) -> None:
        """Initialize a fresh backend, write each table, close."""

        async def go() -> None:
            backend = self.backend(**settings)
            await backend.initialize()
            try:
                for table in tables:
                    await backend.write_table(table)
            finally:
                await backend.close()

        asyncio.run(go())

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        from clickhouse_driver import Client

        client = Client.from_url(self.dsn)
        try:
            rows: list[tuple[Any, ...]] = client.execute(sql, params)
            return rows
        finally:
            client.disconnect()

    def raw_count(self) -> int:
        """Rows in the table, copies not merged away yet included (no FINAL)."""
        return int(self.execute(f"SELECT count() FROM `{self.table}`")[0][0])

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self.execute(f"DROP TABLE IF EXISTS `{self.table}`")
        with contextlib.suppress(Exception):
            self.execute(
                "ALTER TABLE llamonitor_schema_version DELETE WHERE table_name = %(t)s",
                {"t": self.table},
            )


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ch(clickhouse_server: ClickHouseServer) -> Iterator[CHStore]:
    """A fresh span table in the private server, dropped afterwards."""
    store = CHStore(clickhouse_server, f"t_{secrets.token_hex(5)}")
    try:
        yield store
    finally:
        store.drop()
