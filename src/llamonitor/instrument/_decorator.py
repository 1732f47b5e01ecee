"""``@monitor_llm``: one span per call of an async/sync function or generator.

The hot path (between the user's call and return) is: read the parent span,
make a span id, set the ContextVar, two clock readings, the collectors that
must see the live result, one append to the queue. Text is measured on the
worker thread unless it is long (see ``llamonitor._records``).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any, TypeVar, overload

from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import (
    KEEP_TEXT_CHARS,
    StreamFacts,
    error_facts,
    measure_text,
    safe_json,
)
from llamonitor.instrument._context import SpanContext, _init_span, start_span
from llamonitor.instrument._extract import as_str, extract_text
from llamonitor.instrument.collectors import (
    CollectorRegistry,
    ImageCollector,
    MetricCollector,
    TextCollector,
)
from llamonitor.llm import AGENT
from llamonitor.llm._usage import add_estimates, response_facts, response_text
from llamonitor.schema._columns import ATTRIBUTE_COLUMNS, TEXT_METRICS, column_value
from llamonitor.transport import writer as _writer

F = TypeVar("F", bound=Callable[..., Any])

_clock = time.perf_counter_ns
_KEEP = KEEP_TEXT_CHARS
_get = CURRENT.get
_set = CURRENT.set
_reset = CURRENT.reset
_new = SpanContext.__new__

_MISSING: Any = object()

# Where an id argument is: (parameter name, position or -1, default or _MISSING).
ArgSpot = tuple[str, int, Any]


class Spec:
    """The static facts of one decorated function, shared by all its spans."""

    __slots__ = (
        "agent_name",
        "collectors",
        "columns",
        "custom_attributes",
        "custom_json",
        "extractor",
        "measure_text",
        "operation_name",
        "operation_type",
        "session_arg",
        "text_metrics",
        "trace_arg",
    )

    def __init__(
        self,
        operation_name: str,
        operation_type: str = "llm_call",
        custom_attributes: dict[str, Any] | None = None,
        measure_text: bool = False,
        text_metrics: tuple[bool, ...] | None = None,
        extractor: Callable[[Any], str | None] | None = None,
        collectors: tuple[MetricCollector, ...] = (),
        session_arg: ArgSpot | None = None,
        trace_arg: ArgSpot | None = None,
        agent_name: str | None = None,
    ) -> None:
        self.operation_name = operation_name
        self.operation_type = operation_type
        self.custom_attributes = dict(custom_attributes) if custom_attributes else None
        self.custom_json = safe_json(self.custom_attributes) if self.custom_attributes else None
        self.agent_name = agent_name
        # Attributes naming an LLM column (model, provider, gen_ai.*) fill it too.
        columns: dict[str, Any] = {}
        for key, value in (self.custom_attributes or {}).items():
            name = ATTRIBUTE_COLUMNS.get(key)
            if name is not None:
                value = column_value(name, value)
                if value is not None:
                    columns[name] = value
        if agent_name is not None:
            columns["agent_name"] = agent_name
        self.columns = columns or None
        self.measure_text = measure_text
        self.text_metrics = text_metrics
        self.extractor = extractor
        self.collectors = collectors
        self.session_arg = session_arg
        self.trace_arg = trace_arg


# -- pieces of the hot path that only some spans need -------------------------


def _text_for_queue(spec: Spec, result: Any) -> Any:
    """The text to queue: the ``str`` itself (measured later) or, when long,
    its measurement (the string is not kept)."""
    if spec.extractor is None:
        text = result if result.__class__ is str else extract_text(result)
    else:
        text = spec.extractor(result)
    if text is None:
        return None
    if text.__class__ is not str:
        text = as_str(text)
    if len(text) > KEEP_TEXT_CHARS:
        return measure_text(text)
    return text


def _merge(extra: dict[str, Any], out: dict[str, Any]) -> None:
    """Add one collector's output to ``extra``; ``custom_attributes`` are merged
    (into a copy: the collector's own dict is never modified)."""
    for key, value in out.items():
        if key == "custom_attributes" and isinstance(value, dict):
            mine = extra.get(key)
            extra[key] = {**mine, **value} if isinstance(mine, dict) else dict(value)
        else:
            extra[key] = value


def _collect(
    spec: Spec, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any], span: SpanContext
) -> dict[str, Any] | None:
    extra: dict[str, Any] | None = None
    for collector in spec.collectors:
        try:
            out = collector.collect(result, args, kwargs, span)
            if out is not None and not isinstance(out, dict):
                raise TypeError(f"{collector!r}.collect returned {type(out).__name__}, not a dict")
        except Exception as exc:
            report_internal_error(f"collector:{_collector_name(collector)}", exc)
            continue
        if out:
            if extra is None:
                extra = {}
            _merge(extra, out)
    return extra


