"""OpenTelemetry GenAI ``gen_ai.evaluation.result`` events to score rows.

The event arrives two ways, and both become rows of the scores table
(``llamonitor.schema._scores``):

- as an OTLP log record whose ``event_name`` (or, from older SDKs, the
  attribute ``event.name``) is ``gen_ai.evaluation.result``
  (:func:`scores_from_logs`, for ``POST /v1/logs``): what the conventions
  prescribe, and what llamonitor's exporter sends;
- as a span event of that name (:func:`collect_span_events`, called by the
  trace mapping for a span that has events): what instrumentations without
  the logs API send. The span carrying it is the judged span.

The judged span is the record's ``trace_id``/``span_id`` (a span score), or
only a ``trace_id`` (a trace score), or a ``session.id`` attribute (a session
score). ``gen_ai.evaluation.name`` is the score's name, ``...score.value`` its
value, ``...score.label`` its label, ``gen_ai.evaluation.explanation`` its
comment. What llamonitor's exporter adds under ``llamonitor.score.*`` (id,
source, evaluator, metadata, ids not in OTLP form) is read back, so a score
exported and received again is the same row. A foreign event's score has
source ``code`` and evaluator the instrumentation scope's name (else
``otel``); its other attributes (``gen_ai.response.id``, ``error.type``...)
are kept in ``metadata["otel.attributes"]``, under the receiver's content
policy (``ContentPolicy``, as the spans' attributes): with capture off the
content attributes (``gen_ai.input.messages``..., ``is_content``) are dropped,
with capture on their text passes through the redaction rules. The
explanation is the score's comment, kept as sent (docs/scores.md).

An event without a name, without a value or label, or without anything to
name its target is not stored: it is counted and explained (the logs answer's
``partial_success``; for span events ``MappedSpans.scores_rejected`` and the
traces answer's ``partial_success`` message).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from llamonitor.otel._content import is_content
from llamonitor.otel._redact import ContentPolicy, redact_text
from llamonitor.otel._values import Budget, attributes
from llamonitor.schema._scores import make_score

EVENT_NAME = "gen_ai.evaluation.result"
NAME = "gen_ai.evaluation.name"
VALUE = "gen_ai.evaluation.score.value"
LABEL = "gen_ai.evaluation.score.label"
EXPLANATION = "gen_ai.evaluation.explanation"
NS = "llamonitor.score."
SESSION_ID = "session.id"
EVENT_NAME_ATTRIBUTE = "event.name"

logger = logging.getLogger("llamonitor.otel")

MAX_ERRORS = 20
_KNOWN = frozenset((NAME, VALUE, LABEL, EXPLANATION, EVENT_NAME_ATTRIBUTE))
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


@dataclass
class MappedScores:
    """Score rows made of a request, and the events that were not."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    other_records: int = 0
    """Log records that are not evaluation results (not stored here)."""

    def reject(self, where: str, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {why}")

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        return f"rejected {self.rejected} evaluation result(s): " + "; ".join(self.errors)


def _hex(raw: bytes, size: int) -> str | None:
    if len(raw) != size or raw == bytes(size):
        return None
    return raw.hex()


def _when(ns: int) -> datetime:
    if ns <= 0:
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(ns // 10**9, timezone.utc).replace(
        microsecond=(ns % 10**9) // 1000
    )


def score_of(
    attrs: dict[str, Any],
    trace_id: str | None,
    span_id: str | None,
    time_ns: int,
    evaluator: str,
    content: ContentPolicy | None = None,
) -> dict[str, Any]:
    """The score row of one evaluation result's attributes (``content``: the
    policy of the attributes kept in ``metadata["otel.attributes"]``; ``None``:
    kept as sent).

    Raises:
        ValueError: not a score (no name, value or label; no target...).
    """
    own = {k[len(NS):]: v for k, v in attrs.items() if k.startswith(NS)}
    trace_id = own.get("trace_id") if isinstance(own.get("trace_id"), str) else trace_id
    span_id = own.get("span_id") if isinstance(own.get("span_id"), str) else span_id
    session_id = own.get("session_id")
    if not isinstance(session_id, str):
        session_id = attrs.get(SESSION_ID) if isinstance(attrs.get(SESSION_ID), str) else None
    target = own.get("target")
    if target not in ("trace", "span", "session"):
        target = "span" if span_id else ("trace" if trace_id else "session")
    if target == "span" and not span_id:
        raise ValueError("no span_id for a span score")
    if target == "trace" and not trace_id:
        raise ValueError("no trace_id for a trace score")
    if target == "session" and not session_id:
        raise ValueError(
            "nothing names what it judges: no span or trace id, no session.id "
            "(gen_ai.response.id alone is not resolved)"
        )
    metadata: dict[str, Any] | None = None
    text = own.get("metadata")
    if isinstance(text, str):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = {"text": text}
        metadata = loaded if isinstance(loaded, dict) else {"value": loaded}
    foreign = {k: v for k, v in attrs.items()
               if k not in _KNOWN and not k.startswith(NS) and k != SESSION_ID}
    if content is not None:
        foreign = _under_policy(foreign, content)
    if foreign:
        metadata = {**(metadata or {}), "otel.attributes": foreign}
    value = attrs.get(VALUE)
    if isinstance(value, str):
        text = value
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{VALUE} {text[:40]!r} is not a number") from None
    source = own.get("source") if own.get("source") in ("human", "code", "llm") else "code"
    return make_score(
        attrs.get(NAME),
        value,
        label=attrs.get(LABEL),
        trace_id=trace_id if target == "trace" else None,
        span_id=span_id if target == "span" else None,
        session_id=session_id if target == "session" else None,
        comment=attrs.get(EXPLANATION),
        source=source,
        # Ours (it has its id): its evaluator as it was, none included.
        evaluator=own.get("evaluator") if "score_id" in own else evaluator,
        metadata=metadata,
        score_id_=own.get("score_id"),
        timestamp=_when(time_ns),
        span_trace_id=trace_id,
    )


def _under_policy(attrs: dict[str, Any], content: ContentPolicy) -> dict[str, Any]:
    """``attrs`` without their content attributes (capture off), or with
    their text redacted (capture on, with rules)."""
    if not content.capture:
        return {k: v for k, v in attrs.items() if not is_content(k)}
    redact = content.redact
    if redact is None:
        return attrs
    return {k: _redacted(v, redact) if is_content(k) else v for k, v in attrs.items()}


def _redacted(value: Any, redact: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value, redact)
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    return value


def collect_span_events(
    span: Any, trace_hex: str, span_hex: str, scope: dict[str, str] | None,
    out: list[dict[str, Any]], content: ContentPolicy | None = None,
) -> list[str]:
    """Append the scores of ``span``'s ``gen_ai.evaluation.result`` events to
    ``out`` (``content``: as in :func:`score_of`).

    Returns:
        Why each evaluation event that is not a score was not (the span keeps
        it in ``otel.events``; a bad event never costs the span).
    """
    rejected: list[str] = []
    for k, ev in enumerate(span.events):
        if ev.name != EVENT_NAME:
            continue
        try:
            attrs = attributes(ev.attributes, Budget())
            evaluator = (scope or {}).get("name") or "otel"
            out.append(score_of(attrs, trace_hex, span_hex, ev.time_unix_nano, evaluator,
                                content))
        except ValueError as exc:
            rejected.append(f"span {span_hex} events[{k}]: {exc}")
        except Exception as exc:  # a bug here must not lose the span
            rejected.append(f"span {span_hex} events[{k}]: {type(exc).__name__}: {exc}")
    if rejected:
        logger.debug("llamonitor: %d evaluation event(s) not scores: %s",
                     len(rejected), "; ".join(rejected))
    return rejected


def _is_evaluation(record: Any, attrs: dict[str, Any]) -> bool:
    name = getattr(record, "event_name", "") or attrs.get(EVENT_NAME_ATTRIBUTE)
    return bool(name == EVENT_NAME)


def scores_from_logs(request: Any, content: ContentPolicy | None = None) -> MappedScores:
    """The scores of an ``ExportLogsServiceRequest``'s evaluation results
    (other log records are counted in ``other_records``, not stored;
    ``content``: as in :func:`score_of`)."""
    out = MappedScores()
    for r, rl in enumerate(request.resource_logs):
        for s, sl in enumerate(rl.scope_logs):
            evaluator = sl.scope.name or "otel"
            for i, record in enumerate(sl.log_records):
                where = f"resource_logs[{r}].scope_logs[{s}].log_records[{i}]"
                try:
                    attrs = attributes(record.attributes, Budget())
                    if not _is_evaluation(record, attrs):
                        out.other_records += 1
                        continue
                    row = score_of(
                        attrs,
                        _hex(record.trace_id, 16),
                        _hex(record.span_id, 8),
                        record.time_unix_nano or record.observed_time_unix_nano,
                        evaluator,
                        content,
                    )
                except ValueError as exc:
                    out.reject(where, str(exc))
                    continue
                except Exception as exc:  # a bug here must not lose the other records
                    out.reject(where, f"{type(exc).__name__}: {exc}")
                    continue
                out.rows.append(row)
    return out
