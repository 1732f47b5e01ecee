"""The PostgreSQL store's query side: rows the filters select (pushed into
PostgreSQL's ``WHERE``), read through a server-side cursor in chunks and
streamed to DuckDB, on a private event loop (the query side is synchronous).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pyarrow as pa

from llamonitor.storage import _sql_query
from llamonitor.storage._duckdb import Filters
from llamonitor.storage._postgres_target import Target, q
from llamonitor.storage._sql import StoreError
from llamonitor.storage._sql_ddl import recorded_extensions

T = TypeVar("T")


class LoopThread:
    """A private event loop on a daemon thread: the query side is called
    synchronously, from any thread (also one running its own loop)."""

    _instance: LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="llamonitor-postgres-query", daemon=True
        ).start()

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = LoopThread()  # none yet, or a forked child's
            loop = cls._instance.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_PUSHDOWN = _sql_query.Pushdown(
    quote=q,
    placeholder=lambda i: f"${i}",
    timestamp=lambda t: t,
    original={
        "event_id": '"event_id"::text',  # uuid
        "timestamp": "\"timestamp\" AT TIME ZONE 'UTC'",  # naive UTC (utcnow)
        "error": 'CASE WHEN "error" IS NULL THEN NULL ELSE TRUE END',
        "error_message": '"error"',
        "custom_attributes": '"custom_attributes"::text',  # jsonb
    },
)


async def open_reader(
    t: Target, filters: Filters, connect_timeout: float
) -> pa.RecordBatchReader | None:
    """A reader of the rows ``filters`` select, or ``None`` if the table is
    not there. ``connect_timeout`` applies unless ``options`` set ``timeout``.

    Raises:
        StoreError: connecting or the query failed (scrubbed).
    """
    conn: Any = None
    error: StoreError | None = None
    try:
        conn = await t.asyncpg.connect(t.dsn, **{"timeout": connect_timeout, **t.connect_kwargs})
        rows = await conn.fetch(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            t.qualified,
        )
        if not rows:
            await conn.close()
            return None
        present = [r[0] for r in rows]
        try:
            recorded = await conn.fetchval(
                f"SELECT extensions FROM {t.meta()} WHERE table_name = $1", t.table
            )
        except t.asyncpg.PostgresError:  # no meta table, or an older llamonitor's
            recorded = None
        extra = _sql_query.extension_fields(recorded_extensions(recorded), present)
        sql, params = _PUSHDOWN.select(t.qualified, present, filters, extra)
        transaction = conn.transaction(readonly=True)
        await transaction.start()
        cursor = await conn.cursor(sql, *params)
        first = await cursor.fetch(_sql_query.CHUNK_ROWS)
    except Exception as exc:
        error = t.error("query", exc)
    if error is not None:
        if conn is not None:
            conn.terminate()
        raise error

    def fetch() -> list[Any]:
        rows: list[Any] = LoopThread.run(cursor.fetch(_sql_query.CHUNK_ROWS))
        return rows

    def close() -> None:
        try:
            LoopThread.run(conn.close(timeout=5))
        except Exception:
            conn.terminate()

    schema = _sql_query.read_schema(extra)
    return _sql_query.stream(first, fetch, close, scrub=t.secrets.scrub, schema=schema)
