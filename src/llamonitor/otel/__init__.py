"""OpenTelemetry in: an application's own OTel spans into llamonitor.

``SpanProcessor`` plugs into the application's ``TracerProvider`` (the
``[otlp]`` extra)::

    from opentelemetry.sdk.trace import TracerProvider
    import llamonitor.otel

    provider = TracerProvider()
    provider.add_span_processor(llamonitor.otel.SpanProcessor())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.otel._processor import SpanProcessor

_EXPORTS: dict[str, str] = {
    "SpanProcessor": "llamonitor.otel._processor",
}

__all__ = ["SpanProcessor"]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
