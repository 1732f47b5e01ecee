"""A span's status, kind, events and links: the ``error`` columns and the
``otel.*`` keys of ``custom_attributes``."""

from __future__ import annotations

from typing import Any

from llamonitor._records import MAX_ERROR_MESSAGE_CHARS
from llamonitor.otel import _conventions as conv
from llamonitor.otel._attributes import MAX_NAME_CHARS
from llamonitor.otel._values import Budget, attributes

MAX_EVENTS = 64
MAX_LINKS = 64

_SPAN_KINDS = {2: "server", 3: "client", 4: "producer", 5: "consumer"}  # 0, 1: internal
STATUS_ERROR = 2


def error(span: Any, attrs: dict[str, Any], row: dict[str, Any], budget: Budget) -> None:
    """``error`` from the status; its type and message from ``error.type``,
    the status message and the first ``exception`` event."""
    status = span.status
    if status.code != STATUS_ERROR:
        return
    row["error"] = True
    etype = attrs.pop(conv.ERROR_TYPE, None)
    message = status.message or None
    for ev in span.events:
        if ev.name == conv.EXCEPTION_EVENT:
            facts = attributes(ev.attributes, budget)
            if not isinstance(etype, str):
                etype = facts.get(conv.EXCEPTION_TYPE)
            if message is None and isinstance(facts.get(conv.EXCEPTION_MESSAGE), str):
                message = facts[conv.EXCEPTION_MESSAGE]
            break
    if isinstance(etype, str) and etype:
        row["error_type"] = etype[:MAX_NAME_CHARS]
    if message:
        row["error_message"] = message[:MAX_ERROR_MESSAGE_CHARS]


def extras(span: Any, ctx: Any, attrs: dict[str, Any], budget: Budget) -> None:
    """The span's kind, scope, resource, events and links, under ``otel.*`` keys."""
    kind = _SPAN_KINDS.get(span.kind)
    if kind is not None:
        attrs["otel.span_kind"] = kind
    if "otel.scope" in attrs or "otel.resource" in attrs:  # the span's own: no splice
        if ctx.scope is not None:
            attrs["otel.scope"] = ctx.scope
        if ctx.resource is not None:
            attrs["otel.resource"] = ctx.resource
        ctx.spliced = False
    else:
        ctx.spliced = True
    if span.status.code != STATUS_ERROR and span.status.message:
        attrs["otel.status_message"] = span.status.message[:MAX_ERROR_MESSAGE_CHARS]
    events = span.events
    if len(events):
        kept = []
        for ev in events[:MAX_EVENTS]:
            item: dict[str, Any] = {
                "name": ev.name[:MAX_NAME_CHARS],
                "time_unix_nano": ev.time_unix_nano,
            }
            if len(ev.attributes) and budget.left:
                item["attributes"] = attributes(ev.attributes, budget)
            kept.append(item)
        attrs["otel.events"] = kept
        if len(events) > MAX_EVENTS:
            attrs["otel.dropped_events_count"] = len(events) - MAX_EVENTS
    links = span.links
    if len(links):
        attrs["otel.links"] = [
            {"trace_id": ln.trace_id[:16].hex(), "span_id": ln.span_id[:8].hex()}
            for ln in links[:MAX_LINKS]
        ]
