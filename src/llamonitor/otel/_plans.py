"""The mapping's fast path: spans whose attributes play the same roles share a plan.

What :func:`llamonitor.otel._mapping._row` does with a span's attributes (which
fill a column, which one wins among a column's names, what stays in
``custom_attributes``, the operation type) depends on each attribute's key,
the column it names and whether its value fits, and on the value of the few
attributes that decide the operation type: its *role*
(:func:`llamonitor.otel._wire._role`). A span's roles, in order, pick a
:class:`Plan` made once by the same rules (:func:`_make`); the span's own
values then go where the plan says. A span with anything rare (events,
links, a status, a bad id or time, cut values, duplicate keys, content,
``llm.invocation_parameters``, Logfire's JSON, llamonitor's own keys) goes
down the general path, whose rows this path equals (``tests/test_otel_mapping.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamonitor.otel import _attributes as fill
from llamonitor.otel import _conventions as conv
from llamonitor.otel import _wire
from llamonitor.otel._attributes import COST_SOURCE_USER, MAX_NAME_CHARS, TOKEN_SOURCE_OTEL
from llamonitor.otel._values import MAX_ATTRIBUTES

MAX_PLANS = 4096
"""Plans kept; past it they start again (bounded memory)."""

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_SESSION_KEYS = frozenset(conv.SESSION_ATTRIBUTES)
_KIND_FRAGMENTS = {
    k: '"otel.span_kind": "' + name + '"'
    for k, name in ((2, "server"), (3, "client"), (4, "producer"), (5, "consumer"))
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What a span of these roles becomes (positions index its attributes)."""

    sets: tuple[tuple[str, int], ...]
    """(column, position of the attribute whose fitted value fills it)."""
    consts: tuple[tuple[str, Any], ...]
    """(column, value) the same for every such span (``token_source``...)."""
    total: tuple[int, int] | None
    """``total_tokens`` = input + output: their positions (-1: absent, 0)."""
    cost: tuple[int, int] | None
    """``cost_usd`` = input + output cost: their positions (-1: absent, 0.0)."""
    session: tuple[int, ...]
    """Positions of the session attributes (``fill.session`` picks among them)."""
    custom: tuple[int, ...]
    """Positions of the attributes kept in ``custom_attributes``, in order."""
    operation_type: str


_SLOW_PLAN = Plan((), (), None, None, (), (), "")


