"""``@monitor_llm``: one span per call of an async/sync function or generator.

The hot path (between the user's call and return) is: read the parent span,
make a span id, set the ContextVar, two clock readings, the collectors that
must see the live result, one append to the queue. Text is measured on the
worker thread unless it is long (see ``llamonitor._records``). The wrappers
are in ``_calls`` (functions) and ``_streams`` (generators); the static facts
of a decorated function in ``_spec``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from llamonitor.instrument._calls import wrap_async, wrap_sync
from llamonitor.instrument._spec import build_spec, kind_of
from llamonitor.instrument._streams import wrap_async_gen, wrap_gen
from llamonitor.instrument.collectors import MetricCollector
from llamonitor.llm import AGENT
from llamonitor.schema._columns import TEXT_METRICS

F = TypeVar("F", bound=Callable[..., Any])


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
    "async": wrap_async,
    "sync": wrap_sync,
    "gen": wrap_gen,
    "async_gen": wrap_async_gen,
}


MEASUREMENT_MODES = ("auto", "capacity", "token", "hybrid")


def _check_measurement(measurement: Any) -> None:
    mode = measurement.get("mode", "auto") if isinstance(measurement, dict) else measurement
    if mode is not None and mode not in MEASUREMENT_MODES:
        raise ValueError(
            f"measurement: unknown mode {mode!r}; choose from {list(MEASUREMENT_MODES)}"
        )


@overload
def monitor_llm(operation_name: F) -> F: ...


@overload
def monitor_llm(
    operation_name: str | None = None,
    *,
    operation_type: str = "llm_call",
    measure_text: bool | Sequence[str] = False,
    measure_images: bool | Sequence[str] = False,
    collectors: Sequence[str | MetricCollector] | MetricCollector | None = None,
    session_id_from: str | None = None,
    trace_id_from: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
    agent_name: str | None = None,
    enabled: bool = True,
    measurement: str | dict[str, Any] | None = None,
) -> Callable[[F], F]: ...


def monitor_llm(
    operation_name: Any = None,
    *,
    operation_type: str = "llm_call",
    measure_text: bool | Sequence[str] = False,
    measure_images: bool | Sequence[str] = False,
    collectors: Sequence[str | MetricCollector] | MetricCollector | None = None,
    session_id_from: str | None = None,
    trace_id_from: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
    agent_name: str | None = None,
    enabled: bool = True,
    measurement: str | dict[str, Any] | None = None,
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
        measure_images: count and measure the images in the result: True for
            all image metrics, or a list of ``count``, ``total_pixels``,
            ``file_size_bytes``, ``width``, ``height``, ``format``
            (``dimensions``: width and height).
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
        measurement: seed 000's measurement mode (``"capacity"``, ``"token"``,
            ``"hybrid"``, ``"auto"``, or a dict with a ``"mode"``): accepted and
            given to collectors as ``context["measurement"]``. Text is measured
            as ``measure_text`` says and tokens are read from the usage of
            every LLM response, whatever the mode.

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
    if isinstance(measure_images, str):
        measure_images = [measure_images]
    _check_measurement(measurement)
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
        spec = build_spec(
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
            measurement,
        )
        kind = kind_of(fn)
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
