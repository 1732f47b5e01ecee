"""The OTLP exporter's sink backend: each batch as OTLP trace requests."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa

from llamonitor.export._otlp_config import Resolved, without_credentials
from llamonitor.export._otlp_send import ExportRejected, ExportUnavailable, OTLPSender
from llamonitor.export._otlp_spans import SpanEncoder

logger = logging.getLogger("llamonitor.export")

MAX_REQUEST_BYTES = 3 * 1024 * 1024
"""A request larger than this is split (receivers' default limit is 4 MiB for gRPC)."""


class OTLPSpanBackend:
    """``write_table`` sends the batch's spans in requests of at most
    ``max_spans_per_request`` spans and ``MAX_REQUEST_BYTES``.

    A request the receiver refuses for its content (``ExportRejected``) is
    not retried: once the rest of the batch is sent, its rows are raised as
    ``RowsRejected``, which the sink keeps in its spool with the error (see
    ``llamonitor spool status``), so nothing is lost silently. Spans the
    receiver reports rejected in a partial success are logged and counted
    (``stats()``, in ``health_check()``): the receiver does not say which.
    """

    def __init__(self, config: Resolved, max_spans_per_request: int = 1000) -> None:
        from llamonitor import __version__

        self.config = config
        self.max_spans = max_spans_per_request
        self.encoder = SpanEncoder(
            semconv=config.semconv,
            service_name=config.service_name,
            default_service_name=config.default_service_name,
            resource_attributes=config.resource_attributes,
            scope_version=__version__,
        )
        self.sender = OTLPSender(config)
        self._lock = threading.Lock()
        self.spans_sent = 0
        self.requests_rejected = 0
        self.spans_rejected = 0
        self.partial_rejected_spans = 0
        self._partial_logged = False
        self._progress: dict[tuple[int, str, str], int] = {}

    def initialize(self) -> None:
        """Nothing to open: the connection is made at the first request."""

    def write_table(self, table: pa.Table) -> None:
        """Send every row of ``table`` as a span.

        Raises:
            ExportUnavailable: the receiver cannot take them now (the sink retries, spools).
            RowsRejected: the receiver refused some requests for their content.
        """
        rejected: list[tuple[pa.Table, str]] = []
        key = _table_key(table)
        # A retry of a table whose first requests were taken (a later one hit an
        # outage) starts after them: a span is not sent twice for that.
        done = self._progress.pop(key, 0) if key is not None else 0
        try:
            for start in range(done, table.num_rows, self.max_spans):
                self._send(table.slice(start, self.max_spans), rejected)
                if not rejected:
                    done = min(start + self.max_spans, table.num_rows)
        except ExportUnavailable:
            if key is not None and done:
                while len(self._progress) >= MAX_PROGRESS_ENTRIES:
                    self._progress.pop(next(iter(self._progress)))
                self._progress[key] = done
            raise
        if rejected:
            from llamonitor.schema._rejected import RowsRejected

            with self._lock:
                self.requests_rejected += len(rejected)
                self.spans_rejected += sum(t.num_rows for t, _ in rejected)
            errors = [e for t, e in rejected for _ in range(t.num_rows)]
            raise RowsRejected(pa.concat_tables([t for t, _ in rejected]), errors)

    def _send(self, chunk: pa.Table, rejected: list[tuple[pa.Table, str]]) -> None:
        request = self.encoder.encode(chunk)
        if chunk.num_rows > 1 and request.ByteSize() > MAX_REQUEST_BYTES:
            half = chunk.num_rows // 2
            self._send(chunk.slice(0, half), rejected)
            self._send(chunk.slice(half), rejected)
            return
        try:
            response = self.sender.send("traces", request)
        except ExportRejected as exc:
            rejected.append((chunk, str(exc)))
            return
        partial = response.partial_success if response.HasField("partial_success") else None
        with self._lock:
            self.spans_sent += chunk.num_rows
            if partial is not None and partial.rejected_spans > 0:
                self.partial_rejected_spans += partial.rejected_spans
        if partial is not None and (partial.rejected_spans > 0 or partial.error_message):
            level = logging.DEBUG if self._partial_logged else logging.WARNING
            self._partial_logged = True
            logger.log(
                level,
                "llamonitor: %s rejected %d of %d spans: %s",
                without_credentials(self.config.endpoints["traces"]),
                partial.rejected_spans,
                chunk.num_rows,
                partial.error_message or "(no message)",
            )

    def stats(self) -> dict[str, Any]:
        """What the receiver took and refused (shown in ``health_check()``)."""
        with self._lock:
            return {
                "spans_sent": self.spans_sent,
                "requests": self.sender.requests,
                "bytes_sent": self.sender.bytes_sent,
                "requests_rejected": self.requests_rejected,
                "spans_rejected": self.spans_rejected,
                "partial_rejected_spans": self.partial_rejected_spans,
            }

    def close(self) -> None:
        self.sender.close()

    def __repr__(self) -> str:
        where = without_credentials(self.config.endpoints["traces"])
        return f"OTLPSpanBackend({self.config.protocol} {where})"


MAX_PROGRESS_ENTRIES = 64
"""Tables whose first requests were taken before an outage, remembered so their
retry (in memory, or replayed from the spool) does not send those again."""


def _table_key(table: pa.Table) -> tuple[int, str, str] | None:
    """What tells a table apart from another (its size, first and last event id)."""
    if table.num_rows == 0 or "event_id" not in table.column_names:
        return None
    ids = table.column("event_id")
    return table.num_rows, str(ids[0].as_py()), str(ids[-1].as_py())
