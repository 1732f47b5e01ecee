"""Finished SDK spans to stored-form rows: the OTLP exporter's own encoder,
the content policy of decorated code in two steps around the OTLP receiver's
mapping (``_redact``: with capture on, content is redacted whole before the
mapping cuts it; with capture off, it is dropped after), then the bridge's
fixes (see ``_bridge``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from llamonitor.otel import _bridge
from llamonitor.otel._content import apply_content_policy
from llamonitor.otel._mapping import rows_from_request
from llamonitor.otel._redact import ContentPolicy, redact_request


def rows_of(
    batch: Sequence[tuple[ReadableSpan, _bridge.Fix | None]],
) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``batch`` (spans with their fixes), and how many spans the
    mapping rejected."""
    fixes: dict[tuple[str, str], _bridge.Fix] = {}
    for span, fix in batch:
        if fix is not None:
            ctx = span.context
            if ctx is not None:
                fixes[f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"] = fix
    policy = ContentPolicy.current()
    request = encode_spans([span for span, _ in batch])
    redact_request(request, policy)  # whole texts, before the mapping cuts them
    mapped = rows_from_request(request)
    rows = mapped.rows
    pid = os.getpid()  # the spans ended in this process, whatever the resource says
    for row in rows:
        row["process_id"] = pid
        # capture off: drop the content (redacted above when on), as decorated code
        apply_content_policy(row, capture=policy.capture, redact=policy.redact,
                             redacted=True)
        if fixes:
            fix = fixes.get((row["trace_id"], row["span_id"]))
            if fix is not None:
                _bridge.apply(row, fix)
    return rows, mapped.rejected
