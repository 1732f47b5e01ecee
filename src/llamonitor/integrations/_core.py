"""One span per SDK call: the wrappers patched onto the SDKs' resource methods.

A wrapper does what ``@monitor_llm`` does around the call (a span under the
current one, made current during the call, two clock readings, one record
for the queue) and adds the call's LLM facts: request parameters, the
response's usage (``llamonitor.llm._usage``), the agent, the prompt hash and,
when capture is on, the content.

Streams keep their type: the SDK's ``Stream``/``AsyncStream`` object is
returned as is, with its private ``_iterator`` replaced by a generator that
feeds each chunk to a :class:`~llamonitor.llm._usage.StreamUsage` and records
the span when the stream ends, raises, or is closed early. Closing is seen on
the HTTP response (``close``/``aclose`` of that one response object), which
every way of closing goes through: ``stream.close()``, the ``with`` block, the
SDKs' stream helpers.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import KEEP_TEXT_CHARS, StreamFacts, error_facts, measure_text
from llamonitor.instrument._context import SpanContext, _init_span
from llamonitor.instrument._spec import Spec
from llamonitor.llm import _settings, current_agent
from llamonitor.llm._usage import StreamUsage, add_estimates, facts_and_text, request_facts
from llamonitor.llm.content import capture, prompt_hash

_clock = time.perf_counter_ns
_get = CURRENT.get
_set = CURRENT.set
_reset = CURRENT.reset
_new = SpanContext.__new__

PROMPT_ARGUMENTS = ("system", "instructions", "messages", "input")
"""Request arguments that make the prompt (hashed, captured, estimated)."""


class Api:
    """One kind of call: its span's static facts and how to read its stream
    (the stream accumulator names the provider)."""

    __slots__ = ("provider", "spec", "usage")

    def __init__(self, operation_name: str, usage: type[StreamUsage]) -> None:
        self.spec = Spec(operation_name, "llm_call", measure_text=True)
        self.provider = usage.provider
        self.usage = usage


def _prompt(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The prompt-making arguments given (as a dict: one hash for the same
    conversation whatever the SDK)."""
    prompt = None
    get = kwargs.get
    for key in PROMPT_ARGUMENTS:
        value = get(key)
        if value is not None and value.__class__ in _PROMPT_TYPES:
            if prompt is None:
                prompt = {key: value}
            else:
                prompt[key] = value
    return prompt


_PROMPT_TYPES = frozenset({str, list, tuple, dict})


