"""OTLP trace requests to stored-form span columns.

:func:`rows_from_request` turns an ``ExportTraceServiceRequest`` (protobuf,
from ``opentelemetry-proto``) into columns named as :data:`llamonitor.schema.SCHEMA`'s,
one value a span: :meth:`MappedSpans.table` makes them the Arrow table the
writer's lossless pipeline queues (``MonitoringWriter.record_table``), and
:attr:`MappedSpans.rows` the same spans as row dicts. A span that cannot be
stored is rejected alone, counted and explained; the others are kept.

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

Which attribute fills which column is in :mod:`llamonitor.otel._conventions`
(applied by :mod:`llamonitor.otel._attributes`). An attribute that fills a
column is not repeated in ``custom_attributes`` (except the operation-kind
ones, which say more than ``operation_type``); every other span attribute is
kept there as given, within the limits of :mod:`llamonitor.otel._values`,
with the resource's attributes under ``otel.resource``, the instrumentation
scope under ``otel.scope``, and the span's kind, status message, events and
links under ``otel.*`` keys (:mod:`llamonitor.otel._span_facts`).

Content (``gen_ai.input.messages``, ``input.value``...) is mapped as found,
cut to ``content_max_chars`` like llamonitor's own capture, with
``prompt_hash`` computed from the prompt; the capture setting and redaction
are applied around the mapping by its callers (:mod:`llamonitor.otel._redact`).
Counts and costs are taken as given (``token_source="otel"``,
``cost_source="user"``); a span with tokens and a model but no cost is priced
(in :meth:`MappedSpans.table`, or by the writer for rows) like any other.

The spans are read once, from a view of the request's bytes whose attributes
are decoded once per distinct attribute (:mod:`llamonitor.otel._wire`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from llamonitor._records import safe_json
from llamonitor.llm.pricing import fill_costs, price_arrays
from llamonitor.otel import _attributes as fill
from llamonitor.otel import _conventions as conv
from llamonitor.otel import _scores as evaluations
from llamonitor.otel import _span_facts as facts
from llamonitor.otel._attributes import MAX_NAME_CHARS
from llamonitor.otel._plans import map_spans
from llamonitor.otel._values import Budget, attributes
from llamonitor.otel._wire import span_attributes, view
from llamonitor.schema._columns import SCHEMA

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from llamonitor.otel._redact import ContentPolicy

MAX_CLOCK_SKEW_NS = 24 * 3600 * 10**9
"""A span may start at most this far after the receiver's clock (else ``clock_future``)."""

MAX_ERRORS = 20
"""Messages kept in :attr:`MappedSpans.errors` (every rejection is still counted)."""

MAX_CACHED_JSON = 4096
"""``custom_attributes`` texts kept for attribute sets seen again (then it starts over)."""

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIXED = ("event_id", "trace_id", "span_id", "operation_name", "process_id", "session_id",
          "operation_type")
"""The columns every row has a value in (the others are filled where a span has one)."""
_COST_OUTPUTS = ("input_cost_usd", "output_cost_usd", "cost_usd", "cost_source")


@dataclass(slots=True)
class MappedSpans:
    """What :func:`rows_from_request` made of a request.

    Attributes:
        columns: ``SCHEMA`` column name -> one value a kept span (``None``: no
            value); a column no span has a value in is absent.
        timestamps_us: each kept span's ``timestamp``, UTC epoch microseconds.
        rejected: spans that were not kept.
        errors: why, one line per rejected span (at most :data:`MAX_ERRORS`).
        reasons: rejected spans by reason (``invalid_trace_id``...).
        dropped_attributes: attributes past :data:`~llamonitor.otel._values.MAX_ATTRIBUTES`.
        truncated_values: values cut to the limits.
    """

    columns: dict[str, list[Any]] = field(default_factory=dict)
    timestamps_us: list[int] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    dropped_attributes: int = 0
    truncated_values: int = 0
    scores: list[dict[str, Any]] = field(default_factory=list)
    """Score rows of the spans' ``gen_ai.evaluation.result`` events (``_scores``)."""
    scores_rejected: int = 0
    """Evaluation events that are not scores (no name, a value that is no number...)."""
    score_errors: list[str] = field(default_factory=list)
    """Why, one line per event (at most :data:`MAX_ERRORS`)."""

    def __len__(self) -> int:
        """The spans kept."""
        return len(self.timestamps_us)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The kept spans as stored-form rows (a new list at each access):
        ``SCHEMA`` column names, columns without a value absent."""
        names = list(self.columns)
        cols = [self.columns[name] for name in names]
        out = []
        for i, us in enumerate(self.timestamps_us):
            row = {
                name: col[i] for name, col in zip(names, cols, strict=True) if col[i] is not None
            }
            row["timestamp"] = _EPOCH + timedelta(microseconds=us)
            out.append(row)
        return out

    def reject(self, reason: str, where: str, detail: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {detail}")

    def table(self) -> pa.Table:
        """The kept spans as an Arrow table of ``SCHEMA``, priced like span
        records (tokens and a model, no cost: ``fill_costs``)."""
        n = len(self.timestamps_us)
        cols: dict[str, Any] = dict(self.columns)
        priced: dict[str, Any] = {}
        if ("input_tokens" in cols or "output_tokens" in cols) and (
            "model" in cols or "response_model" in cols
        ):
            got = price_arrays(cols, n)  # per distinct model, in columns
            if got is None:  # a tiered price: row by row
                for name in _COST_OUTPUTS:  # priced here: the rows keep what was sent
                    if name in cols:
                        cols[name] = list(cols[name])
                fill_costs(cols, n, _list_column)
            else:
                priced = got
        arrays = []
        for f in SCHEMA:
            if f.name == "timestamp":
                arrays.append(pa.array(self.timestamps_us, pa.int64()).cast(f.type))
                continue
            done = priced.get(f.name)
            if done is not None:
                arrays.append(done if done.type == f.type else done.cast(f.type))
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

    def score_message(self) -> str:
        """What became of the spans' evaluation events that are not scores."""
        if not self.scores_rejected:
            return ""
        return (f"rejected {self.scores_rejected} gen_ai.evaluation.result event(s) "
                "(the spans are kept): " + "; ".join(self.score_errors))


