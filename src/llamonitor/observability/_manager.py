"""``ObservabilityManager``: seed 001's event fan-out, queued and isolated.

``observe_event(event)`` is called by a message bus on its own path, so it
only appends the event to each interested handler's bounded queue and
returns: no I/O, no lock held across anything slow, never an exception.
Each handler has its own queue and thread(s) (:mod:`._runner`), so a slow or
failing handler never holds back the caller or the other handlers. When a
queue is full, ``back_pressure_strategy`` decides, and every drop is counted.

Sampling is decided per *session* (per command or LLM call for events
outside a session; see :func:`sample_key`) from a hash of its id, so a kept
session keeps all its events and lowering the rate only removes sessions: the
manager's rate and each handler's multiply. The rate in force is passed to the
handler with each event (the span handler records it on the span).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor.observability._config import ObservabilityConfig
from llamonitor.observability._events import DEFAULT_SESSION_ID, EventHandlerFailedEvent
from llamonitor.observability._runner import HandlerRunner, ObservabilityHandler
from llamonitor.schema.config import ConfigurationError

logger = logging.getLogger("llamonitor.observability")

SHUTDOWN_TIMEOUT_SECONDS = 5.0
"""Deadline of the flush of every manager at interpreter exit."""

_NO_SESSION = frozenset((None, "", DEFAULT_SESSION_ID, "ROOT"))
_managers: weakref.WeakSet[ObservabilityManager] = weakref.WeakSet()


def sample_key(event: Any) -> str:
    """What an event's sampling decision is keyed on: its session, or (outside
    one) its command's or call's id, so related events are kept together."""
    session = getattr(event, "session_id", None)
    if session not in _NO_SESSION:
        return str(session)
    for owner, name in (("command", "command_id"), ("command_result", "command_id")):
        obj = getattr(event, owner, None)
        if obj is not None and getattr(obj, name, None):
            return str(getattr(obj, name))
    for name in ("command_id", "call_id", "parent_id", "tool_call_id"):
        value = getattr(event, name, None)
        if value:
            return str(value)
    return str(getattr(event, "event_id", id(event)))


def sample_point(event: Any) -> float:
    """A number in [0, 1) fixed by :func:`sample_key`: kept when below the rate."""
    digest = hashlib.blake2b(sample_key(event).encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigurationError("observability.sample_rate", f"must be in [0, 1], got {rate!r}")
    return float(rate)


class ObservabilityManager:
    """Fans events out to handlers, off the caller's path.

    ::

        manager = ObservabilityManager()
        manager.register_handler(SpanHandler())               # spans into llamonitor's store
        manager.register_handler(ConsoleEventHandler(), event_types=[CommandResultEvent])
        bus = MessageBus(observability=manager)               # the bus calls observe_event

    Args:
        config: an :class:`ObservabilityConfig` (default: from the
            ``LLMOPS_OBSERVABILITY_*`` environment), or a dict of its settings.

    Raises:
        ConfigurationError: a setting is invalid (naming it).
    """

    def __init__(self, config: ObservabilityConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = ObservabilityConfig()
        elif isinstance(config, dict):
            config = ObservabilityConfig(**config)
        self.config = config
        self._enabled = config.enabled
        self._rate = config.sample_rate
        self._runners: tuple[HandlerRunner, ...] = ()
        self._lock = threading.Lock()
        self._closed = False
        self._pipeline: Any = None
        self.sampled_out = 0
        """Events not observed because of the manager's sample rate."""
        _managers.add(self)

    # -- the caller's side ---------------------------------------------------

    def observe_event(self, event: Any) -> bool:
        """Queue ``event`` for every handler that takes it; returns at once.

        Never raises. Under ``back_pressure_strategy="block"`` it may wait (up
        to ``block_timeout_seconds``) for a full queue.

        Args:
            event: an :class:`Event` (or any object: handlers filter by type).

        Returns:
            False if some handler that takes the event did not get it (a
            full queue, counted); True otherwise, sampled out included.
        """
        if not self._enabled:
            return True
        try:
            return bool(self._observe(event, None))
        except Exception as exc:
            report_internal_error("observability.observe_event", exc)
            return False

    async def aobserve_event(self, event: Any) -> bool:
        """:meth:`observe_event` for async code: never blocks the event loop
        (under ``block``, it waits for room with ``asyncio.sleep``).

        Returns:
            As :meth:`observe_event`.
        """
        if not self._enabled:
            return True
        try:
            if self.config.back_pressure_strategy != "block":
                return bool(self._observe(event, None))
            ok = self._observe(event, None, wait=False)
            deadline = time.monotonic() + self.config.block_timeout_seconds
            pause = 0.001
            while ok is not True and time.monotonic() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                ok = self._retry(ok)
            if ok is not True:
                for runner, _item in ok:
                    runner.count_drop("block_timeout")
                return False
            return True
        except Exception as exc:
            report_internal_error("observability.aobserve_event", exc)
            return False

    def _observe(self, event: Any, skip: HandlerRunner | None, wait: bool = True) -> Any:
        """Offer ``event`` to the runners; with ``wait=False`` under ``block``,
        the ``(runner, item)`` pairs that found no room are returned instead."""
        runners = self._runners
        if not runners:
            return True
        if _handoff.ACTIVE is not self._pipeline:  # monitoring started (or stopped) since
            self._pipeline = _handoff.ACTIVE
            exit_before_monitoring()
        rate = self._rate
        point = -1.0
        if rate < 1.0:
            point = sample_point(event)
            if point >= rate:
                self.sampled_out += 1
                return True
        cls = type(event)
        # The llamonitor span around the publisher (a decorated function), so
        # the event's spans can nest under it: read here, on the caller's thread.
        around = CURRENT.get()
        if around is SUPPRESSED:
            around = None
        ok = True
        pending: list[tuple[HandlerRunner, Any]] = []
        for runner in runners:
            if runner is skip or not runner.accepts(cls):
                continue
            effective = rate * runner.sample_rate
            if effective < 1.0:
                if point < 0.0:
                    point = sample_point(event)
                if point >= effective:
                    runner.sampled_out += 1
                    continue
            item = (event, effective, around)
            if wait:
                ok = runner.offer(item) and ok
            elif not runner.offer(item, wait=False):
                pending.append((runner, item))
        if not wait:
            return pending or True
        return ok

    def _retry(self, pending: list[tuple[HandlerRunner, Any]]) -> Any:
        left = [(r, item) for r, item in pending if not r.offer(item, wait=False)]
        return left or True

    # -- handlers --------------------------------------------------------------

    def register_handler(
        self,
        handler: ObservabilityHandler,
        event_types: Iterable[type | str] | type | str | None = None,
        sample_rate: float = 1.0,
    ) -> None:
        """Start feeding ``handler`` (at run time too); registering it again
        replaces its filter and rate.

        Args:
            handler: an :class:`ObservabilityHandler` (or any object with
                ``handle(event)`` or ``async ahandle(event)``).
            event_types: only events of these classes (and subclasses), or of
                classes with these names anywhere in their bases (so LLMgine's
                own event classes match by name); all events when omitted.
            sample_rate: this handler's fraction (0..1), times the manager's.

        Raises:
            ConfigurationError: ``sample_rate`` is outside [0, 1], or the
                handler has neither ``handle`` nor ``ahandle``.
        """
        rate = _check_rate(sample_rate)
        if not callable(getattr(handler, "handle", None)) and not callable(
            getattr(handler, "ahandle", None)
        ):
            raise ConfigurationError("handler", f"{handler!r} has no handle() or ahandle()")
        types = (event_types,) if isinstance(event_types, (type, str)) else event_types
        with self._lock:
            if self._closed:
                raise ConfigurationError("handler", "the manager is shut down")
            for runner in self._runners:
                if runner.handler is handler:
                    runner.set_filter(types)
                    runner.sample_rate = rate
                    return
            runner = HandlerRunner(handler, self, types, rate)
            runner.start()
            self._runners = (*self._runners, runner)

    def unregister_handler(self, handler: ObservabilityHandler, timeout: float = 5.0) -> bool:
        """Stop feeding ``handler``; what it has queued is handled first.

        Returns:
            True if its queue was drained within ``timeout`` seconds.
        """
        with self._lock:
            found = [r for r in self._runners if r.handler is handler]
            self._runners = tuple(r for r in self._runners if r.handler is not handler)
        return all([r.stop(timeout) for r in found])

    def clear_handlers(self, timeout: float = 5.0) -> bool:
        """Unregister every handler (LLMgine's name)."""
        with self._lock:
            found, self._runners = self._runners, ()
        return all([r.stop(timeout) for r in found])

    @property
    def handlers(self) -> list[ObservabilityHandler]:
        """The registered handlers, in registration order."""
        return [r.handler for r in self._runners]

    @property
    def handler_count(self) -> int:
        """How many handlers are registered (LLMgine's name)."""
        return len(self._runners)

    # -- run-time settings -----------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Turn observing on or off (LLMgine's name); queued events are still handled."""
        self._enabled = bool(enabled)

    @property
    def sample_rate(self) -> float:
        return self._rate

    def set_sample_rate(self, rate: float, handler: ObservabilityHandler | None = None) -> None:
        """Change the manager's sample rate, or one handler's, at run time.

        Args:
            rate: the fraction of sessions kept (0..1).
            handler: a registered handler whose own rate to change.

        Raises:
            ConfigurationError: ``rate`` is outside [0, 1], or ``handler`` is
                not registered.
        """
        rate = _check_rate(rate)
        if handler is None:
            self._rate = rate
            return
        for runner in self._runners:
            if runner.handler is handler:
                runner.sample_rate = rate
                return
        raise ConfigurationError("handler", f"{handler!r} is not registered")

    # -- failures, flush, shutdown ----------------------------------------------

    def handler_failed(self, runner: HandlerRunner, event: Any, exc: BaseException) -> None:
        """A handler raised on ``event``: the other handlers get an
        :class:`EventHandlerFailedEvent` (none for a failure on one of those)."""
        if isinstance(event, EventHandlerFailedEvent) or not self._enabled:
            return
        failed = EventHandlerFailedEvent(
            event=event,
            handler=runner.name,
            exception=exc,
            session_id=getattr(event, "session_id", DEFAULT_SESSION_ID),
            parent_id=_owner_id(event),
        )
        try:
            # never blocks a handler's thread on another handler's queue
            self._observe(failed, runner, wait=False)
        except Exception as err:
            report_internal_error("observability.handler_failed", err)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every handler has handled what was queued before the call.

        Returns:
            True if they all did within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        return all([r.flush(max(0.0, deadline - time.monotonic())) for r in self._runners])

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Handle what is queued, stop every handler's threads and close the
        handlers (their ``close()``); idempotent.

        Returns:
            True if everything queued was handled within ``timeout`` seconds.
        """
        with self._lock:
            self._closed = True
            runners, self._runners = self._runners, ()
        deadline = time.monotonic() + timeout
        return all([r.stop(max(0.0, deadline - time.monotonic())) for r in runners])

    close = shutdown

    def health_check(self) -> dict[str, Any]:
        """Counts of the manager and of each handler (by name): ``queued``,
        ``handled``, ``failed``, ``dropped`` by reason, ``sampled_out``,
        ``sample_rate``."""
        return {
            "enabled": self._enabled,
            "sample_rate": self._rate,
            "sampled_out": self.sampled_out,
            "handlers": {r.name: r.stats() for r in self._runners},
        }

    def _after_fork(self) -> None:
        for runner in self._runners:
            runner.after_fork()


def _owner_id(event: Any) -> str | None:
    """The id of the span ``event`` belongs to (its command or call)."""
    for owner in ("command", "command_result"):
        obj = getattr(event, owner, None)
        if obj is not None and getattr(obj, "command_id", None):
            return str(obj.command_id)
    for name in ("command_id", "call_id", "parent_id"):
        value = getattr(event, name, None)
        if value:
            return str(value)
    return None


def _flush_all() -> None:
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_SECONDS
    for manager in list(_managers):
        try:
            manager.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:
            pass


def exit_before_monitoring() -> None:
    """Make the managers' exit flush run before the monitoring writer's: ``atexit``
    runs the last registered first, and the writer registers at its first
    ``initialize_monitoring``, often after this module was imported. Called by
    ``observe_event`` and the span handler when they first see a pipeline."""
    atexit.unregister(_flush_all)
    atexit.register(_flush_all)


def _reinit_in_child() -> None:
    for manager in list(_managers):
        manager._after_fork()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_reinit_in_child)
