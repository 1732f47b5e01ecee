"""Stores for the retention tests: spans written by the real backends, raw
metric points by the points store, and readings of what is left."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from _helpers import span_row
from llamonitor.metrics._schema import METRIC_SCHEMA
from llamonitor.metrics._span_rollup import span_query
from llamonitor.metrics._store import read_points, write_points
from llamonitor.schema._columns import SCHEMA
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import create_backend

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)
"""The first span; the stores hold ten days of spans from here."""


def storage_of(kind: str, tmp_path: Path, **settings: Any) -> Iterator[StorageConfig]:
    """The store ``kind`` with a span table of the test's own; on a server in a
    schema (PostgreSQL) or database (MySQL) of its own, dropped afterwards."""
    table = "rt_" + secrets.token_hex(4)
    if kind == "parquet":
        yield StorageConfig(output_dir=tmp_path / "store", **settings)
        return
    if kind == "sqlite":
        dsn = SecretStr(f"sqlite:///{tmp_path}/store.db")
        yield StorageConfig(backend="sqlite", connection_string=dsn, table_name=table, **settings)
        return
    from _servers import _execute, server_dsn

    url = server_dsn(kind)
    schema = "rt_" + secrets.token_hex(5)
    if kind == "mysql":
        _execute(kind, url, f"CREATE DATABASE {schema}")
    try:
        yield StorageConfig(
            backend=kind,
            connection_string=SecretStr(url),
            schema_name=schema,
            table_name=table,
            **settings,
        )
    finally:
        drop = (
            f"DROP SCHEMA IF EXISTS {schema} CASCADE"
            if kind == "postgres"
            else f"DROP DATABASE IF EXISTS {schema}"
        )
        _execute(kind, url, drop)


def span_times(days: int = 10, per_day: int = 48, start: datetime = T0) -> list[datetime]:
    """``per_day`` spans a day, evenly over each day (so a cutoff splits a day)."""
    step = 86400 // per_day
    return [start + timedelta(seconds=i * step + 7) for i in range(days * per_day)]


def write_spans(storage: StorageConfig, times: list[datetime], sessions: int = 1) -> list[str]:
    """Write one span per time through the store's own backend (a batch a
    day, so the Parquet store has files per day); returns their event ids."""
    rows = [
        span_row(
            i,
            event_id=f"ev{i:07d}",
            timestamp=t,
            session_id=f"s{i % sessions}",
            model="m1",
            input_tokens=3,
            output_tokens=4,
            total_tokens=7,
            duration_ms=10.0 + i % 5,
        )
        for i, t in enumerate(times)
    ]

    async def go() -> None:
        backend = create_backend(storage)
        await backend.initialize()
        try:
            by_day: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_day.setdefault(r["timestamp"].strftime("%Y-%m-%d"), []).append(r)
            for day_rows in by_day.values():
                await backend.write_table(pa.Table.from_pylist(day_rows, schema=SCHEMA))
        finally:
            await backend.close()

    asyncio.run(go())
    return [r["event_id"] for r in rows]


def write_raw_points(
    storage: StorageConfig, start: datetime, count: int, step_seconds: int, chunks: int = 6
) -> list[datetime]:
    """A gauge ``g`` (value = its index) and a counter ``c`` (cumulative) every
    ``step_seconds`` from ``start``, written in ``chunks`` batches."""
    times = [start + timedelta(seconds=i * step_seconds) for i in range(count)]
    size = -(-count // chunks)
    for lo in range(0, count, size):
        ts = times[lo : lo + size]
        n = len(ts)
        idx = [float(i) for i in range(lo, lo + n)]
        table = pa.table(
            {
                "timestamp": pa.array(ts * 2, pa.timestamp("us", tz="UTC")),
                "name": ["g"] * n + ["c"] * n,
                "kind": ["gauge"] * n + ["counter"] * n,
                "labels": ['{"k":"v"}'] * (2 * n),
                "resolution_seconds": pa.array([0] * (2 * n), pa.int32()),
                "value": idx + [2 * v for v in idx],
                "source": ["test"] * (2 * n),
            }
        )
        write_points(storage, table)
    return times


def span_ids(storage: StorageConfig) -> list[str]:
    """The event ids the store holds (with repeats, if any)."""
    q = span_query(storage)
    try:
        t = q.run("SELECT event_id FROM {rel}")
    finally:
        q.close()
    return [] if t is None else [str(v) for v in t.column("event_id").to_pylist()]


PointKey = tuple[str, str, int, datetime]


def point_rows(storage: StorageConfig) -> list[dict[str, Any]]:
    """Every point of the store, sorted, sketches left out."""
    t = read_points(storage)
    rows = t.select([n for n in METRIC_SCHEMA.names if n != "sketch"]).to_pylist()
    return sorted(
        rows, key=lambda r: (r["name"], r["labels"], r["resolution_seconds"], r["timestamp"])
    )


def point_keys(storage: StorageConfig) -> list[PointKey]:
    return [
        (r["name"], r["labels"], r["resolution_seconds"], r["timestamp"])
        for r in point_rows(storage)
    ]


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` (hidden ones too): size and content hash."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(p.relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out
