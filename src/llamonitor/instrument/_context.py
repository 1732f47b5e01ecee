"""Session / trace / span context, carried by one ContextVar.

The current span is a :class:`SpanContext`. ``monitoring_session`` and
``monitoring_trace`` push a context that has ids but no span of its own, so the
spans under them are roots of their trace.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED

P = ParamSpec("P")
R = TypeVar("R")

_getrandbits = _handoff.getrandbits
_RANDOM2 = _handoff.ID_RANDOM2
_random = _handoff.uniform01


def new_id128() -> str:
    """A fresh 32-hex-character id (trace and session ids): 48 bits of time
    (milliseconds, see ``_handoff.refresh_id_time``), 80 random bits."""
    return (_handoff.id_time | _getrandbits(80)).to_bytes(16, "big").hex()  # 2.5x an f-string


def _sampled() -> bool:
    rate = _handoff.sample_rate
    return rate >= 1.0 or _random() < rate


class SpanContext:
    """One node of the session → trace → span hierarchy.

    Used as a context manager, it makes itself the parent of everything that
    runs inside; with an ``operation_name`` it is also recorded as a span when
    the block ends::

        with SpanContext(session_id="s1", trace_id="t1") as parent:
            with SpanContext() as child:
                assert child.parent_span_id == parent.span_id

    Attributes set with :meth:`set_attribute` are stored in the span's
    ``custom_attributes``. ``span_id`` gives the span an id of your own (16 hex
    digits, as W3C trace context has them, are used as they are; other text is
    turned into a stable 64-bit id).

    In a collector's ``collect(result, args, kwargs, context)``, ``context`` is
    the span, and it also answers seed 000's context keys
    (``context["duration_ms"]``, ``context.get("custom_attributes")``, ``model``,
    ``function_args``, ``text_metrics``...; ``dict(context)`` has them all).
    """

    __slots__ = (
        "_attrs",
        "_call",
        "_op",
        "_parent",
        "_sid",
        "_t0",
        "_token",
        "sampled",
        "session_id",
        "trace_id",
    )

    # Filled by ``_init_span`` (spans of decorated calls skip ``__init__``).
    session_id: str
    trace_id: str  # None only on a bare ``monitoring_session`` scope
    sampled: bool
    _sid: int | None
    _parent: int | None
    _attrs: dict[str, Any] | None
    _op: str | None
    _t0: int
    _token: contextvars.Token[Any] | None
    _call: Any  # set only while collectors run (see ``_collector_context``)

    def __init__(
        self,
        session_id: str | None = None,
        trace_id: str | None = None,
        operation_name: str | None = None,
        *,
        span_id: str | int | None = None,
    ) -> None:
        _init_span(self, CURRENT.get(), session_id, trace_id)
        if span_id is not None:
            self._sid = _span_id_int(span_id)
        self._op = operation_name
        self._t0 = 0
        self._token = None

    @classmethod
    def current(cls) -> SpanContext:
        """The span (or session/trace scope) around the caller; outside any, a
        new context with fresh ids (not entered)."""
        current = CURRENT.get()
        if _live(current):
            return current  # type: ignore[no-any-return]
        return cls()

    def to_dict(self) -> dict[str, str | None]:
        """``session_id``, ``trace_id``, ``span_id`` and ``parent_span_id``."""
        return {
            "session_id": self.session_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
        }

    # -- seed 000's collector context: a read-only mapping ------------------

    def __getitem__(self, key: str) -> Any:
        from llamonitor.instrument._collector_context import context_value

        return context_value(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> tuple[str, ...]:
        from llamonitor.instrument._collector_context import context_keys

        return context_keys(self)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    @property
    def span_id(self) -> str | None:
        """This span's id (16 hex characters); ``None`` for a session/trace scope."""
        return None if self._sid is None else f"{self._sid:016x}"

    @property
    def parent_span_id(self) -> str | None:
        return None if self._parent is None else f"{self._parent:016x}"

    @property
    def attributes(self) -> dict[str, Any]:
        """Attributes added to this span so far (a live dict)."""
        if self._attrs is None:
            self._attrs = {}
        return self._attrs

    def set_attribute(self, key: str, value: Any) -> None:
        """Add one attribute, stored in ``custom_attributes`` (non-JSON values as repr)."""
        if self._attrs is None:
            self._attrs = {}
        self._attrs[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        if self._attrs is None:
            self._attrs = {}
        self._attrs.update(attributes)

    def score(
        self,
        name: str,
        value: float | bool | None = None,
        *,
        label: str | None = None,
        comment: str | None = None,
        source: str = "code",
        evaluator: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Score this span (a session/trace scope: its trace), like
        ``llamonitor.score(name, ..., span_id=...)``.

        Raises:
            ValueError: a bad argument (a NaN value...), at the call.
        """
        from llamonitor import _score_handoff
        from llamonitor.schema._scores import make_score

        span_id = self.span_id
        row = make_score(
            name,
            value,
            label=label,
            comment=comment,
            source=source,
            evaluator=evaluator,
            metadata=metadata,
            span_id=span_id,
            trace_id=None if span_id else self.trace_id,
            # a bare session scope has neither: it scores its session
            session_id=self.session_id if not span_id and not self.trace_id else None,
            span_trace_id=self.trace_id,
        )
        return _score_handoff.submit(row)

    def __enter__(self) -> SpanContext:
        self._token = CURRENT.set(self)
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        t1 = time.perf_counter_ns()
        token = getattr(self, "_token", None)
        if token is not None:
            self._token = None
            _restore(token, self)
        op: str | None = getattr(self, "_op", None)
        if op is not None and self._sid is not None:
            from llamonitor.instrument._record import record_block

            record_block(self, op, self._t0, t1, exc)

    def __repr__(self) -> str:
        return (
            f"SpanContext(session_id={self.session_id!r}, trace_id={self.trace_id!r}, "
            f"span_id={self.span_id!r}, parent_span_id={self.parent_span_id!r})"
        )


_HEX64 = re.compile(r"[0-9a-fA-F]{1,16}")


def _span_id_int(value: str | int) -> int:
    """A span id given by the user as the 64-bit int we keep."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    if isinstance(value, str) and _HEX64.fullmatch(value):
        return int(value, 16)
    if not isinstance(value, str):
        raise TypeError(f"span_id: expected a str, got {type(value).__name__}")
    # Any other text (a UUID...): the same text always gives the same id.
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


def _restore(token: contextvars.Token[Any], scope: Any) -> None:
    """Undo ``CURRENT.set`` (the ``reset(token)`` of a ``with`` block).

    A block can end in another context than it began in (the teardown of an
    async test fixture runs in another task): ``reset`` refuses that, and
    then only our own value is taken back, never someone else's.
    """
    try:
        CURRENT.reset(token)
    except (ValueError, RuntimeError):
        if CURRENT.get() is scope:
            old = token.old_value
            CURRENT.set(None if old is contextvars.Token.MISSING else old)


def _init_span(
    span: SpanContext, parent: Any, session_id: str | None, trace_id: str | None
) -> None:
    """Fill ``span``'s ids from ``parent`` (the hot path of every span start)."""
    if parent is None or parent is SUPPRESSED:
        if (
            _handoff.external_parent is not None
            and trace_id is None
            and parent is None
            and _external(span, session_id)
        ):
            return
        if session_id is None and trace_id is None:
            # Both ids in one draw, each with the time prefix (see new_id128).
            ids = ((_getrandbits(256) & _RANDOM2) | _handoff.id_time2).to_bytes(32, "big").hex()
            span.session_id = ids[:32]
            span.trace_id = ids[32:]
        else:
            span.session_id = session_id or new_id128()
            span.trace_id = trace_id or new_id128()
        span._parent = None
        rate = _handoff.sample_rate
        span.sampled = rate >= 1.0 or _random() < rate
    else:
        span.session_id = session_id or parent.session_id
        ptrace = parent.trace_id
        if ptrace is None or (trace_id is not None and trace_id != ptrace):
            # Under a bare session scope, or a trace of its own: a root span.
            if (
                ptrace is None
                and trace_id is None
                and _handoff.external_parent is not None
                and _external(span, span.session_id)
            ):
                return
            span.trace_id = trace_id or new_id128()
            span._parent = None
            span.sampled = _sampled()
        else:
            if _handoff.external_parent is not None and _external(span, span.session_id, parent):
                return  # an OTel span that began inside ``parent`` is nearer
            span.trace_id = ptrace
            span._parent = parent._sid
            span.sampled = parent.sampled
    span._sid = _getrandbits(64)
    span._attrs = None


def _external(span: SpanContext, session_id: str | None, inside: Any = None) -> bool:
    """Make ``span`` the child of another tracer's span around it (an
    OpenTelemetry span, see ``llamonitor.otel``); False if there is none.
    With ``inside`` (the llamonitor parent), only a span that began inside it."""
    ask = _handoff.external_parent
    found = None if ask is None else (ask() if inside is None else ask(inside))
    if found is None:
        return False
    span.trace_id, span._parent, session, span.sampled = found
    span.session_id = session_id or session
    span._sid = _getrandbits(64)
    span._attrs = None
    return True


_new_span = SpanContext.__new__


def start_span(
    parent: Any, session_id: str | None = None, trace_id: str | None = None
) -> SpanContext:
    """A new span under ``parent`` (not entered: the caller sets ``CURRENT``)."""
    span = _new_span(SpanContext)
    _init_span(span, parent, session_id, trace_id)
    return span


def _live(current: Any) -> bool:
    """``current`` (a ``CURRENT`` value) is a span or scope with ids."""
    return current is not None and current is not SUPPRESSED


def _scope(session_id: str, trace_id: str | None, sampled: bool) -> SpanContext:
    scope = _new_span(SpanContext)
    scope.session_id = session_id
    scope.trace_id = trace_id  # type: ignore[assignment]
    scope.sampled = sampled
    scope._sid = None
    scope._parent = None
    scope._attrs = None
    scope._op = None
    return scope


@contextmanager
def monitoring_session(session_id: str | None = None) -> Iterator[SpanContext]:
    """Spans started inside belong to ``session_id`` (fresh when omitted), each
    root span in a new trace unless a ``monitoring_trace`` says otherwise.
    Repeating the session already current changes nothing."""
    current = CURRENT.get()
    if session_id is not None and _live(current) and current.session_id == session_id:
        yield current  # spans inside stay children of the current span
        return
    scope = _scope(session_id or new_id128(), None, True)
    token = CURRENT.set(scope)
    try:
        yield scope
    finally:
        _restore(token, scope)


@contextmanager
def monitoring_trace(trace_id: str | None = None) -> Iterator[SpanContext]:
    """Spans started inside belong to trace ``trace_id`` (fresh when omitted).
    Repeating the trace already current changes nothing."""
    parent = CURRENT.get()
    if trace_id is not None and _live(parent) and parent.trace_id == trace_id:
        yield parent  # spans inside stay children of the current span
        return
    session = parent.session_id if _live(parent) else None
    scope = _scope(session or new_id128(), trace_id or new_id128(), _sampled())
    token = CURRENT.set(scope)
    try:
        yield scope
    finally:
        _restore(token, scope)


def set_session_id(session_id: str) -> None:
    """Make ``session_id`` the session of what runs next in this context, with
    no block to leave (seed 000; prefer ``with monitoring_session(...)``)."""
    CURRENT.set(_scope(session_id, None, True))


def set_trace_id(trace_id: str) -> None:
    """Make ``trace_id`` the trace of what runs next in this context, in the
    current session (seed 000; prefer ``with monitoring_trace(...)``)."""
    parent = CURRENT.get()
    session = parent.session_id if _live(parent) else None
    CURRENT.set(_scope(session or new_id128(), trace_id, _sampled()))


def clear_context() -> None:
    """Forget the current session, trace and span in this context (for tests)."""
    CURRENT.set(None)


def current_span() -> SpanContext | None:
    """The span being recorded around the caller, or ``None`` outside any span."""
    span = CURRENT.get()
    if span is None or span is SUPPRESSED or span._sid is None:
        return None
    return span  # type: ignore[no-any-return]


def current_session_id() -> str | None:
    span = CURRENT.get()
    return None if span is None or span is SUPPRESSED else span.session_id


def current_trace_id() -> str | None:
    span = CURRENT.get()
    return None if span is None or span is SUPPRESSED else span.trace_id


def propagate_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to a copy of the caller's context, for another thread.

    ``threading.Thread(target=propagate_context(work))`` makes the spans of
    ``work`` children of the span that created the thread. The returned
    callable may run in several threads at once: each call gets its own copy
    (a ``Context`` can be entered by one thread at a time).
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's context, so
    their spans link to the span that submitted them (what
    ``asyncio.to_thread`` does for one call)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)
