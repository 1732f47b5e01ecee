"""Stores of hand-made rows for the traces and aggregates tests: Parquet,
SQLite and PostgreSQL, each behind the app (``client_for``).

They overlap ``conftest.py``'s ``write_store`` / ``client_for`` (written side by side);
moving these tests onto those fixtures is left to do.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from _helpers import T0
from _servers import Store, server_dsn
from llamonitor.schema._columns import SCHEMA
from llamonitor.server import ServerConfig, create_app, open_server_store
from llamonitor.server._store import ServerStore

UTC = timezone.utc
KINDS = ("parquet", "sqlite", "postgres")


def span(
    span_id: str,
    parent: str | None = None,
    start_ms: float = 0.0,
    duration_ms: float | None = 10.0,
    trace: str = "t1",
    **values: Any,
) -> dict[str, Any]:
    """A full row: span ``span_id`` of ``trace``, starting ``start_ms`` after T0."""
    row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
    row.update(
        event_id=f"{trace}-{span_id}-{secrets.token_hex(3)}",
        session_id="s1",
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        operation_name=f"op.{span_id}",
        operation_type="tool",
        timestamp=T0 + timedelta(milliseconds=start_ms),
        duration_ms=duration_ms,
        error=None,
        process_id=1,
    )
    row.update(values)
    return row


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class Made:
    """A store holding ``rows``, of ``kind``, and the app over it."""

    def __init__(self, kind: str, store: ServerStore, drop: Any = None) -> None:
        self.kind = kind
        self.store = store
        self._drop = drop

    def client(self, **config: Any) -> TestClient:
        return client_for(self.store, **config)

    def close(self) -> None:
        self.store.close()
        if self._drop is not None:
            self._drop()


def client_for(store: ServerStore, **config: Any) -> TestClient:
    app = create_app(store, ServerConfig(**config))
    return TestClient(app, base_url="http://127.0.0.1:8585")  # type: ignore[arg-type]


def make_store(kind: str, rows: list[dict[str, Any]], tmp_path: Path) -> Made:
    """``rows`` written to a fresh store of ``kind`` (parquet, sqlite, postgres)."""
    table = table_of(rows)
    if kind == "parquet":
        directory = tmp_path / f"pq-{secrets.token_hex(3)}"
        directory.mkdir()
        # Two files, so that a trace's spans come from more than one.
        half = len(rows) // 2
        pq.write_table(table.slice(0, half), directory / "events_a.parquet")
        pq.write_table(table.slice(half), directory / "events_b.parquet")
        return Made(kind, open_server_store(directory))
    if kind == "sqlite":
        dsn = f"sqlite:///{tmp_path / f'spans-{secrets.token_hex(3)}.db'}"
    else:
        dsn = server_dsn(kind)
    s = Store(kind, dsn, f"t_{secrets.token_hex(5)}")
    s.write(table)
    return Made(kind, open_server_store(tmp_path, dsn=dsn, table=s.table), s.drop)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def made(kind: str, rows: list[dict[str, Any]], tmp_path: Path) -> Iterator[Made]:
    m = make_store(kind, rows, tmp_path)
    try:
        yield m
    finally:
        m.close()


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
