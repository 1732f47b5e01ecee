"""One tree from two tracers: llamonitor's spans and OpenTelemetry's.

OpenTelemetry's ids are fixed when a span starts, so an OTel span that starts
inside a llamonitor span cannot be given our ids. Instead, :func:`on_start`
notes, for each OTel span whose place in our tree differs from what its own
ids say, what its row must say instead (a *fix*): the trace and session of the
llamonitor span around it, and that span as its parent. Its OTel children
inherit the fix of their parent, so a whole OTel subtree lands in our trace.

The other way, a llamonitor span asks :func:`external_parent` (installed in
``llamonitor._handoff``) for the OTel span around it, and becomes its child,
in the trace that span's fix gives: a span with no llamonitor parent, for any
OTel span; a span with one, only for an OTel span that began inside that
parent (``@monitor_llm`` -> OTel -> ``@monitor_llm``: the OTel span is the
nearer parent). The second question costs the decorator nothing while no OTel
span has begun inside a llamonitor span (the table of fixes is empty).
Frameworks that do not make their spans current (OpenInference's LangChain
tracer) are asked where they are (:data:`SPAN_FINDERS`).

Which of the two is the nearer parent, when an OTel span starts with both an
OTel parent and a llamonitor span around it: the llamonitor span, unless it is
the one that was current when the OTel parent started (then the OTel parent
began inside it, and is nearer).

Both tables are bounded: an OTel span that never ends is forgotten after
:data:`MAX_OPEN_SPANS` newer ones (counted in :data:`stats`).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any

from opentelemetry.trace import get_current_span

from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor.otel._conventions import SESSION_ATTRIBUTES

MAX_OPEN_SPANS = 100_000
"""OTel spans remembered while they run (only those whose row needs a fix, or
that started inside a llamonitor span)."""

MAX_TRACES = 20_000
"""OTel traces remembered as belonging to a llamonitor trace (for the spans
that start after their parent ended)."""

# A fix: (trace_id, session_id, parent_span_id, outer, sampled).
#   trace_id / session_id / parent_span_id: what the row says instead of what
#   the OTel span says (None: the span's own); outer: the llamonitor span or
#   scope current when the OTel span started (None outside any); sampled:
#   False when the llamonitor trace around it is sampled out.
Fix = tuple[str | None, str | None, str | None, Any, bool]

_spans: OrderedDict[int, Fix] = OrderedDict()
_traces: OrderedDict[int, tuple[str, str, bool]] = OrderedDict()
_get_current = CURRENT.get

stats = {"evicted_spans": 0, "evicted_traces": 0}
"""Entries forgotten because the tables were full."""


def _remember(span_id: int, fix: Fix) -> None:
    _spans[span_id] = fix
    if len(_spans) > MAX_OPEN_SPANS:
        try:
            _spans.popitem(last=False)
            stats["evicted_spans"] += 1
        except KeyError:  # another thread took the last one
            pass


def _remember_trace(trace_id: int, trace: str, session: str, sampled: bool) -> None:
    _traces[trace_id] = (trace, session, sampled)
    if len(_traces) > MAX_TRACES:
        try:
            _traces.popitem(last=False)
            stats["evicted_traces"] += 1
        except KeyError:
            pass


def on_start(span: Any) -> None:
    """Note the fix of an OTel span that just started (on the app thread)."""
    try:
        cur = _get_current()
        if cur is SUPPRESSED:
            cur = None
        ctx = span.get_span_context()
        parent = span.parent
        if parent is None or not parent.is_valid:
            if cur is None:
                return  # an OTel root outside llamonitor: its own ids are right
            _under(cur, ctx, root=True)
            return
        pfix = _spans.get(parent.span_id)
        outer = None if pfix is None else pfix[3]
        if cur is not None and cur is not outer and cur._sid is not None:
            # A llamonitor span entered after the OTel parent began: nearer.
            _under(cur, ctx, root=False)
            return
        if pfix is not None:
            if pfix[0] is not None or pfix[1] is not None or not pfix[4] or cur is not None:
                _remember(ctx.span_id, (pfix[0], pfix[1], None, cur, pfix[4]))
            return
        inherited = _traces.get(ctx.trace_id)
        if inherited is not None:  # the parent ended (or was forgotten) already
            _remember(ctx.span_id, (inherited[0], inherited[1], None, cur, inherited[2]))
        elif cur is not None:
            _remember(ctx.span_id, (None, None, None, cur, True))
    except Exception as exc:
        report_internal_error("otel_on_start", exc)


def _under(cur: Any, ctx: Any, root: bool) -> None:
    """The OTel span ``ctx`` is a child of llamonitor's ``cur`` (a span, or a
    session / trace scope with no span of its own)."""
    trace: str | None = cur.trace_id  # None: a bare session scope
    sid = cur._sid
    _remember(
        ctx.span_id,
        (trace, cur.session_id, None if sid is None else f"{sid:016x}", cur, cur.sampled),
    )
    if root:
        _remember_trace(ctx.trace_id, trace or f"{ctx.trace_id:032x}", cur.session_id, cur.sampled)


def apply(row: dict[str, Any], fix: Fix) -> None:
    """Put the fix into a stored-form row of the OTel span."""
    if fix[0] is not None:
        row["trace_id"] = fix[0]
    if fix[1] is not None:
        row["session_id"] = fix[1]
    if fix[2] is not None:
        row["parent_span_id"] = fix[2]


def _session_of(span: Any, trace: str) -> str:
    attrs = getattr(span, "attributes", None)
    if attrs:
        for key in SESSION_ATTRIBUTES:
            value = attrs.get(key)
            if value is not None and value != "":
                return str(value)
    return trace


def _current_otel() -> Any:
    """The OTel span around the caller (OTel's current span, else a
    framework's: :data:`SPAN_FINDERS`), or ``None``."""
    span = get_current_span()
    if span.get_span_context().is_valid:
        return span
    return _framework_span()


def external_parent(inside: Any = None) -> tuple[str, int, str, bool] | None:
    """The OTel span around the caller, as llamonitor's parent of a new span:
    ``(trace_id, span id, session_id, sampled)``, or ``None``.

    ``inside`` is the llamonitor span (or scope) around the caller, if any:
    then only an OTel span that began inside it (nearer than it) counts. So
    ``@monitor_llm`` -> OTel span -> ``@monitor_llm`` stores the inner span
    under the OTel one. Without ``inside`` (a root), only a sampled span
    counts (an unsampled one is never stored, so a child of it would be an
    orphan): a local one this bridge saw start, or a remote parent (a trace
    continued from another service).
    """
    try:
        if inside is not None:
            if not _spans:  # no OTel span began inside a llamonitor span
                return None
            span = _current_otel()
            if span is None:
                return None
            ctx = span.get_span_context()
            fix = _spans.get(ctx.span_id)
            if fix is None or fix[3] is not inside or not ctx.trace_flags.sampled:
                return None
            trace = fix[0] or f"{ctx.trace_id:032x}"
            return trace, ctx.span_id, fix[1] or _session_of(span, trace), fix[4]
        span = _current_otel()
        if span is None:
            return None
        ctx = span.get_span_context()
        if not ctx.is_valid or not ctx.trace_flags.sampled:
            return None
        fix = _spans.get(ctx.span_id)
        own = f"{ctx.trace_id:032x}"
        if fix is not None:
            trace = fix[0] or own
            return trace, ctx.span_id, fix[1] or _session_of(span, trace), fix[4]
        inherited = _traces.get(ctx.trace_id)
        if inherited is not None:
            return inherited[0], ctx.span_id, inherited[1], inherited[2]
        if not ctx.is_remote and not _feeds_llamonitor(span):
            # A span of a provider without our processor is never stored: a
            # child of it would be an orphan. The new span stays a root.
            return None
        session = _session_of(span, own)
        if not ctx.is_remote and span.is_recording():
            # Asked once per OTel span, not once per child; and the span's own
            # row, and its OTel children's, get the session its children have.
            _remember(ctx.span_id, (own, session, None, None, True))
        return own, ctx.span_id, session, True
    except Exception as exc:
        report_internal_error("otel_external_parent", exc)
        return None


def _feeds_llamonitor(span: Any) -> bool:
    """``span`` comes from a provider that has a llamonitor ``SpanProcessor``
    (the SDK keeps its processors on each span: ``_span_processor``)."""
    from llamonitor.otel._processor import SpanProcessor

    multi = getattr(span, "_span_processor", None)
    if isinstance(multi, SpanProcessor):
        return True
    return any(isinstance(p, SpanProcessor) for p in getattr(multi, "_span_processors", ()))


SPAN_FINDERS: tuple[tuple[str, str], ...] = (
    # OpenInference's LangChain tracer does not make its spans current (a
    # callback system cannot promise to detach them): it offers this instead.
    ("openinference.instrumentation.langchain", "get_current_span"),
)
"""``(module, function)``: where to find the span of a framework that does not
make its spans OTel's current span; asked only when there is no current span,
and only when the module is imported already."""


def _framework_span() -> Any:
    modules = sys.modules
    for module, name in SPAN_FINDERS:
        found = modules.get(module)
        if found is not None:
            span = getattr(found, name)()
            if span is not None:
                return span
    return None


def reset() -> None:
    """Forget every open span and trace (tests)."""
    _spans.clear()
    _traces.clear()
