"""``SpanHandler``: seed 001's events as llamonitor spans, in the running pipeline.

Seed 001's mapping (its OpenTelemetry handler's), onto the rows decorated
code makes:

=========================  =====================================================
event                      span
=========================  =====================================================
``SessionStartEvent``      a new trace: its root span (``session``) opens
``CommandStartedEvent``    a span (``command``, named by the command's class) opens
``CommandResultEvent``     that span closes; failed unless ``success``
``LLMCallEvent``           an ``llm_call`` span: model, provider, tokens, cost
``LLMResponseEvent``       closes the ``LLMCallEvent`` of its ``call_id``
``ToolExecuteResultEvent``  a ``tool`` span
``EventHandlerFailedEvent``  a failed ``event_handler`` span (``error_type``,
                           ``error_message``) under the span of the event
                           the handler failed on
``SessionEndEvent``        the root span closes with the session's duration
=========================  =====================================================

Parents: an event's ``parent_id`` (a command's id or an LLM call's
``call_id``) when given; else the innermost open command of its session; else
the session's root. An event outside any open session and command goes under
the llamonitor span around its publisher (a decorated function), in that
trace, or else starts a trace of its own. What is still open when its session ends is closed then,
with ``custom_attributes["llamonitor.unfinished"] = true``; a result without
its start becomes a span of its own, marked ``llamonitor.unmatched``.

Ids are the decorator's (16-hex span ids, 32-hex trace ids); the session id
is the events' own. Rows go to the pipeline ``initialize_monitoring`` started
(``MonitorConfig.sample_rate`` applies per trace, as for decorated code);
without one, they are counted in ``dropped``. A span kept at a sample rate
below 1 records it in ``custom_attributes["llamonitor.sample_rate"]``, which
``llamonitor stats`` and the reports use to scale counts back up.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from llamonitor import _handoff
from llamonitor._internal import report_internal_error
from llamonitor._records import row_bytes, safe_json
from llamonitor.llm import _settings as llm_settings
from llamonitor.llm._responses import facts_and_text
from llamonitor.observability import _facts as f
from llamonitor.observability._events import DEFAULT_SESSION_ID, to_jsonable
from llamonitor.observability._llm import captured, llm_facts, price
from llamonitor.observability._runner import ObservabilityHandler
from llamonitor.schema._columns import COLUMN_NAMES, column_value
from llamonitor.schema.events import MetricEvent

SAMPLE_RATE_KEY = "llamonitor.sample_rate"
"""``custom_attributes`` key: the fraction of sessions a sampled span stands for."""

UNFINISHED_KEY = "llamonitor.unfinished"
UNMATCHED_KEY = "llamonitor.unmatched"

MAX_OPEN_SPANS = 100_000
"""Open spans kept; past it the oldest is closed (unfinished)."""

MAX_OPEN_SESSIONS = 10_000
"""Open sessions kept; past it the oldest is closed (unfinished)."""

MAX_CLOSED_REFS = 10_000
"""Recently closed spans remembered, for events that arrive after their parent closed."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Columns MetricEvent holds at >= 0 (token counts, costs, times): a negative value
# from a framework is kept as an attribute instead.
_NON_NEGATIVE = frozenset(
    name
    for name, info in MetricEvent.model_fields.items()
    if any(getattr(m, "ge", None) == 0 for m in info.metadata)
)


@dataclass(slots=True, eq=False)
class _Span:
    """An open span (or a closed one remembered as a parent)."""

    kind: str  # the operation_type
    name: str
    session_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_us: int
    perf_ns: int | None
    keep: bool
    monitor_rate: float
    rate: float
    attrs: dict[str, Any] = field(default_factory=dict)
    cols: dict[str, Any] = field(default_factory=dict)
    key: str | None = None


