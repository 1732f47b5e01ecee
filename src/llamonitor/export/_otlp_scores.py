"""Scores as OpenTelemetry GenAI ``gen_ai.evaluation.result`` events, over OTLP logs.

The GenAI semantic conventions define the evaluation result as an *event*: in
OpenTelemetry an event is a log record with an ``event_name``, sent to the
logs endpoint (``/v1/logs``), not a span. The conventions ask for it to be
parented to the GenAI span it evaluates, which a log record does by carrying
that span's ``trace_id`` and ``span_id``. This also fits how scores arrive: a
score is usually given after its span was exported (an evaluator run, a click
in the UI), and a span, once sent, cannot take a span event any more; a log
record can name it at any time. docs/scores.md has the reasoning.

One score, one log record:

- ``event_name`` ``gen_ai.evaluation.result``; ``time_unix_nano`` when the
  score was given; ``trace_id``/``span_id`` the judged trace or span, with
  the span exporter's id mapping (``_otlp_ids``), so they match the exported
  span's ids;
- ``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value`` (double),
  ``gen_ai.evaluation.score.label``, ``gen_ai.evaluation.explanation`` (the
  comment);
- the rest under ``llamonitor.score.*`` (id, source, target, evaluator,
  session id, metadata, and ids that are not OTLP ids in form), so the
  receiver stores back the same score.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

try:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the OTLP score encoder needs opentelemetry-proto ({exc}): pip install 'llamonitor[otlp]'"
    ) from exc

from llamonitor.export._otlp_ids import SPAN_ID_BYTES, TRACE_ID_BYTES, otlp_id

EVENT_NAME = "gen_ai.evaluation.result"
NAME = "gen_ai.evaluation.name"
VALUE = "gen_ai.evaluation.score.value"
LABEL = "gen_ai.evaluation.score.label"
EXPLANATION = "gen_ai.evaluation.explanation"
NS = "llamonitor.score."
"""Our own keys: what the conventions have no attribute for."""

SEVERITY_INFO = 9
SCOPE_NAME = "llamonitor"

_OWN = ("score_id", "source", "target", "evaluator", "session_id", "metadata")


def _put(record: LogRecord, key: str, value: Any) -> None:
    kv = record.attributes.add(key=key)
    if isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = str(value)


class ScoreEncoder:
    """Tables of scores (``SCORE_SCHEMA``) to ``ExportLogsServiceRequest``s."""

    def __init__(
        self,
        service_name: str | None = None,
        default_service_name: str = "llamonitor",
        resource_attributes: dict[str, str] | None = None,
        scope_version: str = "",
    ) -> None:
        self.service_name = service_name
        self.default_service_name = default_service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.scope_version = scope_version

    def encode(self, table: pa.Table) -> ExportLogsServiceRequest:
        request = ExportLogsServiceRequest()
        resource = request.resource_logs.add()
        attrs = {**self.resource_attributes,
                 "service.name": self.service_name or self.default_service_name,
                 "telemetry.sdk.name": "llamonitor", "telemetry.sdk.language": "python"}
        for key, value in attrs.items():
            resource.resource.attributes.add(key=key).value.string_value = str(value)
        scope = resource.scope_logs.add()
        scope.scope.name = SCOPE_NAME
        scope.scope.version = self.scope_version
        for row in table.to_pylist():
            self._record(scope.log_records.add(), row)
        return request

    def _record(self, record: LogRecord, row: dict[str, Any]) -> None:
        record.event_name = EVENT_NAME
        when = row["timestamp"]
        ns = int(when.timestamp()) * 10**9 + when.microsecond * 1000
        record.time_unix_nano = ns
        record.observed_time_unix_nano = ns
        record.severity_number = SEVERITY_INFO  # type: ignore[assignment]
        record.severity_text = "INFO"
        trace_id, span_id = row.get("trace_id"), row.get("span_id")
        if trace_id:
            raw, own = otlp_id(trace_id, TRACE_ID_BYTES)
            record.trace_id = raw
            if not own:
                _put(record, NS + "trace_id", trace_id)
        if span_id:
            raw, own = otlp_id(span_id, SPAN_ID_BYTES)
            if trace_id:  # a span id means nothing in OTLP without its trace
                record.span_id = raw
            if not own or not trace_id:
                _put(record, NS + "span_id", span_id)
        _put(record, NAME, row["name"])
        if row.get("value") is not None:
            _put(record, VALUE, float(row["value"]))
        if row.get("label") is not None:
            _put(record, LABEL, row["label"])
        if row.get("comment") is not None:
            _put(record, EXPLANATION, row["comment"])
        for key in _OWN:
            if row.get(key) is not None:
                _put(record, NS + key, row[key])


class OTLPScoreBackend:
    """The score sink's backend of an OTLP exporter: each table of scores as
    one logs request (``max_per_request`` records at most).

    A refused request (``ExportRejected``) is raised as ``RowsRejected``, kept
    by the sink's spool with the receiver's message; a receiver that is down,
    or has no logs endpoint (404), is ``ExportUnavailable``: retried, then
    spooled, like spans.
    """

    def __init__(self, config: Any, max_per_request: int = 1000) -> None:
        from llamonitor import __version__
        from llamonitor.export._otlp_send import OTLPSender

        self.config = config
        self.max_per_request = max_per_request
        self.encoder = ScoreEncoder(
            service_name=config.service_name,
            default_service_name=config.default_service_name,
            resource_attributes=config.resource_attributes,
            scope_version=__version__,
        )
        self.sender = OTLPSender(config)
        self.scores_sent = 0

    def initialize(self) -> None:
        """Nothing to open: the connection is made at the first request."""

    def write_table(self, table: pa.Table) -> None:
        from llamonitor.export._otlp_send import ExportRejected

        rejected: list[tuple[pa.Table, str]] = []
        for start in range(0, table.num_rows, self.max_per_request):
            chunk = table.slice(start, self.max_per_request)
            try:
                self.sender.send("logs", self.encoder.encode(chunk))
            except ExportRejected as exc:
                rejected.append((chunk, str(exc)))
                continue
            self.scores_sent += chunk.num_rows
        if rejected:
            from llamonitor.schema._rejected import RowsRejected

            errors = [e for t, e in rejected for _ in range(t.num_rows)]
            raise RowsRejected(pa.concat_tables([t for t, _ in rejected]), errors)

    def close(self) -> None:
        self.sender.close()

    def __repr__(self) -> str:
        from llamonitor.export._otlp_config import without_credentials

        return f"OTLPScoreBackend({self.config.protocol} " \
            f"{without_credentials(self.config.endpoints['logs'])})"
