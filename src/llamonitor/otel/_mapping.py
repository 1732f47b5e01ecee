"""OTLP trace requests to stored-form span rows.

:func:`rows_from_request` turns an ``ExportTraceServiceRequest`` (protobuf,
from ``opentelemetry-proto``) into rows keyed by :data:`llamonitor.schema.SCHEMA`
column names, ready for the writer's lossless pipeline as row records
(``(None, row, 0, 0, None, None, None)``). A span that cannot be stored is
rejected alone, counted and explained; the others are kept.

What is rejected (the reason names are the counters' keys):

- ``invalid_trace_id`` / ``invalid_span_id``: not 16 / 8 bytes, or all zero
  (the OTLP spec's invalid ids). A *parent* id that is invalid does not reject
  the span: the span becomes a root, and the bad id is kept as
  ``otel.invalid_parent_span_id``.
- ``missing_start_time``: ``start_time_unix_nano`` is 0 (unset).
- ``clock_future``: the span starts more than :data:`MAX_CLOCK_SKEW_NS` (24 h)
  after the receiver's clock. Rejected, not clamped: a clamped time would be a
  made-up fact, and a span from the year 2500 would land in a date partition
  no retention ever reaches. Times before that bound are all representable by
  every store (an unsigned 64-bit nanosecond count ends in 2554).

Which attribute fills which column is in :mod:`llamonitor.otel._conventions`.
An attribute that fills a column is not repeated in ``custom_attributes``
(except the operation-kind ones, which say more than ``operation_type``);
every other span attribute is kept there as given, within the limits of
:mod:`llamonitor.otel._values`, with the resource's attributes under
``otel.resource``, the instrumentation scope under ``otel.scope``, the span
kind under ``otel.span_kind``, events under ``otel.events`` and links under
``otel.links``.

Content (``gen_ai.input.messages``, ``input.value``...) is stored as sent --
the instrumentation chose to capture it -- cut to ``content_max_chars`` like
llamonitor's own capture, with ``prompt_hash`` computed from the prompt.
Counts and costs are taken as given (``token_source="otel"``,
``cost_source="user"``); a span with tokens and a model but no cost is priced
by the writer like any other row.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from llamonitor._records import MAX_ERROR_MESSAGE_CHARS, safe_json
from llamonitor.llm import _settings as llm_settings
from llamonitor.llm.content import prompt_hash
from llamonitor.llm.pricing import fill_costs
from llamonitor.otel import _conventions as conv
from llamonitor.otel._values import Budget, attributes
from llamonitor.schema._columns import INT64_MAX, INT64_MIN, SCHEMA, SETTABLE, column_value

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

MAX_CLOCK_SKEW_NS = 24 * 3600 * 10**9
"""A span may start at most this far after the receiver's clock (else ``clock_future``)."""

MAX_ERRORS = 20
"""Messages kept in :attr:`MappedSpans.errors` (every rejection is still counted)."""

MAX_NAME_CHARS = 1024
MAX_SESSION_CHARS = 256
MAX_EVENTS = 64
MAX_LINKS = 64
MAX_JSON_PARSE_CHARS = 64 * 1024  # llm.invocation_parameters, Logfire's request/response_data

TOKEN_SOURCE_OTEL = "otel"
COST_SOURCE_USER = "user"

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SPAN_KINDS = {2: "server", 3: "client", 4: "producer", 5: "consumer"}  # 0, 1: internal
_STATUS_ERROR = 2
_CONTENT = ("prompt_content", "completion_content")
_INT_COLUMNS = frozenset(c for c, t in SETTABLE.items() if t is numbers.Integral)
# The exact Python class a plain value of each column has (the fast path of _fit).
_KIND: dict[str, type] = {
    c: {numbers.Integral: int, numbers.Real: float, str: str}[t]
    for c, t in SETTABLE.items()
    if t in (numbers.Integral, numbers.Real, str) and c not in ("finish_reason",)
}

# attribute -> (column, rank): the lower rank wins when a span has several.
_COLUMN_OF: dict[str, tuple[str, int]] = {
    name: (column, rank)
    for column, names in conv.COLUMN_ATTRIBUTES.items()
    for rank, name in enumerate(names, start=1)
}
_COLUMN_KEYS = frozenset(_COLUMN_OF)
_OWN_PREFIXED = frozenset(conv.LLAMONITOR_PREFIX + c for c in SETTABLE)
"""``llamonitor.<column>``: they win over every convention's name."""
_KEEP_KINDS = ("openinference.span.kind", "gen_ai.operation.name", "traceloop.span.kind")


