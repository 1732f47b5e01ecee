"""The static facts of one decorated function (``Spec``), built once at decoration."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from llamonitor._internal import report_internal_error
from llamonitor._records import safe_json
from llamonitor.instrument._context import SpanContext, start_span
from llamonitor.instrument.collectors import (
    CollectorRegistry,
    ImageCollector,
    MetricCollector,
    TextCollector,
)
from llamonitor.schema._columns import ATTRIBUTE_COLUMNS, column_value

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
        "gates",
        "measure_text",
        "measurement",
        "measures_images",
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
        measurement: Any = None,
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
        # Each collector's should_collect, or None where it is the default "always".
        self.gates = tuple(_gate(c) for c in collectors)
        self.measures_images = any(isinstance(c, ImageCollector) for c in collectors)
        self.measurement = measurement
        self.session_arg = session_arg
        self.trace_arg = trace_arg


def _gate(collector: Any) -> Callable[..., bool] | None:
    method = getattr(type(collector), "should_collect", None)
    if method is None or method is MetricCollector.should_collect:
        return None
    return collector.should_collect  # type: ignore[no-any-return]


def _arg(where: ArgSpot, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    name, index, default = where
    value = kwargs.get(name, _MISSING)
    if value is _MISSING:
        value = args[index] if 0 <= index < len(args) else default
    if value is None or value is _MISSING:
        return None
    if value.__class__ is str:
        return value
    try:
        return str(value)
    except Exception as exc:
        # An id argument whose str() raises: the span is still recorded, with the
        # id it would have had without the argument (the parent's, or a fresh one).
        report_internal_error("id_argument", exc)
        return None


def start(spec: Spec, parent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpanContext:
    session = _arg(spec.session_arg, args, kwargs) if spec.session_arg else None
    trace = _arg(spec.trace_arg, args, kwargs) if spec.trace_arg else None
    return start_span(parent, session, trace)


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


def kind_of(fn: Callable[..., Any]) -> str:
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


def build_spec(
    fn: Callable[..., Any],
    operation_name: str | None,
    operation_type: str,
    measure_text: bool | Sequence[str],
    measure_images: bool | Sequence[str],
    collectors: Sequence[str | MetricCollector] | None,
    session_id_from: str | None,
    trace_id_from: str | None,
    custom_attributes: dict[str, Any] | None,
    agent_name: str | None = None,
    measurement: Any = None,
) -> Spec:
    text = None
    if measure_text:
        text = TextCollector(None if measure_text is True else list(measure_text))
    instances: list[MetricCollector] = []
    for c in collectors or ():
        if isinstance(c, str):
            c = CollectorRegistry.create(c)
        elif not isinstance(c, MetricCollector) and not callable(getattr(c, "collect", None)):
            raise TypeError(f"collectors: {c!r} is neither a collector name nor a MetricCollector")
        if isinstance(c, TextCollector) and c.on_worker:
            text = c  # measured by the fast path, on the worker
        else:
            instances.append(c)
    if measure_images and not any(isinstance(c, ImageCollector) for c in instances):
        instances.append(ImageCollector(None if measure_images is True else list(measure_images)))
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
        measurement=measurement,
    )
