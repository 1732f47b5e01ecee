"""llamonitor.otel._plans: the mapping's fast path (one plan per span's attribute
roles, simple attributes decoded by hand) gives exactly the rows, the table and
the counts that the general path gives, for spans of every convention, cold and
warm caches, mixed with the spans only the general path takes."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llamonitor.otel import _conventions as conv
from llamonitor.otel import _mapping, _plans, _wire, rows_from_request
from llamonitor.otel._values import Budget, attributes

NOW = 1_700_000_500_000_000_000
_KEYS = [name for names in conv.COLUMN_ATTRIBUTES.values() for name in names] + [
    *conv.SESSION_ATTRIBUTES, "openinference.span.kind", "gen_ai.operation.name",
    "traceloop.span.kind", "traceloop.entity.name", "llm.request.type", "error.type",
    "server.address", "server.port", "x", "ü.clé", "llamonitor.model", "otel.span_kind",
    "llm.invocation_parameters", "k" * 300,
]
_KIND_KEYS = ("gen_ai.operation.name", "openinference.span.kind", "traceloop.span.kind")
_KINDS = ["chat", "LLM", "agent", "tool", "embeddings", "workflow", "CHAIN", "completion", "odd"]


def _value(rng: random.Random, depth: int = 0) -> AnyValue:
    v = AnyValue()
    c = rng.randrange(12)
    if c < 4:
        v.string_value = rng.choice(["gpt-4o-mini", "openai", "stop", "", "é→ü", "x" * 130, "7"])
    elif c < 7:
        v.int_value = rng.choice([0, 1, -5, 300, 2**40, -(2**63), 2**63 - 1, rng.randrange(10**6)])
    elif c == 7:
        v.double_value = rng.choice([0.0, -0.0, 0.7, 1e300, math.inf, math.nan, 3.0])
    elif c == 8:
        v.bool_value = rng.random() < 0.5
    elif c == 9 and depth < 5:
        v.array_value.values.extend(_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    elif c == 10 and depth < 5:
        v.kvlist_value.values.extend(
            KeyValue(key=f"k{i}", value=_value(rng, depth + 1)) for i in range(rng.randrange(3))
        )
    elif c == 11:
        v.bytes_value = b"\x00\x01"
    return v


def _requests(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(12):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        if rng.random() < 0.8:
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="app"))
        ss = rs.scope_spans.add()
        ss.scope.name = "scope"
        trace = rng.randbytes(16)
        for _ in range(rng.randrange(1, 60)):
            if rng.random() < 0.3:
                trace = rng.randbytes(16)
            start = NOW - rng.randrange(10**12)
            span = ss.spans.add(
                trace_id=trace, span_id=rng.randbytes(8), name=rng.choice(["chat", ""]),
                kind=rng.randrange(6), start_time_unix_nano=start,
                end_time_unix_nano=start + rng.choice([0, 5_000_000]),
                parent_span_id=rng.choice([b"", rng.randbytes(8), bytes(8)]),
            )
            for _ in range(rng.randrange(0, 12)):
                key = rng.choice(_KEYS[:60] if rng.random() < 0.7 else _KEYS)
                if key in _KIND_KEYS:
                    span.attributes.add(key=key, value=AnyValue(string_value=rng.choice(_KINDS)))
                else:
                    span.attributes.add(key=key, value=_value(rng))
            if rng.random() < 0.05:
                span.status.code = 2  # type: ignore[assignment]  # STATUS_CODE_ERROR
            if rng.random() < 0.03:
                span.events.add(name="exception", time_unix_nano=5)
        out.append(req.SerializeToString())
    return out


def _mapped(bodies: list[bytes]) -> list[Any]:
    out = []
    for body in bodies:
        m = rows_from_request(ExportTraceServiceRequest.FromString(body), now_ns=NOW, wire=body)
        try:
            table: Any = m.table().to_pylist()
        except (OverflowError, ValueError) as exc:  # the receiver then queues the rows
            table = type(exc).__name__
        out.append((m.rows, m.rejected, m.errors, m.reasons, m.dropped_attributes,
                    m.truncated_values, table))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _clear() -> None:
    for cache in (_wire._DECODED, _wire._KEYS, _wire.PLANS, _mapping._JSON):
        cache.clear()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_rows_equal_the_general_path(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _requests(seed)
    _clear()
    fast = _mapped(bodies) + _mapped(bodies)  # cold, then warm caches
    used = [p for p in _wire.PLANS.values() if p is not _plans._SLOW_PLAN]
    assert used, "no span took the fast path: the test would prove nothing"

    def general_only(spans: Any, *args: Any) -> None:
        for i, span in enumerate(spans):
            args[-1](i, span)

    monkeypatch.setattr(_mapping, "map_spans", general_only)
    _clear()
    general = _mapped(bodies) + _mapped(bodies)
    assert len(fast) == len(general)
    for i, (a, b) in enumerate(zip(fast, general, strict=True)):
        assert _same(a, b), f"request {i % len(bodies)} differs"


def test_simple_attributes_decode_as_the_official_classes_do() -> None:
    """The hand decoder reads what ``KeyValue`` reads, and leaves to it what it cannot."""
    values = [
        AnyValue(string_value="é→ü"), AnyValue(string_value=""), AnyValue(int_value=-1),
        AnyValue(int_value=2**63 - 1), AnyValue(int_value=-(2**63)), AnyValue(int_value=0),
        AnyValue(double_value=-0.0), AnyValue(double_value=math.nan), AnyValue(bool_value=True),
        AnyValue(bool_value=False), AnyValue(string_value="x" * 200),
    ]
    for v in values:
        raw = KeyValue(key="a.key", value=v).SerializeToString()
        got = _wire._simple(raw)
        if v.string_value == "x" * 200:
            assert got is None  # past one-byte lengths: the official class reads it
            continue
        assert got is not None
        _wire._DECODED.clear()
        entry = _wire.decode(raw)
        want = attributes([KeyValue.FromString(raw)], Budget())
        assert _same({entry[0]: entry[1]}, want)
        assert _same(dict([got]), want)
    assert _wire._simple(b"\x0a\x02\xff\xfe\x12\x02\x0a\x00") is None  # not UTF-8


class _Broken(dict[int, str]):
    def get(self, *_: Any) -> Any:
        raise RuntimeError("a bug in the fast path")


def test_a_bug_in_the_fast_path_loses_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """A span the fast path fails on midway (some of its columns written) is
    mapped by the general path: the same rows as without the fast path."""
    bodies = _requests(4)

    def general_only(spans: Any, *args: Any) -> None:
        for i, span in enumerate(spans):
            args[-1](i, span)

    with monkeypatch.context() as m:
        m.setattr(_mapping, "map_spans", general_only)
        _clear()
        want = _mapped(bodies)
    monkeypatch.setattr(_plans, "_KIND_FRAGMENTS", _Broken())
    _clear()
    got = _mapped(bodies)
    assert any(p is not _plans._SLOW_PLAN for p in _wire.PLANS.values())
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert _same(a, b), f"request {i} differs"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tiny_caches_emptied_mid_span_map_as_the_general_path(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches so small they are emptied in the middle of spans (as a long-running
    receiver fed ever new keys empties them): every span still maps as the general
    path maps it."""
    bodies = _requests(seed)
    general_bodies = list(bodies)

    def general_only(spans: Any, *args: Any) -> None:
        for i, span in enumerate(spans):
            args[-1](i, span)

    with monkeypatch.context() as m:
        m.setattr(_mapping, "map_spans", general_only)
        _clear()
        general = _mapped(general_bodies) + _mapped(general_bodies)
    monkeypatch.setattr(_wire, "MAX_CACHED", 4)
    _clear()
    fast = _mapped(bodies) + _mapped(bodies)
    for i, (a, b) in enumerate(zip(fast, general, strict=True)):
        assert _same(a, b), f"request {i % len(bodies)} differs"