def rows_from_request(
    request: ExportTraceServiceRequest, *, now_ns: int | None = None, wire: bytes | None = None,
    content: ContentPolicy | None = None,
) -> MappedSpans:
    """Map every span of an OTLP trace request to stored-form columns.

    Args:
        request: the decoded ``ExportTraceServiceRequest``.
        now_ns: the receiver's clock (UTC epoch nanoseconds) for the
            ``clock_future`` check; ``time.time_ns()`` when omitted.
        wire: ``request``'s protobuf bytes when at hand (what it was parsed
            from): saves serializing it again.
        content: the policy of the attributes the scores of evaluation events
            keep (``None``: as sent; the spans' columns are left to the caller).

    Returns:
        The columns, and what was rejected and why. Never raises for bad span
        data: a span that cannot be mapped is rejected alone.
    """
    now = time.time_ns() if now_ns is None else now_ns
    out = MappedSpans()
    seen = _view_of(request, wire)
    total = sum(len(ss.spans) for rs in seen.resource_spans for ss in rs.scope_spans)
    fixed: dict[str, list[Any]] = {name: [] for name in _FIXED}
    sparse: dict[str, list[Any]] = {}
    for r, rs in enumerate(seen.resource_spans):
        base = _context(rs, now)
        base.content = content
        for s, ss in enumerate(rs.scope_spans):
            _scope(ss, base)

            def general(i: int, span: Any, r: int = r, s: int = s, base: _Context = base) -> None:
                try:
                    row = _row(span, base, out, fixed)
                except Exception as exc:  # a bug here must not lose the other spans
                    where = f"resource_spans[{r}].scope_spans[{s}].spans[{i}]"
                    out.reject("internal_error", where, f"{type(exc).__name__}: {exc}")
                    _undo(fixed, len(out.timestamps_us))
                    return
                if row is None:
                    where = f"resource_spans[{r}].scope_spans[{s}].spans[{i}]"
                    reason, detail = base.rejection
                    out.reject(reason, where, detail)
                    return
                k = len(out.timestamps_us)
                for name, value in row.items():
                    col = sparse.get(name)
                    if col is None:
                        col = fixed.get(name)  # llamonitor.operation_name, .process_id
                        if col is None:
                            col = sparse[name] = [None] * total
                    col[k] = value
                out.timestamps_us.append(span.start_time_unix_nano // 1000)

            map_spans(ss.spans, base, out, fixed, sparse, total, now + MAX_CLOCK_SKEW_NS, general)
    n = len(out.timestamps_us)
    for col in sparse.values():
        del col[n:]
    out.columns = {**fixed, **sparse} if n else {}
    return out


def _view_of(request: Any, wire: bytes | None) -> Any:
    return view(request.SerializeToString() if wire is None else wire)


def _list_column(cols: dict[str, Any], key: str, n: int) -> list[Any]:
    col = cols.get(key)
    if col is None:
        col = cols[key] = [None] * n
    return col


def _undo(fixed: dict[str, list[Any]], n: int) -> None:
    """Drop what a span that failed midway appended to the fixed columns."""
    for col in fixed.values():
        del col[n:]


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
    rejection: tuple[str, str] = ("", "")
    """Why the last span was rejected: (reason, detail)."""
    trace: tuple[bytes, str] = (b"", "")
    """The last trace id and its hex (the spans of a trace come together)."""
    content: ContentPolicy | None = None
    """The policy of the evaluation events' kept attributes."""


def _context(rs: Any, now: int) -> _Context:
    """What every span of one ``ResourceSpans`` shares."""
    resource = attributes(rs.resource.attributes, Budget())
    service = resource.pop(conv.SERVICE_NAME, None)
    project = service if isinstance(service, str) and service else None
    if project is not None and project.startswith("unknown_service"):
        resource[conv.SERVICE_NAME] = project  # the SDK's placeholder: not a project
        project = None
    pid = resource.get(conv.PROCESS_PID)
    return _Context(
        project=project[:MAX_NAME_CHARS] if project else None,
        pid=pid if isinstance(pid, int) and 0 <= pid < 2**63 else 0,
        resource=resource or None,
        now=now,
    )


def _scope(ss: Any, base: _Context) -> None:
    scope = ss.scope
    base.scope = (
        {"name": scope.name, "version": scope.version}
        if scope.version
        else ({"name": scope.name} if scope.name else None)
    )
    shared = {"otel.scope": base.scope, "otel.resource": base.resource}
    base.shared_json = (safe_json({k: v for k, v in shared.items() if v}) or "{}")[1:-1]


def _row(
    span: Any, ctx: _Context, out: MappedSpans, fixed: dict[str, list[Any]]
) -> dict[str, Any] | None:
    """Append the span's fixed columns; its other columns as a dict (``None``:
    rejected, the reason in ``ctx.rejection``)."""
    tid: bytes = span.trace_id
    sid: bytes = span.span_id
    if len(tid) != 16 or tid == _ZERO_TRACE:
        ctx.rejection = ("invalid_trace_id", f"invalid trace_id ({_describe(tid)})")
        return None
    if len(sid) != 8 or sid == _ZERO_SPAN:
        ctx.rejection = ("invalid_span_id", f"invalid span_id ({_describe(sid)})")
        return None
    start: int = span.start_time_unix_nano
    if start == 0:
        ctx.rejection = ("missing_start_time", "start_time_unix_nano is 0")
        return None
    if start > ctx.now + MAX_CLOCK_SKEW_NS:
        ctx.rejection = (
            "clock_future",
            f"start_time_unix_nano {start} is more than 24 h after the receiver's clock",
        )
        return None
    budget = Budget()
    attrs, fills = span_attributes(span.attributes, budget)
    last_tid, trace_hex = ctx.trace
    if tid != last_tid:
        trace_hex = tid.hex()
        ctx.trace = (tid, trace_hex)
    row: dict[str, Any] = {}
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
    session = fill.session(attrs) or trace_hex
    fill.columns(attrs, row, fills)
    operation_type = fill.operation_type(attrs, row)
    facts.error(span, attrs, row, budget)
    facts.extras(span, ctx, attrs, budget)
    if len(span.events):  # evaluation results become scores (otel/_scores.py)
        bad = evaluations.collect_span_events(span, trace_hex, sid.hex(), ctx.scope,
                                              out.scores, ctx.content)
        if bad:
            out.scores_rejected += len(bad)
            out.score_errors.extend(bad[: max(0, MAX_ERRORS - len(out.score_errors))])
    if budget.dropped or span.dropped_attributes_count:
        attrs["otel.dropped_attributes_count"] = budget.dropped + span.dropped_attributes_count
    if budget.truncated:
        attrs["otel.truncated_values"] = budget.truncated
    out.dropped_attributes += budget.dropped
    out.truncated_values += budget.truncated
    custom = _custom_json(attrs)
    shared = ctx.shared_json if ctx.spliced else None
    if shared:  # the scope's and resource's JSON, encoded once per scope
        custom = "{" + shared + "}" if custom is None else custom[:-1] + ", " + shared + "}"
    if custom is not None:
        row["custom_attributes"] = custom
    fixed["event_id"].append(hashlib.blake2b(tid + sid, digest_size=16).hexdigest())
    fixed["trace_id"].append(trace_hex)
    fixed["span_id"].append(sid.hex())
    fixed["operation_name"].append((span.name or "(unnamed)")[:MAX_NAME_CHARS])
    fixed["process_id"].append(ctx.pid)
    fixed["session_id"].append(session)
    fixed["operation_type"].append(operation_type)
    return row


def _describe(raw: bytes) -> str:
    return f"{len(raw)} bytes" if raw.strip(b"\0") else f"{len(raw)} zero bytes"


_PLAIN = frozenset((str, int, bool))
"""Value types whose JSON is told apart by value and type (floats are not:
``0.0 == -0.0``, so their sets are encoded every time)."""

MAX_JSON_KEY_ITEMS = 32
"""Attribute sets larger than this are encoded every time."""

_JSON: dict[tuple[Any, ...], str] = {}


def _custom_json(attrs: dict[str, Any]) -> str | None:
    """``safe_json(attrs)``, kept for attribute sets of plain values that come
    again (most spans of an instrumentation leave the same few behind)."""
    if not attrs:
        return None
    types = tuple(map(type, attrs.values()))
    if len(types) > MAX_JSON_KEY_ITEMS or not _PLAIN.issuperset(types):
        return safe_json(attrs)
    key = (tuple(attrs.items()), types)
    text = _JSON.get(key)
    if text is None:
        text = safe_json(attrs)
        if text is not None:
            if len(_JSON) >= MAX_CACHED_JSON:
                _JSON.clear()
            _JSON[key] = text
    return text
