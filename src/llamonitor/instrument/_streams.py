"""The wrappers of generators and async generators: a span per stream, with
the item count and the time to the first item."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import KEEP_TEXT_CHARS, StreamFacts, error_facts, measure_text
from llamonitor.instrument._calls import collect, merge
from llamonitor.instrument._context import SpanContext, _init_span
from llamonitor.instrument._extract import as_str, extract_text
from llamonitor.instrument._spec import Spec, start

_clock = time.perf_counter_ns
_get = CURRENT.get
_set = CURRENT.set
_reset = CURRENT.reset
_new = SpanContext.__new__


def _chunk_text(spec: Spec, item: Any, chunks: list[str]) -> None:
    """Add the text of one streamed item to ``chunks`` (never raises)."""
    try:
        extractor = spec.extractor
        if extractor is None:
            text = item if item.__class__ is str else extract_text(item)
        else:
            text = extractor(item)
        if text is not None:
            chunks.append(text if text.__class__ is str else as_str(text))
    except Exception as exc:
        report_internal_error("measure_text", exc)


def _end_stream(
    pipe: Any,
    spec: Spec,
    span: SpanContext,
    t0: int,
    first: int,
    items: int,
    chunks: list[str] | None,
    kept: list[Any] | None,
    error: BaseException | None,
    closed_early: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Record a finished stream: item count, time to first item, its text."""
    t1 = _clock()
    try:
        if not span.sampled:
            pipe.count_sampled_out()
            return
        text: Any = None
        if chunks:  # no item had text: no text metrics, as for a call
            joined = "".join(chunks)
            text = measure_text(joined) if len(joined) > KEEP_TEXT_CHARS else joined
        more: dict[str, Any] | None = None
        if kept is not None:
            more = collect(spec, kept, args, kwargs, span, t0, t1)
        if closed_early:
            more = more or {}
            merge(more, {"custom_attributes": {"stream_closed_early": True}})
        facts = StreamFacts(items, (first - t0) / 1e6 if items else None, more)
        err = error_facts(error) if error is not None else None
        pipe.submit((spec, span, t0, t1, err, text, facts))
    except Exception as exc:
        report_internal_error("record_stream", exc)


def _begin_stream(
    spec: Spec, parent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> SpanContext:
    if spec.session_arg is None and spec.trace_arg is None:
        span = _new(SpanContext)
        _init_span(span, parent, None, None)
        return span
    return start(spec, parent, args, kwargs)


def wrap_gen(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        pipe = _handoff.ACTIVE
        parent = _get()
        if pipe is None or parent is SUPPRESSED:
            return (yield from fn(*args, **kwargs))
        try:
            span = _begin_stream(spec, parent, args, kwargs)
            sampled = span.sampled
            chunks: list[str] | None = [] if spec.measure_text and sampled else None
            kept: list[Any] | None = [] if spec.collectors and sampled else None
        except Exception as exc:
            report_internal_error("start_span", exc)
            return (yield from fn(*args, **kwargs))
        t0 = _clock()
        first = items = 0
        error: BaseException | None = None
        closed = False
        try:
            token = _set(span)
            try:
                gen = fn(*args, **kwargs)
            finally:
                _reset(token)
            send: Callable[[Any], Any] = gen.send
            value: Any = None
            while True:
                token = _set(span)
                try:
                    item = send(value)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _reset(token)
                if not items:
                    first = _clock()
                items += 1
                if chunks is not None:
                    if item.__class__ is str and spec.extractor is None:
                        chunks.append(item)
                    else:
                        _chunk_text(spec, item, chunks)
                if kept is not None:
                    kept.append(item)
                try:
                    value = yield item
                    send = gen.send
                except GeneratorExit:
                    closed = True
                    # No ContextVar switch here: this runs when the garbage collector
                    # finalizes an abandoned stream, and setting a ContextVar inside a
                    # collection can crash CPython (python/cpython#148891).
                    gen.close()
                    raise
                except BaseException as thrown:
                    send, value = gen.throw, thrown
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end_stream(
                pipe, spec, span, t0, first, items, chunks, kept, error, closed, args, kwargs
            )

    return wrapper


def wrap_async_gen(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    # One loop for monitored and unmonitored streams: an async generator has
    # no ``yield from``, and asend/athrow/aclose must reach ``fn`` either way.
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        pipe = _handoff.ACTIVE
        current = _get()
        span: Any = current  # unmonitored: the caller's context, nothing recorded
        monitored = False
        chunks: list[str] | None = None
        kept: list[Any] | None = None
        if pipe is not None and current is not SUPPRESSED:
            try:
                span = _begin_stream(spec, current, args, kwargs)
                chunks = [] if spec.measure_text and span.sampled else None
                kept = [] if spec.collectors and span.sampled else None
                monitored = True
            except Exception as exc:
                report_internal_error("start_span", exc)
                span = current
        t0 = _clock()
        first = items = 0
        error: BaseException | None = None
        closed = False
        try:
            token = _set(span)
            try:
                agen = fn(*args, **kwargs)
            finally:
                _reset(token)
            send: Callable[[Any], Any] = agen.asend
            value: Any = None
            while True:
                token = _set(span)
                try:
                    item = await send(value)
                except StopAsyncIteration:
                    return
                finally:
                    _reset(token)
                if not items:
                    first = _clock()
                items += 1
                if chunks is not None:
                    if item.__class__ is str and spec.extractor is None:
                        chunks.append(item)
                    else:
                        _chunk_text(spec, item, chunks)
                if kept is not None:
                    kept.append(item)
                try:
                    value = yield item
                    send = agen.asend
                except GeneratorExit:
                    closed = True
                    token = _set(span)
                    try:
                        await agen.aclose()
                    finally:
                        _reset(token)
                    raise
                except BaseException as thrown:
                    send, value = agen.athrow, thrown
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if monitored:
                _end_stream(
                    pipe, spec, span, t0, first, items, chunks, kept, error, closed, args, kwargs
                )

    return wrapper