@dataclass(slots=True)
class MappedSpans:
    """What :func:`rows_from_request` made of a request.

    Attributes:
        rows: stored-form rows (``SCHEMA`` column names; columns without a
            value are absent).
        rejected: spans that were not turned into rows.
        errors: why, one line per rejected span (at most :data:`MAX_ERRORS`).
        reasons: rejected spans by reason (``invalid_trace_id``...).
        dropped_attributes: attributes past :data:`~llamonitor.otel._values.MAX_ATTRIBUTES`.
        truncated_values: values cut to the limits.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    timestamps_us: list[int] = field(default_factory=list)
    """Each row's ``timestamp`` as UTC epoch microseconds (for :meth:`table`)."""
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    dropped_attributes: int = 0
    truncated_values: int = 0

    def reject(self, reason: str, where: str, detail: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {detail}")

    def table(self) -> pa.Table:
        """The rows as an Arrow table of ``SCHEMA``, priced like span records
        (tokens and a model, no cost: ``fill_costs``). Column by column: about
        half the time of ``pa.Table.from_pylist`` on the rows."""
        rows = self.rows
        n = len(rows)
        present: set[str] = set().union(*rows) if rows else set()
        cols: dict[str, Any] = {
            name: [r.get(name) for r in rows] for name in present if name != "timestamp"
        }
        if "input_tokens" in cols or "output_tokens" in cols:
            fill_costs(cols, n, _list_column)
        arrays = []
        for f in SCHEMA:
            if f.name == "timestamp":
                arrays.append(pa.array(self.timestamps_us, f.type))
                continue
            col = cols.get(f.name)
            arrays.append(pa.nulls(n, f.type) if col is None else pa.array(col, f.type))
        return pa.Table.from_arrays(arrays, schema=SCHEMA)

    def error_message(self) -> str:
        """The OTLP ``partial_success.error_message``: the counts, then the first reasons."""
        if not self.rejected:
            return ""
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items()))
        return f"rejected {self.rejected} span(s) ({counts}): " + "; ".join(self.errors)


