"""The ingest worker's target on a writer thread of its own.

:class:`TargetThread` drives a storage backend from a thread with its own
event loop: its ``initialize``, ``write_table`` and ``close`` run there, so a
store whose writes block (Parquet, SQLite; the CPU of PostgreSQL's COPY
encoding) never stalls the worker's loop, and the broker calls (fetch,
``keep`` heartbeats, acks, give-backs) go on meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CLOSE_TIMEOUT_SECONDS", "TargetThread"]

CLOSE_TIMEOUT_SECONDS = 30.0
"""How long the worker waits for the target to close (a write still stuck
past the shutdown grace holds the writer thread; it is a daemon)."""


async def _call(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class TargetThread:
    """A storage backend driven from a thread of its own, with its own event
    loop: :meth:`run` schedules one of the backend's methods there and
    returns an awaitable for the caller's loop. Cancelling that awaitable
    cancels the call on the writer's loop (an ``await`` in it is interrupted;
    a blocking write finishes first).
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._serve, name="llamonitor-ingest-writer", daemon=True
        )
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, name: str, *args: Any) -> asyncio.Future[Any]:
        """``target.<name>(*args)`` on the writer's loop, awaitable from the caller's."""
        method: Callable[..., Any] = getattr(self.target, name)
        done = asyncio.run_coroutine_threadsafe(_call(method, *args), self.loop)
        return asyncio.wrap_future(done)

    def stop(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """End the writer's loop (after the call in hand) and its thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


