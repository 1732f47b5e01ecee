"""Alerts in ``llamonitor serve``: the rules of ``server.alert_rules`` evaluated
every interval by a task of the app's lifespan, and ``GET /api/alerts``
(current alerts, history, rules) for the UI's alerts page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from llamonitor.server._deps import ServerState, state
from llamonitor.server._errors import ERROR_RESPONSES

logger = logging.getLogger("llamonitor.server")

STOP_TIMEOUT_SECONDS = 5.0


def start_watcher(s: ServerState) -> Any:
    """The :class:`~llamonitor.quality._alert_watch.Watcher` of the server's rule file
    (``None`` without one), its notifiers started.

    Raises:
        RuleFileError: the rule file does not parse (names the line and the rule).
    """
    path = s.config.alert_rules
    if not path:
        return None
    from llamonitor.quality._alert_rules import load_rules
    from llamonitor.quality._alert_watch import Watcher, default_state_path, parquet_query

    rules = load_rules(path)
    info = s.store.info
    query: Any = s.store
    if info.kind == "parquet" and info.directory is not None:
        query = parquet_query(info.directory)
    state_path: Path | None = None
    if rules.settings.state is None:
        state_path = default_state_path(info.directory, info.dsn)
    watcher = Watcher(rules, query, state_path)
    if query is not s.store:
        watcher._owned = query  # closed with the watcher
    return watcher.start()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    s: ServerState = app.state.llamonitor
    watcher = start_watcher(s)
    task: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    if watcher is not None:
        from llamonitor.quality._alert_watch import PeriodicTask, run_periodic

        s.extras["alerts"] = watcher
        every = watcher.rules.settings.interval
        task = asyncio.create_task(run_periodic([PeriodicTask("alerts", every,
                                                              watcher.evaluate)], stop))
    try:
        yield
    finally:
        if task is not None:
            stop.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, STOP_TIMEOUT_SECONDS)
        if watcher is not None:
            await asyncio.to_thread(watcher.close)


router = APIRouter(tags=["alerts"], lifespan=lifespan)


@router.get("/api/alerts", responses=ERROR_RESPONSES, response_model=None)
def alerts(request: Request) -> dict[str, Any] | JSONResponse:
    """The alert rules, the alerts pending or firing now, and the history of
    firing and resolved notifications (newest first)."""
    watcher = state(request).extras.get("alerts")
    if watcher is None:
        return {"enabled": False, "rules": [], "alerts": [], "history": [],
                "notifiers": [], "pending_notifications": [], "evaluated_at": None}
    return {"enabled": True, **watcher.snapshot()}