def rows_from_request(
    request: ExportTraceServiceRequest, *, now_ns: int | None = None
) -> MappedSpans:
    """Map every span of an OTLP trace request to a stored-form row.

    Args:
        request: the decoded ``ExportTraceServiceRequest``.
        now_ns: the receiver's clock (UTC epoch nanoseconds) for the
            ``clock_future`` check; ``time.time_ns()`` when omitted.

    Returns:
        The rows, and what was rejected and why. Never raises for bad span
        data: a span that cannot be mapped is rejected alone.
    """
    now = time.time_ns() if now_ns is None else now_ns
    out = MappedSpans()
    for r, rs in enumerate(request.resource_spans):
        res_budget = Budget()
        resource = attributes(rs.resource.attributes, res_budget)
        service = resource.pop(conv.SERVICE_NAME, None)
        project = service if isinstance(service, str) and service else None
        if project is not None and project.startswith("unknown_service"):
            resource[conv.SERVICE_NAME] = project  # the SDK's placeholder: not a project
            project = None
        pid = resource.get(conv.PROCESS_PID)
        base = _Context(
            project=project[:MAX_NAME_CHARS] if project else None,
            pid=pid if isinstance(pid, int) and 0 <= pid < 2**63 else 0,
            resource=resource or None,
            now=now,
        )
        for s, ss in enumerate(rs.scope_spans):
            scope = ss.scope
            base.scope = (
                {"name": scope.name, "version": scope.version}
                if scope.version
                else ({"name": scope.name} if scope.name else None)
            )
            shared = {"otel.scope": base.scope, "otel.resource": base.resource}
            base.shared_json = (safe_json({k: v for k, v in shared.items() if v}) or "{}")[1:-1]
            for i, span in enumerate(ss.spans):
                where = f"resource_spans[{r}].scope_spans[{s}].spans[{i}]"
                try:
                    row = _row(span, base, out, where)
                except Exception as exc:  # a bug here must not lose the other spans
                    out.reject("internal_error", where, f"{type(exc).__name__}: {exc}")
                    continue
                if row is not None:
                    out.rows.append(row)
                    out.timestamps_us.append(span.start_time_unix_nano // 1000)
    return out


def _list_column(cols: dict[str, Any], key: str, n: int) -> list[Any]:
    col = cols.get(key)
    if col is None:
        col = cols[key] = [None] * n
    return col


@dataclass(slots=True)
class _Context:
    project: str | None
    pid: int
    resource: dict[str, Any] | None
    now: int
    scope: dict[str, str] | None = None
    shared_json: str = ""
    """``"otel.scope": {...}, "otel.resource": {...}`` (the members, no braces)."""
    spliced: bool = True


def _row(span: Any, ctx: _Context, out: MappedSpans, where: str) -> dict[str, Any] | None:
    tid: bytes = span.trace_id
    sid: bytes = span.span_id
    if len(tid) != 16 or tid == _ZERO_TRACE:
        out.reject("invalid_trace_id", where, f"invalid trace_id ({_describe(tid)})")
        return None
    if len(sid) != 8 or sid == _ZERO_SPAN:
        out.reject("invalid_span_id", where, f"invalid span_id ({_describe(sid)})")
        return None
    start: int = span.start_time_unix_nano
    if start == 0:
        out.reject("missing_start_time", where, "start_time_unix_nano is 0")
        return None
    if start > ctx.now + MAX_CLOCK_SKEW_NS:
        out.reject(
            "clock_future",
            where,
            f"start_time_unix_nano {start} is more than 24 h after the receiver's clock",
        )
        return None
    budget = Budget()
    attrs = attributes(span.attributes, budget)
    trace_hex = tid.hex()
    row: dict[str, Any] = {
        "event_id": hashlib.blake2b(tid + sid, digest_size=16).hexdigest(),
        "trace_id": trace_hex,
        "span_id": sid.hex(),
        "operation_name": (span.name or "(unnamed)")[:MAX_NAME_CHARS],
        "timestamp": _EPOCH + timedelta(microseconds=start // 1000),
        "process_id": ctx.pid,
    }
    end: int = span.end_time_unix_nano
    if end >= start:
        row["duration_ms"] = (end - start) / 1e6
    parent: bytes = span.parent_span_id
    if parent:
        if len(parent) == 8 and parent != _ZERO_SPAN:
            row["parent_span_id"] = parent.hex()
        else:  # the span is kept, as a root
            attrs["otel.invalid_parent_span_id"] = parent[:64].hex()
    if ctx.project is not None:
        row["project_name"] = ctx.project
    row["session_id"] = _session(attrs) or trace_hex
    _columns(attrs, row)
    row["operation_type"] = _operation_type(attrs, row)
    _error(span, attrs, row, budget)
    _extras(span, ctx, attrs, budget)
    if budget.dropped or span.dropped_attributes_count:
        attrs["otel.dropped_attributes_count"] = budget.dropped + span.dropped_attributes_count
    if budget.truncated:
        attrs["otel.truncated_values"] = budget.truncated
    out.dropped_attributes += budget.dropped
    out.truncated_values += budget.truncated
    custom = safe_json(attrs)
    shared = ctx.shared_json if ctx.spliced else None
    if shared:  # the scope's and resource's JSON, encoded once per scope
        custom = "{" + shared + "}" if custom is None else custom[:-1] + ", " + shared + "}"
    if custom is not None:
        row["custom_attributes"] = custom
    return row


def _describe(raw: bytes) -> str:
    return f"{len(raw)} bytes" if raw.strip(b"\0") else f"{len(raw)} zero bytes"


def _session(attrs: dict[str, Any]) -> str | None:
    for key in conv.SESSION_ATTRIBUTES:
        value = attrs.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        text = str(value)[:MAX_SESSION_CHARS]
        if text:
            for other in conv.SESSION_ATTRIBUTES:  # the column holds it (and its aliases)
                if other in attrs and str(attrs[other])[:MAX_SESSION_CHARS] == text:
                    del attrs[other]
            return text
    return None


def _columns(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """Fill the columns the attributes name; the ones used leave ``attrs``."""
    ranks: dict[str, tuple[int, str]] = {}
    for key in attrs.keys() & _COLUMN_KEYS:  # only the attributes that name a column
        column, rank = _COLUMN_OF[key]
        have = ranks.get(column)
        if have is not None and have[0] < rank:
            continue
        fitted = _fit(column, attrs[key])
        if fitted is None:
            continue  # e.g. a token count given as a string: kept as an attribute
        row[column] = fitted
        ranks[column] = (rank, key)
    if ranks:
        for _, key in ranks.values():
            del attrs[key]
    if _OWN_PREFIXED & attrs.keys():  # llamonitor's own exporter: llamonitor.<column>
        for key in _OWN_PREFIXED & attrs.keys():
            fitted = _fit(key[11:], attrs[key])
            if fitted is not None:
                row[key[11:]] = fitted
                del attrs[key]
    if "temperature" not in row or "max_tokens" not in row or "model" not in row:
        _invocation_parameters(attrs, row)
    if "input_tokens" not in row and "output_tokens" not in row:
        _logfire(attrs, row)
    _content(attrs, row)
    if "input_tokens" in row or "output_tokens" in row:
        if "total_tokens" not in row:
            row["total_tokens"] = row.get("input_tokens", 0) + row.get("output_tokens", 0)
        row.setdefault("token_source", TOKEN_SOURCE_OTEL)
    if "cost_usd" not in row and ("input_cost_usd" in row or "output_cost_usd" in row):
        row["cost_usd"] = row.get("input_cost_usd", 0.0) + row.get("output_cost_usd", 0.0)
    if "cost_usd" in row:
        row.setdefault("cost_source", COST_SOURCE_USER)


def _fit(column: str, raw: Any) -> Any:
    kind = _KIND.get(column)
    cls = raw.__class__
    if kind is str:
        if cls is str:
            return raw
    elif kind is int:
        if cls is int:
            return raw if INT64_MIN <= raw <= INT64_MAX else None
    elif kind is float and (cls is float or cls is int):
        return float(raw)
    if column in _CONTENT:
        if isinstance(raw, str):
            return raw
        return json.dumps(raw, ensure_ascii=False) if isinstance(raw, (list, dict)) else None
    if column in _INT_COLUMNS and isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # some SDKs send counts as doubles
    return column_value(column, raw)


def _invocation_parameters(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """OpenInference's ``llm.invocation_parameters`` (JSON of the request)."""
    params = _json_object(attrs.get(conv.INVOCATION_PARAMETERS))
    if params is None:
        return
    if "temperature" not in row:
        t = column_value("temperature", params.get("temperature"))
        if t is not None:
            row["temperature"] = t
    if "max_tokens" not in row:
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens"):
            m = column_value("max_tokens", params.get(key))
            if m is not None:
                row["max_tokens"] = m
                break
    if "model" not in row:
        model = column_value("model", params.get("model"))
        if model:
            row["model"] = model


def _logfire(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """Logfire's OpenAI / Anthropic spans: ``request_data`` and ``response_data`` JSON."""
    request = _json_object(attrs.get(conv.LOGFIRE_REQUEST))
    if request is not None and "model" not in row:
        model = column_value("model", request.get("model"))
        if model:
            row["model"] = model
    response = _json_object(attrs.get(conv.LOGFIRE_RESPONSE))
    if response is None:
        return
    usage = response.get("usage")
    if isinstance(usage, dict):
        pairs = (
            ("input_tokens", ("input_tokens", "prompt_tokens")),
            ("output_tokens", ("output_tokens", "completion_tokens")),
        )
        for column, keys in pairs:
            for key in keys:
                v = column_value(column, usage.get(key))
                if v is not None:
                    row[column] = v
                    break
    if "response_model" not in row:
        model = column_value("response_model", response.get("model"))
        if model:
            row["response_model"] = model


def _json_object(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_JSON_PARSE_CHARS or not raw.startswith("{"):
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _content(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    if "prompt_content" not in row and "completion_content" not in row:
        return
    cap = llm_settings.SETTINGS.content_max_chars
    prompt = row.get("prompt_content")
    if prompt:
        h = prompt_hash(prompt)
        if h is not None:
            row.setdefault("prompt_hash", h)
    cut: dict[str, int] = {}
    for column in _CONTENT:
        text = row.get(column)
        if text is not None and len(text) > cap:
            cut[column] = len(text)
            row[column] = text[:cap]
    if cut:
        attrs["content_truncated"] = cut


def _operation_type(attrs: dict[str, Any], row: dict[str, Any]) -> str:
    own = attrs.pop(conv.OPERATION_TYPE_ATTRIBUTES[0], None)
    if isinstance(own, str) and own:
        return own[:MAX_NAME_CHARS]
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in conv.OPENINFERENCE_KINDS:
        return conv.OPENINFERENCE_KINDS[kind.upper()]
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return conv.GEN_AI_OPERATIONS.get(op, op[:MAX_NAME_CHARS])
    kind = attrs.get("traceloop.span.kind")
    if isinstance(kind, str) and kind in conv.TRACELOOP_KINDS:
        name = attrs.get("traceloop.entity.name")
        if kind == "agent" and isinstance(name, str) and "agent_name" not in row:
            row["agent_name"] = name[:MAX_NAME_CHARS]
        return conv.TRACELOOP_KINDS[kind]
    request_type = attrs.get("llm.request.type")
    if isinstance(request_type, str) and request_type in conv.TRACELOOP_REQUEST_TYPES:
        return conv.TRACELOOP_REQUEST_TYPES[request_type]
    if "input_tokens" in row or "output_tokens" in row or "model" in row:
        return conv.LLM_OPERATION_TYPE
    return conv.DEFAULT_OPERATION_TYPE


def _error(span: Any, attrs: dict[str, Any], row: dict[str, Any], budget: Budget) -> None:
    """``error`` from the status; its type and message from ``error.type``,
    the status message and the first ``exception`` event."""
    status = span.status
    if status.code != _STATUS_ERROR:
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


def _extras(span: Any, ctx: _Context, attrs: dict[str, Any], budget: Budget) -> None:
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
    if span.status.code != _STATUS_ERROR and span.status.message:
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
