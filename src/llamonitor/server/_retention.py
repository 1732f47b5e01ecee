"""The background retention of ``llamonitor serve``, started and stopped with
the app's lifespan, and ``GET /api/retention`` (its policy and counters).

Off unless ``LLMOPS_RETENTION__BACKGROUND=true`` (serving never deletes data
unless asked to). The store is the server's: its Parquet directory, or its
database (the span table of ``serve --table``, else
``LLMOPS_STORAGE__TABLE_NAME``, default ``metric_events``), or its JSONL file
(whose spans have no retention: a ``spans_days`` there is a bad setting).
A ClickHouse store is refused (``metrics._retention.check_store``: there a
month's partition is dropped by hand, docs/clickhouse.md). A bad retention
setting, or such a store, is logged (naming it) and leaves
the task off; the server still serves. Nothing here changes data on request:
the endpoint only reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from llamonitor.server._deps import ServerState, state
from llamonitor.server._errors import ERROR_RESPONSES

logger = logging.getLogger("llamonitor.server")

KEY = "retention"


def _storage(s: ServerState) -> Any:
    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig

    info = s.store.info
    if info.dsn:
        env = StorageConfig()
        schema, _, name = (info.table or "").rpartition(".")
        return StorageConfig(
            backend=info.kind,
            connection_string=SecretStr(info.dsn),
            table_name=name or env.table_name,
            schema_name=schema or env.schema_name,
        )
    if info.directory is not None and info.directory.is_dir():
        return StorageConfig(backend="parquet", output_dir=info.directory)
    if info.kind == "jsonl" and info.directory is not None:
        return StorageConfig(
            backend="jsonl",
            output_dir=info.directory.parent,
            options={"file_name": info.directory.name},
        )
    return None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    s: ServerState = app.state.llamonitor
    task = None
    try:
        from llamonitor.metrics._retention import retention_from_env

        config = retention_from_env()
        s.extras["retention_config"] = config
        storage = _storage(s) if config.background else None
        if storage is not None:
            from llamonitor.metrics._retention import check_store
            from llamonitor.metrics._retention_task import start_retention_task

            check_store(storage, config)
            task = start_retention_task(storage, config)
            s.extras[KEY] = task
    except Exception as exc:  # a bad setting: say so, serve anyway
        s.extras["retention_error"] = str(exc)
        logger.warning("llamonitor: background retention is off: %s", exc)
    try:
        yield
    finally:
        if task is not None:
            await task.stop()


router = APIRouter(tags=["retention"], lifespan=lifespan)


@router.get("/api/retention", responses=ERROR_RESPONSES)
def retention_status(request: Request) -> dict[str, Any]:
    """The retention policy and the background task's counters (``task`` is
    ``null`` when it is off: ``LLMOPS_RETENTION__BACKGROUND``)."""
    s = state(request)
    config = s.extras.get("retention_config")
    task = s.extras.get(KEY)
    return {
        "policy": None if config is None else config.model_dump(),
        "task": None if task is None else task.status(),
        "error": s.extras.get("retention_error"),
    }