def map_spans(
    spans: Any,
    ctx: Any,
    out: Any,
    fixed: dict[str, list[Any]],
    sparse: dict[str, list[Any]],
    total: int,
    limit: int,
    general: Callable[[int, Any], None],
) -> None:
    """Map the spans of one ``ScopeSpans`` of the view into the columns
    (``total``: their length; ``limit``: the latest start time kept): those a
    plan fits here, the others through ``general(index, span)``."""
    decoded = _wire._DECODED.get
    decode = _wire.decode
    plans = _wire.PLANS
    stamps = out.timestamps_us
    event_ids = fixed["event_id"].append
    trace_ids = fixed["trace_id"].append
    span_ids = fixed["span_id"].append
    names = fixed["operation_name"].append
    pids = fixed["process_id"].append
    sessions = fixed["session_id"].append
    op_types = fixed["operation_type"].append
    pid = ctx.pid
    project = ctx.project
    shared = ctx.shared_json
    blake2b = hashlib.blake2b
    resolved: dict[int, tuple[Any, ...]] = {}  # id(plan) -> (plan, its columns' lists)
    custom_col = duration_col = parent_col = project_col = None
    for i, span in enumerate(spans):
        tid: bytes = span.trace_id
        sid: bytes = span.span_id
        start: int = span.start_time_unix_nano
        raws = span.attributes
        if (
            len(tid) != 16 or tid == _ZERO_TRACE or len(sid) != 8 or sid == _ZERO_SPAN
            or not start or start > limit or len(raws) > MAX_ATTRIBUTES
            or span.dropped_attributes_count or len(span.events) or len(span.links)
        ):
            general(i, span)
            continue
        status = span.status
        parent: bytes = span.parent_span_id
        if status.code or status.message or (parent and (len(parent) != 8 or parent == _ZERO_SPAN)):
            general(i, span)
            continue
        try:
            entries: list[Any] = [decoded(raw) or decode(raw) for raw in raws]
            roles = tuple([e[5] for e in entries])
            plan = plans.get(roles)
            if plan is None:
                plan = _make(entries)
                if len(plans) >= MAX_PLANS:
                    plans.clear()
                plans[roles] = plan
            if plan is _SLOW_PLAN:
                general(i, span)
                continue
            k = len(stamps)
            here = resolved.get(id(plan))
            if here is None:
                here = resolved[id(plan)] = _resolve(plan, sparse, total)
            _, sets, consts, total_col, cost_col = here
            for col, p in sets:
                col[k] = entries[p][4][2]
            for col, value in consts:
                col[k] = value
            if total_col is not None:
                a, b = plan.total  # type: ignore[misc]
                total_col[k] = (0 if a < 0 else entries[a][4][2]) + (
                    0 if b < 0 else entries[b][4][2]
                )
            if cost_col is not None:
                a, b = plan.cost  # type: ignore[misc]
                cost_col[k] = (0.0 if a < 0 else entries[a][4][2]) + (
                    0.0 if b < 0 else entries[b][4][2]
                )
            last_tid, trace_hex = ctx.trace
            if tid != last_tid:
                trace_hex = tid.hex()
                ctx.trace = (tid, trace_hex)
            session = None
            custom = plan.custom
            if plan.session:
                named = {entries[p][0]: entries[p][1] for p in plan.session}
                session = fill.session(named)
                if len(named) < len(plan.session):  # the ones naming it leave custom_attributes
                    gone = {p for p in plan.session if entries[p][0] not in named}
                    custom = tuple(p for p in custom if p not in gone)
            parts = [entries[p][6] or _fragment(entries[p]) for p in custom]
            kind = _KIND_FRAGMENTS.get(span.kind)
            if kind is not None:
                parts.append(kind)
            if shared:
                parts.append(shared)
            if parts:
                if custom_col is None:
                    custom_col = _column(sparse, "custom_attributes", total)
                custom_col[k] = "{" + ", ".join(parts) + "}"
            end: int = span.end_time_unix_nano
            if end >= start:
                if duration_col is None:
                    duration_col = _column(sparse, "duration_ms", total)
                duration_col[k] = (end - start) / 1e6
            if parent:
                if parent_col is None:
                    parent_col = _column(sparse, "parent_span_id", total)
                parent_col[k] = parent.hex()
            if project is not None:
                if project_col is None:
                    project_col = _column(sparse, "project_name", total)
                project_col[k] = project
            event_ids(blake2b(tid + sid, digest_size=16).hexdigest())
            trace_ids(trace_hex)
            span_ids(sid.hex())
            names((span.name or "(unnamed)")[:MAX_NAME_CHARS])
            pids(pid)
            sessions(session or trace_hex)
            op_types(plan.operation_type)
            stamps.append(start // 1000)

        except Exception:  # a bug here must not lose the span: the general path takes it
            k = len(stamps)
            for col in sparse.values():
                col[k] = None
            for col in fixed.values():
                del col[k:]
            general(i, span)


def _column(sparse: dict[str, list[Any]], name: str, total: int) -> list[Any]:
    col = sparse.get(name)
    if col is None:
        col = sparse[name] = [None] * total
    return col


def _resolve(plan: Plan, sparse: dict[str, list[Any]], total: int) -> tuple[Any, ...]:
    """The plan with its columns' lists (the plan itself keeps its id taken)."""
    return (
        plan,
        tuple((_column(sparse, c, total), p) for c, p in plan.sets),
        tuple((_column(sparse, c, total), v) for c, v in plan.consts),
        None if plan.total is None else _column(sparse, "total_tokens", total),
        None if plan.cost is None else _column(sparse, "cost_usd", total),
    )


def _fragment(entry: Any) -> str:
    """The JSON of an attribute that names a column but stays an attribute."""
    key, value, _, is_list = entry[:4]
    text = _wire.fragment(key, list(value) if is_list else value)
    if text is None:  # not plain JSON: as safe_json degrades it
        from llamonitor._records import safe_json

        text = (safe_json({key: value}) or "{}")[1:-1]
    return text


def _make(entries: list[Any]) -> Plan:
    """The plan of a span whose attributes are ``entries`` (the rules of
    ``_attributes.columns`` and ``operation_type``, on their roles)."""
    keys = [e[0] for e in entries]
    if len(set(keys)) != len(keys) or any(e[5] == _wire.SLOW for e in entries):
        return _SLOW_PLAN
    ranks: dict[str, tuple[int, int]] = {}
    for p, e in enumerate(entries):
        f = e[4]
        if f is None or f[2] is None:
            continue
        column, rank = f[0], f[1]
        have = ranks.get(column)
        if have is not None and have[0] < rank:
            continue
        ranks[column] = (rank, p)
    sets = {column: p for column, (_, p) in ranks.items()}
    consts: list[tuple[str, Any]] = []
    total = cost = None
    if "input_tokens" in sets or "output_tokens" in sets:
        if "total_tokens" not in sets:
            total = (sets.get("input_tokens", -1), sets.get("output_tokens", -1))
        consts.append(("token_source", TOKEN_SOURCE_OTEL))
    if "cost_usd" not in sets and ("input_cost_usd" in sets or "output_cost_usd" in sets):
        cost = (sets.get("input_cost_usd", -1), sets.get("output_cost_usd", -1))
    if "cost_usd" in sets or cost is not None:
        consts.append(("cost_source", COST_SOURCE_USER))
    row: dict[str, Any] = dict.fromkeys(sets)
    if total is not None:
        row["total_tokens"] = None
    attrs = {e[0]: e[1] for e in entries}
    operation_type = fill.operation_type(attrs, row)
    if "agent_name" in row and "agent_name" not in sets:  # a traceloop agent's name
        consts.append(("agent_name", row["agent_name"]))
    used = set(sets.values())
    session = tuple(p for p, key in enumerate(keys) if key in _SESSION_KEYS)
    custom = tuple(p for p in range(len(entries)) if p not in used)
    return Plan(tuple(sets.items()), tuple(consts), total, cost, session, custom, operation_type)