def test_a_reset_between_spans_never_gives_a_span_another_s_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reviewer's case: roles handed out again after an emptying used to let a
    span take the plan of a span whose roles straddled it (output tokens stored as
    input tokens)."""
    monkeypatch.setattr(_wire, "MAX_CACHED", 4)
    _clear()
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    layouts: list[list[tuple[str, Any]]] = [
        [("k1", "a"), ("k2", "b"), ("gen_ai.usage.input_tokens", 5)],
        [("gen_ai.usage.input_tokens", 5), ("x", "c")],
        [("z", "d")],
        [("gen_ai.usage.output_tokens", 9), ("x", "c")],
    ]
    for n, layout in enumerate(layouts):
        s = spans.add(trace_id=bytes([1] * 16), span_id=bytes([n + 1] * 8), name="chat m",
                      start_time_unix_nano=NOW - 10**9, end_time_unix_nano=NOW)
        for key, value in layout:
            v = AnyValue(int_value=value) if isinstance(value, int) else None
            s.attributes.add(key=key, value=v or AnyValue(string_value=value))
    body = req.SerializeToString()
    last = rows_from_request(ExportTraceServiceRequest.FromString(body), now_ns=NOW, wire=body)
    row = last.table().to_pylist()[3]
    assert (row["input_tokens"], row["output_tokens"]) == (None, 9)
