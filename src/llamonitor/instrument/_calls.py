"""The wrappers of plain calls (``async def`` and ``def``) and the pieces of the
hot path they share with streams: measuring text, collectors, usage facts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import CURRENT, SUPPRESSED, report_internal_error
from llamonitor._records import KEEP_TEXT_CHARS, error_facts, measure_text
from llamonitor.instrument._collector_context import Call
from llamonitor.instrument._context import SpanContext, _init_span
from llamonitor.instrument._extract import as_str, extract_text
from llamonitor.instrument._spec import Spec, start
from llamonitor.instrument.collectors import MetricCollector
from llamonitor.llm import AGENT
from llamonitor.llm._usage import add_estimates, response_facts, response_text

_clock = time.perf_counter_ns
_KEEP = KEEP_TEXT_CHARS
_get = CURRENT.get
_set = CURRENT.set
_reset = CURRENT.reset
_new = SpanContext.__new__


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


def merge(extra: dict[str, Any], out: dict[str, Any]) -> None:
    """Add one collector's output to ``extra``; ``custom_attributes`` are merged
    (into a copy: the collector's own dict is never modified)."""
    for key, value in out.items():
        if key == "custom_attributes" and isinstance(value, dict):
            mine = extra.get(key)
            extra[key] = {**mine, **value} if isinstance(mine, dict) else dict(value)
        else:
            extra[key] = value


def collect(
    spec: Spec,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    span: SpanContext,
    t0: int = 0,
    t1: int = 0,
) -> dict[str, Any] | None:
    extra: dict[str, Any] | None = None
    span._call = Call(spec, t0, t1, result, kwargs)  # the seed's context keys, on demand
    try:
        for collector, gate in zip(spec.collectors, spec.gates, strict=True):
            try:
                if gate is not None and not gate(result, args, kwargs):
                    continue
                out = collector.collect(result, args, kwargs, span)
                if out is not None and not isinstance(out, dict):
                    raise TypeError(
                        f"{collector!r}.collect returned {type(out).__name__}, not a dict"
                    )
            except Exception as exc:
                report_internal_error(f"collector:{_collector_name(collector)}", exc)
                continue
            if out:
                if extra is None:
                    extra = {}
                merge(extra, out)
    finally:
        span._call = None  # the span outlives the call: do not keep its result alive
    return extra


def _collector_name(collector: MetricCollector) -> str:
    try:
        return str(collector.metric_type)
    except Exception:
        return type(collector).__qualname__


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
    extra = collect(spec, result, args, kwargs, span, t0, t1) if spec.collectors else None
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


def wrap_async(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    simple = spec.session_arg is None and spec.trace_arg is None
    plain = not spec.collectors
    measure = spec.measure_text
    direct = spec.extractor is None

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        pipe = _handoff.ACTIVE
        parent = _get()
        if pipe is None or parent is SUPPRESSED:
            return await fn(*args, **kwargs)
        try:
            if simple:
                span = _new(SpanContext)
                _init_span(span, parent, None, None)
            else:
                span = start(spec, parent, args, kwargs)
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


def wrap_sync(fn: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    simple = spec.session_arg is None and spec.trace_arg is None
    plain = not spec.collectors
    measure = spec.measure_text
    direct = spec.extractor is None

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pipe = _handoff.ACTIVE
        parent = _get()
        if pipe is None or parent is SUPPRESSED:
            return fn(*args, **kwargs)
        try:
            if simple:
                span = _new(SpanContext)
                _init_span(span, parent, None, None)
            else:
                span = start(spec, parent, args, kwargs)
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
