"""``SpanProcessor``: an application's own OpenTelemetry spans into llamonitor's store.

Added to the application's ``TracerProvider``, it turns every finished span
(from any instrumentation: the OTel GenAI ones, OpenInference, OpenLLMetry...)
into a llamonitor row, through the same mapping as the OTLP receiver, and
queues it on the running pipeline, so the spans are stored, exported and
reported like decorated code's. ``@monitor_llm`` spans and OTel spans form one
tree (see ``_bridge``).

On the application's thread ``on_end`` only appends the span to a bounded
queue; a thread of the processor encodes batches (the OTLP exporter's own
encoder), maps them to rows and submits them.

``force_flush(timeout_millis)`` and ``shutdown(timeout_millis)`` keep to their
deadline whatever the pipeline's ``queue_full_policy``: under ``block`` the
rows are submitted a chunk at a time, each waiting for room at most until the
deadline (or ``block_timeout_seconds``, after which the chunk is dropped and
counted, as the policy says). Rows converted but not submitted by the
deadline stay with the processor for the next hand-over (a flush returns
False); at shutdown they are counted as dropped (``shutdown``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

try:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span
    from opentelemetry.sdk.trace import SpanProcessor as _SDKSpanProcessor

    from llamonitor.otel._convert import rows_of  # the OTLP encoder
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "llamonitor.otel.SpanProcessor needs the OpenTelemetry SDK and the OTLP "
        f"encoder ({exc}): pip install 'llamonitor[otlp]'"
    ) from exc

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import row_bytes
from llamonitor.otel import _bridge

logger = logging.getLogger("llamonitor.otel")

MAX_QUEUE_SIZE = 8192
"""Finished spans held before they are handed to the pipeline; past it, new
ones are dropped and counted (``queue_full``). Also the bound of what is kept
while monitoring is not running yet."""

BATCH_SIZE = 512
"""Spans converted at a time; a full batch wakes the thread at once."""

INTERVAL_SECONDS = 0.5
"""How long a span waits, at most, before it is handed to the pipeline."""

SHUTDOWN_TIMEOUT_SECONDS = 30.0

WAIT_SLICE_SECONDS = 0.1
"""Under the ``block`` policy, how long one wait for room lasts before the
deadlines are looked at again."""

DROP_REASONS = ("queue_full", "sampled_out", "shutdown", "invalid", "conversion", "refused")

_open = _bridge._spans  # one object for good (reset() clears it)
_getpid = os.getpid

_active_lock = threading.Lock()
_active: weakref.WeakSet[SpanProcessor] = weakref.WeakSet()


def _install(processor: SpanProcessor) -> None:
    with _active_lock:
        _active.add(processor)
        _handoff.set_external_parent(_bridge.external_parent)
        _handoff.feeders.append(processor._feed)


def _uninstall(processor: SpanProcessor) -> None:
    with _active_lock:
        _active.discard(processor)
        with contextlib.suppress(ValueError):
            _handoff.feeders.remove(processor._feed)
        if not _active and _handoff.external_parent is _bridge.external_parent:
            _handoff.set_external_parent(None)


class SpanProcessor(_SDKSpanProcessor):
    """Feeds an OpenTelemetry SDK ``TracerProvider``'s spans to llamonitor::

        provider.add_span_processor(llamonitor.otel.SpanProcessor())

    Rows go to the running monitoring (``initialize_monitoring``), or to
    ``writer``'s. Spans that end while monitoring is not running are kept (at
    most ``max_queue_size``) and handed over once it runs; the rest are
    dropped and counted (:meth:`stats`). Nothing here raises into the
    application.

    While a processor is live, a ``@monitor_llm`` span that starts inside an
    OTel span (and outside any llamonitor span) is that span's child, and an
    OTel span that starts inside a llamonitor span is its child in the store.

    Args:
        writer: the ``MonitoringWriter`` to feed; default: whichever runs when
            a batch is handed over.
        max_queue_size: finished spans held at most (see :data:`MAX_QUEUE_SIZE`).
        batch_size: spans converted at a time.
        interval_seconds: longest wait of a finished span before hand-over.

    Raises:
        ValueError: a bound that is not positive.
    """

    def __init__(
        self,
        writer: Any = None,
        *,
        max_queue_size: int = MAX_QUEUE_SIZE,
        batch_size: int = BATCH_SIZE,
        interval_seconds: float = INTERVAL_SECONDS,
    ) -> None:
        if max_queue_size < 1 or batch_size < 1 or not interval_seconds > 0:
            raise ValueError("max_queue_size and batch_size must be >= 1 and interval_seconds > 0")
        self._writer = writer
        self._max = max_queue_size
        self._batch = min(batch_size, max_queue_size)
        self._interval = interval_seconds
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.handed = 0
        self._shutdown = False
        self._reset()
        weak = weakref.WeakMethod(self._after_fork_in_child)

        def after_in_child() -> None:
            method = weak()
            if method is not None:
                method()

        os.register_at_fork(after_in_child=after_in_child)
        _install(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: deque[tuple[ReadableSpan, _bridge.Fix | None]] = deque()
        self._rows: deque[dict[str, Any]] = deque()  # converted, not handed over yet
        self._stop_at: float | None = None  # shutdown's deadline
        self._abandoned = False  # shutdown is over: what is left is dropped
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _after_fork_in_child(self) -> None:
        # The parent's queued spans are the parent's to write; its thread and
        # locks are not ours. A thread starts again at the next span.
        self._reset()

    # -- the SDK's interface (app threads) ------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        _bridge.on_start(span)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.context
            if ctx is None:
                return
            fix = _open.pop(ctx.span_id, None) if _open else None  # the bridge's fix
            if not ctx.trace_flags.sampled:
                return  # the application's sampler said no: like any exporter
            if self._shutdown:
                self._count("shutdown")
                return
            if fix is not None and not fix[4]:
                self._sampled_out()
                return
            if self._pid != _getpid():
                self._reset()  # a fork the at-fork hook did not see
            q = self._queue
            if len(q) >= self._max:
                self._count("queue_full")
                return
            q.append((span, fix))
            if self._thread is None:
                self._start_thread()
            elif len(q) >= self._batch:
                self._wake.set()
        except Exception as exc:
            report_internal_error("otel_on_end", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Hand every span ended so far to the pipeline (``llamonitor.flush()``
        after it waits for storage).

        Returns:
            True if all were handed over in time; False on timeout, after
            shutdown, or while monitoring is not running (they stay queued).
        """
        try:
            if self._shutdown:
                return False
            return self._export_all(time.monotonic() + timeout_millis / 1000)
        except Exception as exc:
            report_internal_error("otel_force_flush", exc)
            return False

    def _feed(self, timeout: float) -> bool:
        """``llamonitor.flush()`` / ``shutdown_monitoring()``: hand over first."""
        if self._shutdown:
            return True
        try:
            return self._export_all(time.monotonic() + timeout)
        except Exception as exc:
            report_internal_error("otel_force_flush", exc)
            return False

    def shutdown(self, timeout_millis: float = SHUTDOWN_TIMEOUT_SECONDS * 1000) -> None:
        """Hand over what is queued, stop the thread, all within
        ``timeout_millis``; what cannot be handed over by then (monitoring not
        running, a full pipeline) and later spans are dropped, counted
        (``shutdown``); :attr:`shutdown_ok` says whether all was handed over.
        Safe to call twice."""
        try:
            if self._shutdown:
                return
            deadline = time.monotonic() + max(0.0, timeout_millis) / 1000
            self._stop_at = deadline  # the thread's waits end by it too
            self._shutdown = True
            _uninstall(self)
            thread = self._thread
            self._wake.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
            ok = self._export_all(deadline)
            # What is left now is dropped: by us, or by whoever holds the lock
            # past the deadline (the thread ends its wait) as it lets it go.
            self._abandoned = True
            left = 0
            if self._export_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    left = self._drop_left()
                finally:
                    self._export_lock.release()
            else:
                left = 1  # a hand-over was still under way: not all handed over in time
            self.shutdown_ok = ok and not left
        except Exception as exc:
            report_internal_error("otel_shutdown", exc)

    def _drop_left(self) -> int:
        """After shutdown (export lock held): count what was not handed over."""
        left = len(self._queue) + len(self._rows)
        self._queue.clear()
        self._rows.clear()
        if left:  # monitoring not running, or the deadline passed
            self._count("shutdown", left)
        return left

    shutdown_ok: bool | None = None
    """After :meth:`shutdown`: True if every span was handed over in time."""

    # -- accounting -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``queued`` (spans and converted rows not handed over yet),
        ``handed`` (rows given to the pipeline) and ``dropped`` by reason."""
        return {"queued": len(self._queue) + len(self._rows), "handed": self.handed,
                "dropped": dict(self.dropped)}

    def _count(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def _sampled_out(self) -> None:
        pipeline = self._pipeline()
        if pipeline is not None:
            pipeline.count_sampled_out()  # llamonitor's own accounting of its sampling
        else:
            self._count("sampled_out")

    # -- the processor's thread ---------------------------------------------

    def _pipeline(self) -> Any:
        if self._writer is not None:
            return getattr(self._writer, "_pipeline", None)
        return _handoff.ACTIVE

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="llamonitor-otel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        CURRENT.set(SUPPRESSED)  # what the conversion calls is not monitored
        while not self._shutdown:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self._export_all(None)
            except Exception as exc:
                report_internal_error("otel_export", exc)

    def _export_all(self, deadline: float | None) -> bool:
        """Convert and hand over what is queued now; True if all of it was,
        False if ``deadline`` (``time.monotonic()``) came first."""
        lock = self._export_lock
        if deadline is None:
            lock.acquire()
        elif not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            q = self._queue
            while q or self._rows:
                until = self._until(deadline)
                if until is not None and time.monotonic() > until:
                    return False
                pipeline = self._pipeline()
                if pipeline is None:
                    return False  # kept until monitoring runs
                if not self._rows:
                    batch = [q.popleft() for _ in range(min(self._batch, len(q)))]
                    self._rows.extend(self._convert(batch))
                if not self._hand_over(pipeline, deadline):
                    return False
            return True
        finally:
            lock.release()
            # Released first, then looked at: shutdown sets the flag before it
            # tries the lock, so one of us two drops what is left.
            if self._abandoned and lock.acquire(blocking=False):
                try:
                    self._drop_left()
                finally:
                    lock.release()

    def _convert(self, batch: list[tuple[ReadableSpan, _bridge.Fix | None]]) -> list[Any]:
        try:
            rows, rejected = rows_of(batch)
        except Exception:
            # One span the encoder cannot take must not lose the others.
            rows, rejected = [], 0
            for item in batch:
                try:
                    more, bad = rows_of([item])
                except Exception as exc:
                    self._count("conversion")
                    report_internal_error("otel_convert", exc)
                    continue
                rows += more
                rejected += bad
        if rejected:
            self._count("invalid", rejected)
        return rows

    def _until(self, deadline: float | None) -> float | None:
        """The deadline of a wait: the caller's, or shutdown's."""
        stop = self._stop_at
        if stop is None:
            return deadline
        return stop if deadline is None else min(deadline, stop)

    def _hand_over(self, pipeline: Any, deadline: float | None) -> bool:
        """Submit the converted rows; False if the deadline (or shutdown's)
        came first, the rows not submitted kept."""
        rows = self._rows
        config = getattr(pipeline, "config", None)
        if config is not None and config.queue_full_policy == "block":
            return self._hand_over_blocking(pipeline, config.block_timeout_seconds, deadline)
        handed = refused = 0
        try:
            while rows:
                if pipeline.submit((None, rows[0], 0, row_bytes(rows[0]), None, None, None)):
                    handed += 1
                else:
                    refused += 1  # the pipeline counted why (queue full, shutdown)
                rows.popleft()
                until = self._until(deadline)
                if until is not None and rows and time.monotonic() > until:
                    return False
            return True
        finally:
            self.handed += handed
            if refused:
                self._count("refused", refused)

    def _hand_over_blocking(
        self, pipeline: Any, block_seconds: float, deadline: float | None
    ) -> bool:
        """The ``block`` policy: a chunk at a time, each waiting for room at
        most ``block_seconds`` (then dropped, counted ``queue_full``) and never
        past the deadline (then kept)."""
        rows = self._rows
        chunk = max(1, min(self._batch, pipeline.capacity // 2))
        while rows:
            part = [rows[i] for i in range(min(chunk, len(rows)))]
            records = [(None, row, 0, row_bytes(row), None, None, None) for row in part]
            end = time.monotonic() + block_seconds
            while True:
                # In slices: a shutdown that starts meanwhile sets a deadline.
                until = self._until(deadline)
                limit = end if until is None else min(end, until)
                wait = max(0.0, min(WAIT_SLICE_SECONDS, limit - time.monotonic()))
                if pipeline.submit_all(records, wait):
                    self.handed += len(part)
                    break
                if getattr(pipeline, "_stopping", False):  # refused at once: no room will come
                    return False  # the rows stay (shutdown counts them), no busy loop
                now = time.monotonic()
                until = self._until(deadline)
                if until is not None and now >= until:
                    return False  # the deadline came first: the rows stay for later
                if now >= end:
                    self._count("queue_full", len(part))  # blocked the policy's time: dropped
                    break
            for _ in part:
                rows.popleft()
        return True


_provider_lock = threading.Lock()
_provider: Any = None


def tracer_provider() -> Any:
    """An OpenTelemetry SDK ``TracerProvider`` that feeds llamonitor, for an
    application that has none of its own: the same one at every call. One line
    turns an instrumentation package on into llamonitor's store::

        LangChainInstrumentor().instrument(tracer_provider=llamonitor.otel.tracer_provider())

    It is not made the global provider (``opentelemetry.trace.set_tracer_provider``
    does that, if wanted). An application with a provider adds a
    :class:`SpanProcessor` to it instead.

    Returns:
        The ``opentelemetry.sdk.trace.TracerProvider``.
    """
    global _provider
    with _provider_lock:
        if _provider is None:
            from opentelemetry.sdk.trace import TracerProvider

            provider = TracerProvider()
            provider.add_span_processor(SpanProcessor())
            _provider = provider
        return _provider
