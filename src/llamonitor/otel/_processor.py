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

    def shutdown(self) -> None:
        """Hand over what is queued, stop the thread; what cannot be handed
        over (monitoring not running) and later spans are dropped, counted
        (``shutdown``). Safe to call twice."""
        try:
            if self._shutdown:
                return
            self._shutdown = True
            _uninstall(self)
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT_SECONDS
            thread = self._thread
            self._wake.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
            self._export_all(deadline)
            left = len(self._queue)
            if left:  # monitoring not running, or the deadline passed
                self._queue.clear()
                self._count("shutdown", left)
        except Exception as exc:
            report_internal_error("otel_shutdown", exc)

    # -- accounting -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``queued`` (not handed over yet), ``handed`` (rows given to the
        pipeline) and ``dropped`` by reason."""
        return {"queued": len(self._queue), "handed": self.handed, "dropped": dict(self.dropped)}

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
        """Convert and hand over what is queued now; True if all of it was."""
        lock = self._export_lock
        if deadline is None:
            lock.acquire()
        elif not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            q = self._queue
            while q:
                pipeline = self._pipeline()
                if pipeline is None:
                    return False  # kept until monitoring runs
                batch = [q.popleft() for _ in range(min(self._batch, len(q)))]
                self._hand_over(pipeline, batch)
                if deadline is not None and q and time.monotonic() > deadline:
                    return False
            return True
        finally:
            lock.release()

    def _hand_over(
        self, pipeline: Any, batch: list[tuple[ReadableSpan, _bridge.Fix | None]]
    ) -> None:
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
        handed = refused = 0
        for row in rows:
            if pipeline.submit((None, row, 0, 0, None, None, None)):
                handed += 1
            else:
                refused += 1  # the pipeline counted why (queue full, shutdown)
        self.handed += handed
        if refused:
            self._count("refused", refused)


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