def _collector_name(collector: MetricCollector) -> str:
    try:
        return str(collector.metric_type)
    except Exception:
        return type(collector).__qualname__


def _arg(where: ArgSpot, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    name, index, default = where
    value = kwargs.get(name, _MISSING)
    if value is _MISSING:
        value = args[index] if 0 <= index < len(args) else default
    return None if value is None or value is _MISSING else str(value)


def _start(spec: Spec, parent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpanContext:
    session = _arg(spec.session_arg, args, kwargs) if spec.session_arg else None
    trace = _arg(spec.trace_arg, args, kwargs) if spec.trace_arg else None
    return start_span(parent, session, trace)


def _submit(pipe: Any, record: tuple[Any, ...]) -> None:
    if record[1].sampled:
        pipe.submit(record)
    else:
        pipe.count_sampled_out()


def _safe_text(spec: Spec, result: Any) -> Any:
    """``_text_for_queue``, reporting (not raising) what an extractor raises."""
    try:
        return _text_for_queue(spec, result)
    except Exception as exc:
        report_internal_error("measure_text", exc)
        return None


# Results that cannot be an LLM response: no usage to look for.
_NO_FACTS = frozenset({str, type(None), int, float, bool, bytes, list, tuple, set})


def _facts(spec: Spec, result: Any) -> dict[str, Any] | None:
    """Token usage and response facts of an LLM response object or dict."""
    if type(result) is dict and ("model" not in result or "usage" not in result):
        return None  # an API response dict has both; a tool's dict rarely does
    try:
        facts = response_facts(result)
    except Exception as exc:
        report_internal_error("response_facts", exc)
        return None
    if not facts:
        return None
    if "output_tokens" not in facts:  # a response without usage: estimate, and say so
        try:
            text = response_text(result)
            add_estimates(facts, None, len(text) if text else 0)
        except Exception as exc:
            report_internal_error("response_facts", exc)
    if spec.agent_name is None:
        agent = AGENT.get()
        if agent is not None:
            facts["agent_name"] = agent
    return facts


def _finish(
    pipe: Any,
    spec: Spec,
    span: SpanContext,
    t0: int,
    t1: int,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    if not span.sampled:
        pipe.count_sampled_out()  # nothing to measure for a span not kept
        return
    text = _safe_text(spec, result) if spec.measure_text else None
    extra = _collect(spec, result, args, kwargs, span) if spec.collectors else None
    if type(result) not in _NO_FACTS:
        facts = _facts(spec, result)
        if facts is not None:
            if extra is not None:
                facts.update(extra)  # what a collector says wins
            extra = facts
    pipe.submit((spec, span, t0, t1, None, text, extra))


def _fail(pipe: Any, spec: Spec, span: SpanContext, t0: int, t1: int, exc: BaseException) -> None:
    try:
        _submit(pipe, (spec, span, t0, t1, error_facts(exc), None, None))
    except Exception as internal:
        report_internal_error("record_error", internal)


# -- wrappers, one per shape -------------------------------------------------


def _wrap_async(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    simple = spec.session_arg is None and spec.trace_arg is None
    plain = not spec.collectors
    measure = spec.measure_text
    direct = spec.extractor is None

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        pipe = _writer.ACTIVE
        parent = _get()
        if pipe is None or parent is SUPPRESSED:
            return await fn(*args, **kwargs)
        try:
            if simple:
                span = _new(SpanContext)
                _init_span(span, parent, None, None)
            else:
                span = _start(spec, parent, args, kwargs)
            token = _set(span)
        except Exception as exc:
            report_internal_error("start_span", exc)
            return await fn(*args, **kwargs)
        t0 = _clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            t1 = _clock()
            _reset(token)
            _fail(pipe, spec, span, t0, t1, exc)
            raise
        t1 = _clock()
        _reset(token)
        try:
            if plain and span.sampled and type(result) in _NO_FACTS:
                # The common case inline: no collectors, the text is the str itself.
                if not measure:
                    text = None
                elif direct and result.__class__ is str and len(result) <= _KEEP:
                    text = result
                else:
                    text = _safe_text(spec, result)
                pipe.submit((spec, span, t0, t1, None, text, None))
            else:
                _finish(pipe, spec, span, t0, t1, result, args, kwargs)
        except Exception as exc:
            report_internal_error("record", exc)
        return result

    return wrapper


def _wrap_sync(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    simple = spec.session_arg is None and spec.trace_arg is None
    plain = not spec.collectors
    measure = spec.measure_text
    direct = spec.extractor is None

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pipe = _writer.ACTIVE
        parent = _get()
        if pipe is None or parent is SUPPRESSED:
            return fn(*args, **kwargs)
        try:
            if simple:
                span = _new(SpanContext)
                _init_span(span, parent, None, None)
            else:
                span = _start(spec, parent, args, kwargs)
            token = _set(span)
        except Exception as exc:
            report_internal_error("start_span", exc)
            return fn(*args, **kwargs)
        t0 = _clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            t1 = _clock()
            _reset(token)
            _fail(pipe, spec, span, t0, t1, exc)
            raise
        t1 = _clock()
        _reset(token)
        try:
            if plain and span.sampled and type(result) in _NO_FACTS:
                # The common case inline: no collectors, the text is the str itself.
                if not measure:
                    text = None
                elif direct and result.__class__ is str and len(result) <= _KEEP:
                    text = result
                else:
                    text = _safe_text(spec, result)
                pipe.submit((spec, span, t0, t1, None, text, None))
            else:
                _finish(pipe, spec, span, t0, t1, result, args, kwargs)
        except Exception as exc:
            report_internal_error("record", exc)
        return result

    return wrapper


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
            more = _collect(spec, kept, args, kwargs, span)
        if closed_early:
            more = more or {}
            _merge(more, {"custom_attributes": {"stream_closed_early": True}})
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
    return _start(spec, parent, args, kwargs)


def _wrap_gen(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        pipe = _writer.ACTIVE
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


def _wrap_async_gen(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    # One loop for monitored and unmonitored streams: an async generator has
    # no ``yield from``, and asend/athrow/aclose must reach ``fn`` either way.
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        pipe = _writer.ACTIVE
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


# -- the decorator ---------------------------------------------------------------


def _param_position(fn: Callable[..., Any], name: str, setting: str) -> ArgSpot:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return name, -1, _MISSING
    for i, p in enumerate(params):
        if p.name == name:
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            default = _MISSING if p.default is p.empty else p.default
            return name, i if positional else -1, default
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return name, -1, _MISSING
    where = getattr(fn, "__qualname__", fn)
    raise ValueError(f"{setting}={name!r}: {where!r} has no such parameter")


def _kind(fn: Callable[..., Any]) -> str:
    # A callable instance is what its class's __call__ is.
    for target in (fn, getattr(type(fn), "__call__", None)):  # noqa: B004
        if target is None:
            continue
        if inspect.isasyncgenfunction(target):
            return "async_gen"
        if inspect.iscoroutinefunction(target):
            return "async"
        if inspect.isgeneratorfunction(target):
            return "gen"
        if inspect.isfunction(target) or isinstance(target, functools.partial):
            break
    return "sync"


def _name_of(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _build_spec(
    fn: Callable[..., Any],
    operation_name: str | None,
    operation_type: str,
    measure_text: bool | Sequence[str],
    measure_images: bool,
    collectors: Sequence[str | MetricCollector] | None,
    session_id_from: str | None,
    trace_id_from: str | None,
    custom_attributes: dict[str, Any] | None,
    agent_name: str | None = None,
) -> Spec:
    text = None
    if measure_text:
        text = TextCollector(None if measure_text is True else list(measure_text))
    instances: list[MetricCollector] = []
    for c in collectors or ():
        if isinstance(c, str):
            c = CollectorRegistry.get(c)
        elif not isinstance(c, MetricCollector) and not callable(getattr(c, "collect", None)):
            raise TypeError(f"collectors: {c!r} is neither a collector name nor a MetricCollector")
        if isinstance(c, TextCollector):
            text = c  # measured by the fast path, on the worker
        else:
            instances.append(c)
    if measure_images and not any(isinstance(c, ImageCollector) for c in instances):
        instances.append(ImageCollector())
    return Spec(
        operation_name=operation_name or _name_of(fn),
        operation_type=operation_type,
        custom_attributes=custom_attributes,
        measure_text=text is not None,
        text_metrics=text.mask if text is not None else None,
        extractor=text.extractor if text is not None else None,
        collectors=tuple(instances),
        session_arg=_param_position(fn, session_id_from, "session_id_from")
        if session_id_from
        else None,
        trace_arg=_param_position(fn, trace_id_from, "trace_id_from") if trace_id_from else None,
        agent_name=agent_name,
    )


def _sync_agent(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def run_as_agent(*args: Any, **kwargs: Any) -> Any:
        token = AGENT.set(name)
        try:
            return fn(*args, **kwargs)
        finally:
            AGENT.reset(token)

    return run_as_agent


def _async_agent(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    async def run_as_agent(*args: Any, **kwargs: Any) -> Any:
        token = AGENT.set(name)
        try:
            return await fn(*args, **kwargs)
        finally:
            AGENT.reset(token)

    return run_as_agent


# The agent's name is current while its function runs (not for generators,
# whose context would leak to the consumer between items).
_AS_AGENT = {"sync": _sync_agent, "async": _async_agent}

_WRAPPERS = {
    "async": _wrap_async,
    "sync": _wrap_sync,
    "gen": _wrap_gen,
    "async_gen": _wrap_async_gen,
}


@overload
def monitor_llm(operation_name: F) -> F: ...


@overload
def monitor_llm(
    operation_name: str | None = None,
    *,
    operation_type: str = "llm_call",
    measure_text: bool | Sequence[str] = False,
    measure_images: bool = False,
    collectors: Sequence[str | MetricCollector] | MetricCollector | None = None,
    session_id_from: str | None = None,
    trace_id_from: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
    agent_name: str | None = None,
    enabled: bool = True,
) -> Callable[[F], F]: ...


def monitor_llm(
    operation_name: Any = None,
    *,
    operation_type: str = "llm_call",
    measure_text: bool | Sequence[str] = False,
    measure_images: bool = False,
    collectors: Sequence[str | MetricCollector] | MetricCollector | None = None,
    session_id_from: str | None = None,
    trace_id_from: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
    agent_name: str | None = None,
    enabled: bool = True,
) -> Any:
    """Record every call of the decorated function as a span.

    Works on async and sync functions, async and sync generators (the span
    ends with the stream and records the time to the first item), methods
    and other callables. The function's result and exceptions pass through
    untouched; monitoring errors are never raised into it (unless
    ``fail_silently=False``).

    Args:
        operation_name: the span's name (default: the function's qualified name).
        operation_type: a kind of step (``llm_call``, ``tool``, ``agent_workflow``...).
        measure_text: True for all text metrics of the result, or a list of
            ``char_count``, ``word_count``, ``byte_size``, ``line_count``.
        measure_images: count and measure the images in the result.
        collectors: collector names (``CollectorRegistry``) or instances (or
            one of either). They run when the call returns, with its result;
            on a stream, once when it ends, with the list of yielded items.
        session_id_from: name of the parameter holding the session id.
        trace_id_from: name of the parameter holding the trace id.
        custom_attributes: stored with every span (non-JSON values as repr).
            Keys naming an LLM column (``model``, ``provider``, ``agent_name``,
            or their OTel GenAI names such as ``gen_ai.request.model``) fill
            that column too.
        agent_name: the agent this function is; its spans carry the name, and
            so do the LLM calls made inside it (function shapes; a generator's
            own span only).
        enabled: False returns the function undecorated.

    Raises:
        ValueError, KeyError, TypeError: at decoration, for an unknown metric,
            collector or parameter name.
    """
    if isinstance(operation_name, (staticmethod, classmethod)) or (
        callable(operation_name) and not isinstance(operation_name, str)
    ):
        # Bare ``@monitor_llm`` (a classmethod object is not callable).
        fn: Any = operation_name
        return monitor_llm()(fn)
    if isinstance(measure_text, str):
        measure_text = [measure_text]
    if isinstance(collectors, (str, MetricCollector)):
        collectors = [collectors]
    if measure_text and measure_text is not True:
        unknown = [m for m in measure_text if m not in TEXT_METRICS]
        if unknown:
            raise ValueError(
                f"measure_text: unknown metric(s) {unknown}; choose from {list(TEXT_METRICS)}"
            )

    def decorate(fn: F) -> F:
        if not enabled:
            return fn
        if isinstance(fn, (staticmethod, classmethod)):
            return type(fn)(decorate(fn.__func__))
        spec = _build_spec(
            fn,
            operation_name,
            operation_type,
            measure_text,
            measure_images,
            collectors,
            session_id_from,
            trace_id_from,
            custom_attributes,
            agent_name,
        )
        kind = _kind(fn)
        inner: Callable[..., Any] = fn
        if agent_name is not None and kind in _AS_AGENT:
            inner = _AS_AGENT[kind](fn, agent_name)
        wrapper = _WRAPPERS[kind](inner, spec)
        try:
            functools.update_wrapper(wrapper, fn)
        except Exception:
            pass
        wrapper.__llamonitor_spec__ = spec  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
