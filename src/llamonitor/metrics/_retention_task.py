"""The background retention of ``llamonitor serve`` (and ``watch``): an
asyncio task that applies the policy every ``interval_seconds``.

Each run goes on a daemon thread of its own (the event loop keeps serving;
a shutdown never waits for a run, which is crash-safe if the process then
exits under it). A run that fails is logged and counted
(:attr:`RetentionTask.failures`, :attr:`RetentionTask.last_error`), and the
next one comes at the next interval: retention never ends the server.

``llamonitor watch`` (or any program with an event loop) starts it the same
way the server's lifespan does::

    task = start_retention_task(storage, config)   # inside a running loop
    ...
    await task.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from llamonitor.schema._retention_config import RetentionConfig
from llamonitor.schema.config import StorageConfig

logger = logging.getLogger("llamonitor.metrics.retention")

INITIAL_DELAY_SECONDS = 10.0
"""The first run waits this long after the start (so a server comes up first)."""


class RetentionTask:
    """Applies ``config`` to ``storage`` every ``config.interval_seconds``.

    Args:
        storage: the store.
        config: the policy.
        initial_delay_seconds: wait before the first run.
        apply: what a run calls (``apply_retention``; tests pass their own).
    """

    def __init__(
        self,
        storage: StorageConfig,
        config: RetentionConfig,
        *,
        initial_delay_seconds: float | None = None,
        apply: Callable[..., Any] | None = None,
    ) -> None:
        self.storage = storage
        self.config = config
        self.initial_delay_seconds = (
            INITIAL_DELAY_SECONDS if initial_delay_seconds is None else initial_delay_seconds
        )
        self._apply = apply
        self.runs = 0
        self.failures = 0
        self.rows_removed = 0
        self.last_error: str | None = None
        self.last_run: datetime | None = None
        self.last_report: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    def status(self) -> dict[str, Any]:
        """Counters of the task (for an API or ``health``)."""
        return {
            "running": self._task is not None and not self._task.done(),
            "interval_seconds": self.config.interval_seconds,
            "runs": self.runs,
            "failures": self.failures,
            "rows_removed": self.rows_removed,
            "last_run": None if self.last_run is None else self.last_run.isoformat(),
            "last_error": self.last_error,
            "last_report": self.last_report,
        }

    def start(self) -> RetentionTask:
        """Start on the running event loop (call from a coroutine or a lifespan)."""
        if self._task is None or self._task.done():
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="llamonitor-retention"
            )
        return self

    async def stop(self) -> None:
        """Stop the task (a run in flight finishes on its thread, unwaited)."""
        if self._stop is not None:
            self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True if stopped meanwhile."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            return False
        return True

    async def _loop(self) -> None:
        if await self._sleep(self.initial_delay_seconds):
            return
        while True:
            await self.run_once()
            if await self._sleep(self.config.interval_seconds):
                return

    async def run_once(self) -> None:
        """One application, on a daemon thread; failures are counted, never raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not done.done():
                (done.set_result if ok else done.set_exception)(value)

        def work() -> None:
            try:
                result = self._call()
            except BaseException as exc:  # reported on the loop
                outcome: tuple[bool, Any] = (False, exc)
            else:
                outcome = (True, result)
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:
                pass  # the loop closed meanwhile (shutdown)

        started = time.monotonic()
        threading.Thread(target=work, name="llamonitor-retention", daemon=True).start()
        self.last_run = datetime.now(timezone.utc)
        try:
            report = await done
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("llamonitor: retention failed (the next run retries): %s", exc)
            return
        finally:
            self.runs += 1
        self.last_error = None
        self.last_report = report.to_dict() if hasattr(report, "to_dict") else None
        self.rows_removed += int(getattr(report, "rows", 0) or 0)
        logger.debug("llamonitor: retention run took %.1f s", time.monotonic() - started)

    def _call(self) -> Any:
        if self._apply is not None:
            return self._apply(self.storage, self.config)
        from llamonitor.metrics._retention import apply_retention

        return apply_retention(self.storage, self.config)


def start_retention_task(
    storage: StorageConfig,
    config: RetentionConfig | None = None,
    **options: Any,
) -> RetentionTask:
    """A :class:`RetentionTask` started on the running loop.

    Args:
        storage: the store.
        config: the policy (default: ``LLMOPS_RETENTION__*``).
        options: :class:`RetentionTask`'s keyword arguments.

    Raises:
        RuntimeError: no event loop is running.
        ConfigurationError: a bad ``LLMOPS_RETENTION__*`` setting, naming it.
    """
    if config is None:
        from llamonitor.metrics._retention import retention_from_env

        config = retention_from_env()
    return RetentionTask(storage, config, **options).start()
