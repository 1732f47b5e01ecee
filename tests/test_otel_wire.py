"""llamonitor.otel._wire: the byte view of a request reads span attributes as the
official classes do (same values, same caps and counts), twice in a row too
(the second time from the decoded-attribute cache)."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llamonitor.otel._values import MAX_VALUE_CHARS, Budget, attributes
from llamonitor.otel._wire import span_attributes, view


def _request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat", start_time_unix_nano=5
    )
    finish = AnyValue()
    finish.array_value.values.add(string_value="stop")
    nested = AnyValue()
    nested.kvlist_value.values.add(key="a", value=AnyValue(int_value=1))
    span.attributes.extend([
        KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
        KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=12)),
        KeyValue(key="gen_ai.request.temperature", value=AnyValue(double_value=-0.0)),
        KeyValue(key="flag", value=AnyValue(bool_value=True)),
        KeyValue(key="gen_ai.response.finish_reasons", value=finish),
        KeyValue(key="nested", value=nested),
        KeyValue(key="long", value=AnyValue(string_value="x" * (MAX_VALUE_CHARS + 5))),
        KeyValue(key="k" * 300, value=AnyValue(string_value="v")),
        KeyValue(key="flag", value=AnyValue(int_value=1)),  # a duplicate key: the last wins
    ])
    return req


def test_view_attributes_equal_the_official_reading_each_time() -> None:
    """Two readings through the view (a cache miss, then hits) give the dict and the
    counts of cut values that the official classes give; the columns' fills name
    the attributes that fill a column."""
    req = _request()
    official_budget = Budget()
    expected = attributes(req.resource_spans[0].scope_spans[0].spans[0].attributes,
                          official_budget)
    for _ in range(2):
        span = view(req.SerializeToString()).resource_spans[0].scope_spans[0].spans[0]
        assert (span.name, span.trace_id, span.start_time_unix_nano) == ("chat", b"\x01" * 16, 5)
        budget = Budget()
        got, fills = span_attributes(span.attributes, budget)
        assert got == expected and list(got) == list(expected)
        assert str(got["gen_ai.request.temperature"]) == "-0.0"
        assert got["flag"] == 1 and got["flag"] is not True
        assert (budget.truncated, budget.dropped) == (official_budget.truncated, 0)
        assert fills["gen_ai.request.model"][:3] == ("model", 1, "gpt-4o")
        assert fills["gen_ai.response.finish_reasons"][2] == "stop"
        assert "nested" not in fills
        got["gen_ai.response.finish_reasons"].append("changed")  # a copy: the cache keeps its own


def test_the_attribute_cap_counts_what_is_not_read() -> None:
    """Past the budget, attributes are counted as dropped, not decoded."""
    req = _request()
    span = view(req.SerializeToString()).resource_spans[0].scope_spans[0].spans[0]
    budget = Budget(left=3)
    got, _ = span_attributes(span.attributes, budget)
    assert list(got) == ["gen_ai.request.model", "gen_ai.usage.input_tokens",
                         "gen_ai.request.temperature"]
    assert (budget.left, budget.dropped) == (0, 6)