class SpanHandler(ObservabilityHandler):
    """Turns events into spans of the running monitoring pipeline (see the module).

    ``submitted``, ``dropped`` (no pipeline, or its queue full) and
    ``sampled_out`` (``MonitorConfig.sample_rate``) count the rows.
    """

    ordered: ClassVar[bool] = True

    def __init__(self) -> None:
        self._sessions: dict[str, _Span] = {}  # session id -> its root span
        self._open: dict[str, _Span] = {}  # command_id / call_id -> span, in start order
        self._by_session: dict[str, dict[str, _Span]] = {}  # the same, per session
        self._closed: dict[str, _Span] = {}
        self.submitted = 0
        self.dropped = 0
        self.sampled_out = 0
        self.unmatched = 0
        self._pipeline: Any = None
        self._lock = threading.Lock()
        self._around: Any = None

    @property
    def name(self) -> str:
        return "spans"

    def handle(self, event: Any) -> None:
        self.handle_sampled(event, 1.0)

    def handle_sampled(self, event: Any, sample_rate: float, around: Any = None) -> None:
        """Map one event (the manager passes the rate it was kept at, and the
        llamonitor span it was observed in)."""
        kind = f.kind(event)
        if kind is None:
            return
        with self._lock:  # one manager calls it from one thread; two managers may share it
            self._around = around
            try:
                getattr(self, "_" + kind)(event, sample_rate)
            except Exception as exc:  # a bug of ours, or an event too odd to map
                report_internal_error(f"observability.spans.{kind}", exc)

    def close(self) -> None:
        """Close what is still open (``unfinished``, ending now): the manager's
        ``shutdown`` (at exit too) loses no span of a session that never ended."""
        with self._lock:
            self._close_all()

    def _close_all(self) -> None:
        now = time.time_ns() // 1000
        for root in list(self._sessions.values()):
            self._end_session(root, now, None, None, unfinished=True)
        self._sessions.clear()
        for key in list(self._open):
            span = self._pop_open(key)
            if span is not None:
                self._finish(span, now, None, None, unfinished=True)

    def after_fork_in_child(self) -> None:
        """A forked child starts empty: the spans open at fork are the parent's to
        close (closed here too, they would be written twice)."""
        self._lock = threading.Lock()
        self._sessions.clear()
        self._open.clear()
        self._by_session.clear()
        self._closed.clear()

    # -- the mapping -----------------------------------------------------------------

    def _session_start(self, ev: Any, rate: float) -> None:
        sid = self._session_of(ev)
        old = self._sessions.pop(sid, None)
        if old is not None:  # started again: the first one never ended
            self._end_session(old, f.wall_us(ev), None, None, unfinished=True)
        root = self._new_span(ev, None, sid, "session", "session", rate, f.wall_us(ev))
        self._sessions[sid] = root
        if len(self._sessions) > MAX_OPEN_SESSIONS:
            stale = self._sessions.pop(next(iter(self._sessions)))
            self._end_session(stale, stale.start_us, None, None, unfinished=True)

    def _session_end(self, ev: Any, rate: float) -> None:
        sid = self._session_of(ev)
        root = self._sessions.pop(sid, None)
        if root is None:
            self.unmatched += 1
            return
        error = f.error_of(getattr(ev, "error", None), "SessionError")
        self._end_session(root, f.wall_us(ev), f.perf_ns(ev), error)

    def _command_started(self, ev: Any, rate: float) -> None:
        cid = f.command_id(ev) or str(getattr(ev, "event_id", ""))
        parent = self._parent(ev, self._session_of(ev))
        span = self._new_span(ev, parent, self._session_of(ev), f.command_type(ev), "command", rate)
        span.attrs["command_id"] = cid
        self._add_open(cid, span)

    def _command_result(self, ev: Any, rate: float) -> None:
        cid = f.command_id(ev)
        span = None if cid is None else self._pop_open(cid)
        if span is None:
            self.unmatched += 1
            sid = self._session_of(ev)
            span = self._new_span(
                ev, self._parent(ev, sid), sid, f.command_type(ev), "command", rate
            )
            span.attrs[UNMATCHED_KEY] = True
            if cid is not None:
                span.attrs["command_id"] = cid
        success, message = f.command_outcome(ev)
        error = None if success else f.error_of(message or "command failed", "CommandFailed")
        self._finish(span, f.wall_us(ev), f.perf_ns(ev), error)

    def _llm_call(self, ev: Any, rate: float) -> None:
        cols = llm_facts(ev)
        duration = f.number(getattr(ev, "duration_ms", None))
        error = f.error_of(getattr(ev, "error", None), "LLMError")
        done = (
            duration is not None
            or error is not None
            or getattr(ev, "completion", None) is not None
            or any(cols.get(k) is not None for k in ("input_tokens", "output_tokens", "cost_usd"))
        )
        end = f.wall_us(ev)
        start = end - int(duration * 1000) if done and duration else end
        name = f.text(getattr(ev, "operation_name", None)) or "chat"
        sid = self._session_of(ev)
        span = self._new_span(ev, self._parent(ev, sid), sid, name, "llm_call", rate, start)
        span.cols.update(cols)
        span.perf_ns = None  # the event is the call's end, or its start with no end yet
        call_id = f.text(getattr(ev, "call_id", None))
        if call_id:
            span.attrs["call_id"] = call_id
        if done or not call_id:
            self._finish(span, end, None, error, duration_ms=duration)
        else:
            span.perf_ns = f.perf_ns(ev)
            self._add_open(call_id, span)

    def _llm_response(self, ev: Any, rate: float) -> None:
        call_id = f.text(getattr(ev, "call_id", None))
        span = None if call_id is None else self._pop_open(call_id)
        if span is None:
            self.unmatched += 1
            sid = self._session_of(ev)
            span = self._new_span(ev, self._parent(ev, sid), sid, "chat", "llm_call", rate)
            span.attrs[UNMATCHED_KEY] = True
        found = facts_and_text(getattr(ev, "raw_response", None), True)
        completion = getattr(ev, "completion", None)
        if found is not None:
            for key, value in found[0].items():
                if span.cols.get(key) is None:
                    span.cols[key] = value
            if completion is None:
                completion = found[1]
        for key in ("input_tokens", "output_tokens", "cost_usd"):
            value = f.number(getattr(ev, key, None))
            if value is not None:
                span.cols[key] = value
        span.cols.update(captured(None, completion))
        error = f.error_of(getattr(ev, "error", None), "LLMError")
        self._finish(span, f.wall_us(ev), f.perf_ns(ev), error)

    def _tool(self, ev: Any, rate: float) -> None:
        duration = f.number(getattr(ev, "duration_ms", None))
        end = f.wall_us(ev)
        info = getattr(ev, "tool_info", None)
        name = (
            f.text(getattr(ev, "tool_name", None))
            or (f.text(info.get("name")) if isinstance(info, dict) else None)
            or "tool"
        )
        parent = self._parent(ev, self._session_of(ev))
        start = end - int(duration * 1000) if duration else end
        span = self._new_span(ev, parent, self._session_of(ev), name, "tool", rate, start)
        call_id = f.text(getattr(ev, "tool_call_id", None))
        if call_id:
            span.attrs["tool_call_id"] = call_id
        error = f.error_of(getattr(ev, "error", None), "ToolError")
        if error is None and getattr(ev, "execution_succeed", None) is False:
            result = getattr(ev, "tool_result", None)
            error = ("ToolError", f.text(result) or "tool execution failed")
        self._finish(span, end, None, error, duration_ms=duration)

    def _handler_failed(self, ev: Any, rate: float) -> None:
        failed = getattr(ev, "event", None)
        pid = f.text(getattr(ev, "parent_id", None))
        if pid is None and failed is not None:
            pid = f.command_id(failed) or f.text(getattr(failed, "call_id", None))
        parent = self._lookup(pid) if pid else None
        if parent is None:
            parent = self._parent(ev, self._session_of(ev))
        handler = f.text(getattr(ev, "handler", None)) or "handler"
        span = self._new_span(ev, parent, self._session_of(ev), handler, "event_handler", rate)
        if failed is not None:
            span.attrs["failed_event"] = type(failed).__name__
        exc = getattr(ev, "exception", None)
        error = f.error_of(exc, "HandlerFailed") or ("HandlerFailed", f"{handler} failed")
        end = f.wall_us(ev)
        self._finish(span, end, None, error, duration_ms=0.0)

    # -- spans -------------------------------------------------------------------------

    def _session_of(self, ev: Any) -> str:
        return f.text(getattr(ev, "session_id", None)) or DEFAULT_SESSION_ID

    def _lookup(self, key: str) -> _Span | None:
        return self._open.get(key) or self._closed.get(key)

    def _parent(self, ev: Any, sid: str) -> _Span | None:
        """The span ``ev`` belongs under (see the module's docstring)."""
        pid = f.text(getattr(ev, "parent_id", None))
        if pid:
            found = self._lookup(pid)
            if found is not None:
                return found
        for span in reversed(self._by_session.get(sid, {}).values()):
            if span.kind == "command":
                return span
        return self._sessions.get(sid)

    def _new_span(
        self,
        ev: Any,
        parent: _Span | None,
        sid: str,
        name: str,
        kind: str,
        rate: float,
        start_us: int | None = None,
    ) -> _Span:
        around = self._around
        parent_span_id = None if parent is None else parent.span_id
        if parent is None and around is not None and getattr(around, "trace_id", None):
            # Published inside a decorated function: under its span, in its trace
            # (whose root made the sampling decision).
            trace_id, parent_span_id = around.trace_id, getattr(around, "span_id", None)
            keep, monitor_rate = bool(getattr(around, "sampled", True)), 1.0
        elif parent is None:  # a new trace: MonitorConfig.sample_rate applies here
            trace_id = _handoff.getrandbits(128).to_bytes(16, "big").hex()
            monitor_rate = _handoff.sample_rate
            keep = monitor_rate >= 1.0 or _handoff.uniform01() < monitor_rate
            if not keep:
                self.sampled_out += 1
                queue = _handoff.ACTIVE
                if queue is not None:
                    queue.count_sampled_out()
        else:
            trace_id, keep, monitor_rate = parent.trace_id, parent.keep, parent.monitor_rate
        metadata = getattr(ev, "metadata", None)
        attrs: dict[str, Any] = {}
        if isinstance(metadata, dict) and metadata:
            attrs.update(to_jsonable(metadata))
        return _Span(
            attrs=attrs,
            keep=keep,
            kind=kind,
            monitor_rate=monitor_rate,
            name=name,
            parent_span_id=parent_span_id,
            perf_ns=f.perf_ns(ev),
            rate=rate * monitor_rate,
            session_id=sid,
            span_id=f"{_handoff.getrandbits(64):016x}",
            start_us=f.wall_us(ev) if start_us is None else start_us,
            trace_id=trace_id,
        )

    def _add_open(self, key: str, span: _Span) -> None:
        span.key = key
        old = self._pop_open(key)
        if old is not None:  # the same id started twice: the first never finished
            self._finish(old, span.start_us, None, None, unfinished=True)
        self._open[key] = span
        self._by_session.setdefault(span.session_id, {})[key] = span
        if len(self._open) > MAX_OPEN_SPANS:
            stale = self._pop_open(next(iter(self._open)))
            if stale is not None:
                self._finish(stale, stale.start_us, None, None, unfinished=True, duration_ms=None)

    def _pop_open(self, key: str) -> _Span | None:
        span = self._open.pop(key, None)
        if span is not None:
            mine = self._by_session.get(span.session_id)
            if mine is not None:
                mine.pop(key, None)
                if not mine:
                    del self._by_session[span.session_id]
        return span

    def _end_session(
        self,
        root: _Span,
        end_us: int,
        end_perf: int | None,
        error: tuple[str, str] | None,
        unfinished: bool = False,
    ) -> None:
        for key, span in list(self._by_session.get(root.session_id, {}).items()):
            if span.trace_id == root.trace_id:
                self._pop_open(key)
                self._finish(span, end_us, end_perf, None, unfinished=True)
        self._finish(root, end_us, end_perf, error, unfinished=unfinished)

    def _finish(
        self,
        span: _Span,
        end_us: int,
        end_perf: int | None,
        error: tuple[str, str] | None,
        *,
        unfinished: bool = False,
        duration_ms: float | None = -1.0,
    ) -> None:
        """Close ``span`` and submit its row."""
        if span.key is not None:
            self._closed[span.key] = span
            if len(self._closed) > MAX_CLOSED_REFS:
                del self._closed[next(iter(self._closed))]
        if not span.keep:
            return
        if duration_ms is not None and duration_ms < 0:
            if span.perf_ns is not None and end_perf is not None:
                duration_ms = max(0.0, (end_perf - span.perf_ns) / 1e6)
            else:
                duration_ms = max(0.0, (end_us - span.start_us) / 1000)
        if unfinished:
            span.attrs[UNFINISHED_KEY] = True
        if span.rate < 1.0:
            span.attrs[SAMPLE_RATE_KEY] = span.rate
        row = self._row(span, duration_ms, error)
        queue = _handoff.ACTIVE
        if queue is not self._pipeline:
            self._pipeline = queue
            if queue is not None:
                from llamonitor.observability._manager import exit_before_monitoring

                exit_before_monitoring()  # what is queued at exit reaches the store
        if queue is not None and queue.submit((None, row, 0, row_bytes(row), None, None, None)):
            self.submitted += 1
        else:
            self.dropped += 1

    def _row(
        self, span: _Span, duration_ms: float | None, error: tuple[str, str] | None
    ) -> dict[str, Any]:
        """The span's stored-form row (as ``MetricEvent.to_row`` makes, without
        validating a model per span)."""
        cols = {k: v for k, v in span.cols.items() if v is not None}
        if span.kind == "llm_call":
            price(cols)
        attrs = span.attrs
        row = dict.fromkeys(COLUMN_NAMES)
        for key, value in cols.items():
            fitted = column_value(key, value)  # its type, int64's range
            if fitted is None or (key in _NON_NEGATIVE and fitted < 0):
                attrs[key] = to_jsonable(value)  # kept, not in a column it does not fit
            else:
                row[key] = fitted
        if row["project_name"] is None:
            row["project_name"] = llm_settings.SETTINGS.project_name
        row.update(
            event_id=_handoff.getrandbits(128).to_bytes(16, "big").hex(),
            session_id=span.session_id,
            trace_id=span.trace_id,
            span_id=span.span_id,
            parent_span_id=span.parent_span_id,
            operation_name=span.name,
            operation_type=span.kind,
            timestamp=_EPOCH + timedelta(microseconds=span.start_us),
            duration_ms=duration_ms,
            process_id=os.getpid(),
            custom_attributes=safe_json(attrs),
        )
        if error is not None:
            row.update(error=True, error_type=error[0], error_message=error[1])
        return row