def _request(api: Api, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The request's columns (and its prompt), read when the call returns."""
    extra = request_facts(kwargs)
    extra["provider"] = api.provider
    agent = current_agent()
    if agent is not None:
        extra["agent_name"] = agent
    prompt = _prompt(kwargs)
    if prompt is not None:
        digest = prompt_hash(prompt)
        if digest is not None:
            extra["prompt_hash"] = digest
    return extra, prompt


def _queued_text(text: str | None) -> Any:
    if text is None or len(text) <= KEEP_TEXT_CHARS:
        return text
    return measure_text(text)


def _add_content(extra: dict[str, Any], prompt: Any, completion: str | None) -> None:
    if _settings.SETTINGS.capture_content:  # one attribute read when capture is off
        content = capture(prompt, completion)
        if content:
            extra.update(content)


# -- recording -----------------------------------------------------------------------


def _failed(
    api: Api, pipe: Any, span: SpanContext, t0: int, t1: int, kwargs: dict[str, Any], exc: Any
) -> None:
    try:
        if not span.sampled:
            pipe.count_sampled_out()
            return
        extra, prompt = _request(api, kwargs)
        _add_content(extra, prompt, None)
        pipe.submit((api.spec, span, t0, t1, error_facts(exc), None, extra))
    except Exception as internal:
        report_internal_error(f"integration:{api.provider}", internal)


def _returned(
    api: Api,
    pipe: Any,
    span: SpanContext,
    t0: int,
    t1: int,
    kwargs: dict[str, Any],
    result: Any,
    stream: bool,
    is_async: bool,
) -> None:
    try:
        if not span.sampled:
            pipe.count_sampled_out()
            return
        if stream and _is_stream(result):
            _watch(api, pipe, span, t0, kwargs, result, is_async)
            return
        extra, prompt = _request(api, kwargs)
        found = facts_and_text(result, True, extra)
        text = None
        if found is not None:  # None: a raw response (``with_raw_response``)
            text = found[1]
            if "input_tokens" not in extra or "output_tokens" not in extra:
                add_estimates(extra, prompt, len(text) if text else 0)
        _add_content(extra, prompt, text)
        pipe.submit((api.spec, span, t0, t1, None, _queued_text(text), extra))
    except Exception as exc:
        report_internal_error(f"integration:{api.provider}", exc)


def _is_stream(result: Any) -> bool:
    d = getattr(result, "__dict__", None)
    return d is not None and "response" in d and hasattr(result, "_iterator")


# -- streams -----------------------------------------------------------------------


class _StreamCall:
    """A streamed call until its span is recorded (once: at the end of the
    stream, its error, an early close, or when it is garbage collected)."""

    __slots__ = ("api", "done", "extra", "gen", "is_async", "pipe", "prompt", "span", "t0", "usage")

    def __init__(
        self,
        api: Api,
        pipe: Any,
        span: SpanContext,
        t0: int,
        kwargs: dict[str, Any],
        is_async: bool,
    ) -> None:
        self.done = True  # until fully made: __del__ must not record a half-made call
        self.api = api
        self.pipe = pipe
        self.span = span
        self.t0 = t0
        self.is_async = is_async
        self.gen: Any = None
        self.extra: Any
        self.prompt: Any
        self.extra, self.prompt = _request(api, kwargs)
        self.usage: Any = api.usage()
        self.done = False

    def closed(self) -> None:
        """The HTTP response was closed: by the user, unless the stream's own
        iteration is running (its end, or its error, closes the response)."""
        if self.done:
            return
        gen = self.gen() if self.gen is not None else None
        if gen is not None and (gen.ag_running if self.is_async else gen.gi_running):
            return
        self.finish(None, True)

    def finish(self, error: BaseException | None, closed_early: bool) -> None:
        # No ContextVar is set here: this may run inside a garbage collection.
        if self.done:
            return
        self.done = True
        try:
            t1 = _clock()
            usage = self.usage
            text = usage.text()
            extra = self.extra
            extra.update(usage.facts(self.prompt, text))
            _add_content(extra, self.prompt, text)
            if closed_early:
                mine = extra.get("custom_attributes")
                mine = dict(mine) if isinstance(mine, dict) else {}
                mine["stream_closed_early"] = True
                extra["custom_attributes"] = mine
            items = usage.items
            ttft = (usage.first_ns - self.t0) / 1e6 if items else None
            err = None if error is None else error_facts(error)
            record = (self.api.spec, self.span, self.t0, t1, err, _queued_text(text))
            self.pipe.submit((*record, StreamFacts(items, ttft, extra)))
        except Exception as exc:
            report_internal_error(f"integration:{self.api.provider}:stream", exc)
        finally:
            # The response object (whose close hook refers to this call) may
            # outlive the stream: keep nothing big alive with it.
            self.prompt = self.usage = self.extra = None

    def feed_failed(self, exc: Exception) -> Callable[[Any], None]:
        report_internal_error(f"integration:{self.api.provider}:chunk", exc)
        return _ignore

    def __del__(self) -> None:
        # A stream dropped before it was iterated or closed.
        if not self.done:
            try:
                self.finish(None, True)
            except Exception:  # at interpreter exit, with modules torn down
                pass


def _ignore(chunk: Any) -> None:
    return None


def _iterate(inner: Any, call: _StreamCall) -> Any:
    feed: Callable[[Any], None] = call.usage.feed
    try:
        for item in inner:
            try:
                feed(item)
            except Exception as exc:
                feed = call.feed_failed(exc)
            yield item
    except GeneratorExit:  # closed, or collected, before its end
        call.finish(None, True)
        raise
    except BaseException as exc:
        call.finish(exc, False)
        raise
    call.finish(None, False)


async def _aiterate(inner: Any, call: _StreamCall) -> Any:
    feed: Callable[[Any], None] = call.usage.feed
    try:
        async for item in inner:
            try:
                feed(item)
            except Exception as exc:
                feed = call.feed_failed(exc)
            yield item
    except GeneratorExit:
        call.finish(None, True)
        raise
    except BaseException as exc:
        call.finish(exc, False)
        raise
    call.finish(None, False)


def _watch(
    api: Api,
    pipe: Any,
    span: SpanContext,
    t0: int,
    kwargs: dict[str, Any],
    stream: Any,
    is_async: bool,
) -> None:
    """Make ``stream`` (an SDK Stream/AsyncStream) record its span as it is read."""
    call = _StreamCall(api, pipe, span, t0, kwargs, is_async)
    try:
        inner = stream._iterator
        gen = _aiterate(inner, call) if is_async else _iterate(inner, call)
        call.gen = weakref.ref(gen)
        stream._iterator = gen
    except Exception:
        call.finish(None, False)  # recorded as a call: no stream facts
        raise
    _hook_close(stream.response, call, is_async)


def _hook_close(response: Any, call: _StreamCall, is_async: bool) -> None:
    """Tell ``call`` when ``response`` is closed (an instance attribute on this
    one response object; it refers to the response weakly, so no cycle keeps
    a dropped stream alive)."""
    name = "aclose" if is_async else "close"
    previous = response.__dict__.get(name)
    if previous is None:
        unbound = getattr(type(response), name)
        ref = weakref.ref(response)

        def original() -> Any:
            target = ref()
            return None if target is None else unbound(target)

    else:
        original = previous

    if is_async:

        async def aclose() -> Any:
            call.closed()
            return await original()

        response.__dict__[name] = aclose
    else:

        def close() -> Any:
            call.closed()
            return original()

        response.__dict__[name] = close


# -- wrappers ----------------------------------------------------------------------


class Patch:
    """The switch of one installed wrapper: off once uninstrumented, so a
    wrapper that someone kept (``with_raw_response`` binds ``create`` when
    first used) calls straight through."""

    __slots__ = ("active", "api", "kind", "wrapper")

    def __init__(self, api: Api, kind: str) -> None:
        self.api = api
        self.kind = kind
        self.active = True
        self.wrapper: Any = None


def _sync_call(
    patch: Patch, original: Callable[..., Any], args: Any, kwargs: dict[str, Any], stream: bool
) -> Any:
    pipe = _handoff.ACTIVE
    parent = _get()
    if pipe is None or parent is SUPPRESSED or not patch.active:
        return original(*args, **kwargs)
    api = patch.api
    try:
        span = _new(SpanContext)
        _init_span(span, parent, None, None)
        token = _set(span)
    except Exception as exc:
        report_internal_error("start_span", exc)
        return original(*args, **kwargs)
    t0 = _clock()
    try:
        result = original(*args, **kwargs)
    except BaseException as exc:
        t1 = _clock()
        _reset(token)
        _failed(api, pipe, span, t0, t1, kwargs, exc)
        raise
    t1 = _clock()
    _reset(token)
    _returned(api, pipe, span, t0, t1, kwargs, result, stream, False)
    return result


async def _async_call(
    patch: Patch, original: Callable[..., Any], args: Any, kwargs: dict[str, Any], stream: bool
) -> Any:
    pipe = _handoff.ACTIVE
    parent = _get()
    if pipe is None or parent is SUPPRESSED or not patch.active:
        return await original(*args, **kwargs)
    api = patch.api
    try:
        span = _new(SpanContext)
        _init_span(span, parent, None, None)
        token = _set(span)
    except Exception as exc:
        report_internal_error("start_span", exc)
        return await original(*args, **kwargs)
    t0 = _clock()
    try:
        result = await original(*args, **kwargs)
    except BaseException as exc:
        t1 = _clock()
        _reset(token)
        _failed(api, pipe, span, t0, t1, kwargs, exc)
        raise
    t1 = _clock()
    _reset(token)
    _returned(api, pipe, span, t0, t1, kwargs, result, stream, True)
    return result


def _sync_wrapper(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _sync_call(patch, original, args, kwargs, kwargs.get("stream") is True)

    return wrapper


def _async_wrapper(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await _async_call(patch, original, args, kwargs, kwargs.get("stream") is True)

    return wrapper


def _request_attribute(manager: Any) -> str:
    """The name-mangled ``__api_request`` of a stream helper's manager."""
    for name in manager.__dict__:
        if name.endswith("__api_request"):
            return str(name)
    raise AttributeError(f"{type(manager).__qualname__} has no __api_request (SDK changed?)")


def _manager_wrapper(
    original: Callable[..., Any], patch: Patch, is_async: bool
) -> Callable[..., Any]:
    """``messages.stream(...)``: the request runs when the returned manager is
    entered; the span starts then."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        if _handoff.ACTIVE is None or not patch.active:
            return manager
        try:
            name = _request_attribute(manager)
            request = manager.__dict__[name]  # a callable (sync) or an awaitable (async)

            def send(*_: Any, **__: Any) -> Any:
                # ``kwargs`` are the request's facts; the request itself takes none.
                return request if is_async else request()

            if is_async:
                monitored: Any = _async_call(patch, send, (), kwargs, True)
            else:
                monitored = functools.partial(_sync_call, patch, send, (), kwargs, True)
            manager.__dict__[name] = monitored
        except Exception as exc:
            report_internal_error(f"integration:{patch.api.provider}:stream", exc)
        return manager

    return wrapper


_MAKERS: dict[str, Callable[[Callable[..., Any], Patch], Callable[..., Any]]] = {
    "sync": _sync_wrapper,
    "async": _async_wrapper,
    "manager": lambda original, patch: _manager_wrapper(original, patch, False),
    "async_manager": lambda original, patch: _manager_wrapper(original, patch, True),
}


def make_wrapper(original: Callable[..., Any], api: Api, kind: str) -> Callable[..., Any]:
    """A wrapper of ``original`` (a function or a bound method) recording ``api`` spans."""
    patch = Patch(api, kind)
    wrapper = _MAKERS[kind](original, patch)
    try:
        functools.update_wrapper(wrapper, original)
    except Exception:
        pass
    wrapper.__llamonitor_patch__ = patch  # type: ignore[attr-defined]
    wrapper.__llamonitor_original__ = original  # type: ignore[attr-defined]
    patch.wrapper = wrapper
    return wrapper


def patch_of(value: Any) -> Patch | None:
    """The :class:`Patch` of a llamonitor wrapper, else ``None`` (also for another
    library's wrapper of ours, which ``functools.wraps`` gave our attributes)."""
    patch = getattr(value, "__llamonitor_patch__", None)
    return patch if isinstance(patch, Patch) and patch.wrapper is value else None
