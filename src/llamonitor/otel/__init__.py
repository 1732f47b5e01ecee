"""OpenTelemetry in: OTLP trace requests and an application's own OTel spans.

:func:`rows_from_request` maps an ``ExportTraceServiceRequest`` (the GenAI
semantic conventions old and new, OpenInference, OpenLLMetry and Logfire
attributes) to stored-form rows; the OTLP receiver of ``llamonitor serve`` /
``llamonitor collect`` and the in-process bridge both feed the writer with it.
Decoding requests needs the ``otlp`` extra (``pip install 'llamonitor[otlp]'``);
the mapping itself imports nothing optional.

:class:`SpanProcessor` plugs into the application's ``TracerProvider`` (the
``otlp`` extra too), so any OTel instrumentation feeds llamonitor in process::

    provider.add_span_processor(llamonitor.otel.SpanProcessor())

and :func:`tracer_provider` is a ready provider with one, for an application
that has none::

    LangChainInstrumentor().instrument(tracer_provider=llamonitor.otel.tracer_provider())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.otel._mapping import MappedSpans, rows_from_request
    from llamonitor.otel._processor import SpanProcessor, tracer_provider

_EXPORTS: dict[str, str] = {
    "MappedSpans": "llamonitor.otel._mapping",
    "SpanProcessor": "llamonitor.otel._processor",
    "rows_from_request": "llamonitor.otel._mapping",
    "tracer_provider": "llamonitor.otel._processor",
}

__all__ = ["MappedSpans", "SpanProcessor", "rows_from_request", "tracer_provider"]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
