"""The worker's conversion of a batch, a column at a time: every row gets exactly
the values the per-record definitions give (ids as hex, times, each decorator's
facts, texts of every kind), and an invalid record costs only itself."""

from __future__ import annotations

from typing import Any

import llamonitor
from llamonitor import InMemoryBackend, MonitorConfig, StorageConfig, _handoff, monitor_llm
from llamonitor._records import TextMeasure
from llamonitor.transport._convert import records_to_table, warm_up


@monitor_llm(operation_name="a", measure_text=True, custom_attributes={"model": "gpt-4o"})
def a(text: str) -> str:
    with llamonitor.SpanContext(operation_name="inner"):
        pass
    return text


@monitor_llm(operation_name="b", operation_type="tool", measure_text=["char_count"])
def b(text: str) -> str:
    return text


def _queued(calls: int) -> list[tuple[Any, ...]]:
    """Records as the hot path queues them (the worker parked)."""
    llamonitor.initialize_monitoring(
        MonitorConfig(
            storage=StorageConfig(
                backend=InMemoryBackend(), batch_size=10**9, flush_interval_seconds=3600
            )
        )
    )
    for i in range(calls):
        (a if i % 3 else b)("word " * (i % 7) + "\u3000é" * (i % 2))
    pipeline = _handoff.ACTIVE
    assert pipeline is not None
    records = list(pipeline._q)  # type: ignore[attr-defined]
    pipeline._q.clear()  # type: ignore[attr-defined]
    pipeline._bytes = 0  # type: ignore[attr-defined]
    return records


def test_each_row_has_the_values_of_its_own_record() -> None:
    """Ids are the hex of the span's ints, each decorator's facts land on its rows only."""
    records = _queued(300)
    table, invalid = records_to_table(records, 4242)
    assert invalid == 0 and table is not None
    rows = table.to_pylist()
    assert len({r["event_id"] for r in rows}) == len(rows) == len(records)
    for (spec, span, t0, t1, _err, text, _extra), row in zip(records, rows, strict=True):
        assert row["span_id"] == f"{span._sid:016x}"
        assert row["parent_span_id"] == (None if span._parent is None else f"{span._parent:016x}")
        assert (row["session_id"], row["trace_id"]) == (span.session_id, span.trace_id)
        assert row["operation_name"] == spec.operation_name
        assert row["duration_ms"] == (t1 - t0) / 1e6
        assert row["process_id"] == 4242
        assert len(row["event_id"]) == 32
        if spec.operation_name == "a":
            assert row["model"] == "gpt-4o"
            assert row["text_word_count"] == len(text.split())
            assert row["text_byte_size"] == len(text.encode())
        elif spec.operation_name == "b":
            assert row["model"] is None and row["operation_type"] == "tool"
            assert row["text_char_count"] == len(text) and row["text_word_count"] is None
        else:  # the inner block: no text
            assert row["text_char_count"] is None


def test_texts_measured_on_the_hot_path_and_absent_ones_mix_with_strings() -> None:
    """A batch with a str, a TextMeasure (a long text) and no text: each row its own."""
    (rec,) = _queued(1)
    spec, span, t0, t1, err, _text, extra = rec
    batch = [
        (spec, span, t0, t1, err, "a b\nc", extra),
        (spec, span, t0, t1, err, TextMeasure(10, 2, 12, 3), extra),
        (spec, span, t0, t1, err, None, extra),
    ]
    table, invalid = records_to_table(batch, 1)
    assert invalid == 0 and table is not None
    got = [
        (r["text_char_count"], r["text_word_count"], r["text_byte_size"], r["text_line_count"])
        for r in table.to_pylist()
    ]
    # b's spec keeps only char_count
    keep = spec.text_metrics
    expected = [(5, 3, 5, 2), (10, 2, 12, 3), (None, None, None, None)]
    if keep is not None:
        expected = [
            tuple(v if k else None for v, k in zip(e, keep, strict=True)) for e in expected
        ]
    assert got == expected


def test_an_invalid_record_is_dropped_alone(internal_errors: list[Any]) -> None:
    """A record whose span id is not an int: that one is invalid, the rest converted."""
    records = _queued(10)
    spec, _span, t0, t1, err, text, extra = records[0]

    class Broken:
        session_id = "s"
        trace_id = "t"
        _sid = "not an int"
        _parent = None
        _attrs = None

    good = len(records)
    records.insert(3, (spec, Broken(), t0, t1, err, text, extra))
    table, invalid = records_to_table(records, 1)
    assert invalid == 1
    assert table is not None and table.num_rows == good
    assert [kind for kind, _ in internal_errors] == ["invalid_event"]
    internal_errors.clear()


def test_warm_up_converts_without_error() -> None:
    """The start-up conversion (lazy imports before the worker exists) works alone."""
    warm_up()
