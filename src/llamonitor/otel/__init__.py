"""OpenTelemetry in: OTLP trace requests mapped to llamonitor's span rows.

:func:`rows_from_request` maps an ``ExportTraceServiceRequest`` (the GenAI
semantic conventions old and new, OpenInference, OpenLLMetry and Logfire
attributes) to stored-form rows; the OTLP receiver of ``llamonitor serve`` /
``llamonitor collect`` and the in-process bridge both feed the writer with it.
Decoding requests needs the ``otlp`` extra (``pip install 'llamonitor[otlp]'``);
the mapping itself imports nothing optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.otel._mapping import MappedSpans, rows_from_request

_EXPORTS: dict[str, str] = {
    "MappedSpans": "llamonitor.otel._mapping",
    "rows_from_request": "llamonitor.otel._mapping",
}

__all__ = ["MappedSpans", "rows_from_request"]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
