"""The instruments on the caller's thread: values, labels, the cardinality cap,
bad input, threads, and their snapshot as points."""

from __future__ import annotations

import logging
import math
import threading

import pyarrow.compute as pc
import pytest

from llamonitor import metrics
from llamonitor.metrics._registry import NAN_METRIC, OVERFLOW_METRIC, Registry


def _rows(registry: Registry, now: float = 1_800_000_000.0) -> list[dict]:
    return registry.collect(now=now).to_pylist()


def test_counter_gauge_values_and_labels(registry: Registry) -> None:
    """inc/set/dec change what the snapshot reports, per label combination."""
    c = metrics.counter("evals_total", "evaluations", labels=["model"], registry=registry)
    c.labels(model="a").inc()
    c.labels("a").inc(2.5)
    c.labels(model="b").inc()
    g = metrics.gauge("queue_depth", registry=registry)
    g.set(7)
    g.inc(3)
    g.dec()
    assert c.labels(model="a").get() == 3.5
    assert g.get() == 9
    got = {(r["name"], r["labels"]): r["value"] for r in _rows(registry)}
    assert got[("evals_total", '{"model":"a"}')] == 3.5
    assert got[("evals_total", '{"model":"b"}')] == 1.0
    assert got[("queue_depth", "{}")] == 9.0


def test_a_counter_series_starts_with_a_zero_point(registry: Registry) -> None:
    """A counter's first snapshot is preceded by 0 at its creation, so increases are exact."""
    c = metrics.counter("a_total", registry=registry)
    c.inc(4)
    first = [r for r in _rows(registry) if r["name"] == "a_total"]
    assert [r["value"] for r in first] == [0.0, 4.0]
    again = [r for r in _rows(registry) if r["name"] == "a_total"]
    assert [r["value"] for r in again] == [4.0]


def test_negative_or_nan_increments_are_refused_and_change_nothing(registry: Registry) -> None:
    """inc(-1) and inc(nan) raise ValueError (the caller's bug); the total stays."""
    c = metrics.counter("b_total", labels=["k"], registry=registry)
    c.labels(k="x").inc(2)
    with pytest.raises(ValueError, match="only go up"):
        c.labels(k="x").inc(-1)
    with pytest.raises(ValueError):
        c.labels(k="x").inc(math.nan)
    assert c.labels(k="x").get() == 2


def test_wrong_labels_and_names_are_value_errors(registry: Registry) -> None:
    """Label values must match the declared names; names must be Prometheus-style."""
    c = metrics.counter("c_total", labels=["model"], registry=registry)
    with pytest.raises(ValueError):
        c.labels(provider="x")
    with pytest.raises(ValueError):
        c.labels("a", "b")
    with pytest.raises(ValueError):
        c.inc()  # has labels: needs .labels()
    with pytest.raises(ValueError):
        metrics.counter("bad name", registry=registry)
    with pytest.raises(ValueError):
        metrics.counter("d_total", labels=["le"], registry=registry)
    with pytest.raises(ValueError, match="exists"):
        metrics.gauge("c_total", registry=registry)
    assert metrics.counter("c_total", labels=["model"], registry=registry) is c


def test_the_cardinality_cap_routes_new_series_to_other_warns_once_and_counts(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_series, new label values go to 'other', with one warning and a count."""
    c = metrics.counter("req_total", labels=["user"], max_series=3, registry=registry)
    with caplog.at_level(logging.WARNING, "llamonitor.metrics"):
        for i in range(10):
            c.labels(user=f"u{i}").inc()
    warnings = [r for r in caplog.records if "max_series" in r.getMessage()]
    assert len(warnings) == 1
    assert c.overflowed == 7
    rows = _rows(registry)
    series = {r["labels"]: r["value"] for r in rows if r["name"] == "req_total" and r["value"]}
    assert series == {
        '{"user":"u0"}': 1,
        '{"user":"u1"}': 1,
        '{"user":"u2"}': 1,
        '{"user":"other"}': 7,
    }
    overflow = [r for r in rows if r["name"] == OVERFLOW_METRIC]
    assert overflow[0]["labels"] == '{"metric":"req_total"}' and overflow[0]["value"] == 7


def test_histogram_aggregates_are_exact_and_nan_is_dropped_and_counted(registry: Registry) -> None:
    """count/sum/min/max of an interval are exact; NaN is left out and counted."""
    h = metrics.histogram("lat_seconds", buckets=[0.1, 1.0], registry=registry)
    for v in (0.05, 0.5, 2.0, math.nan, 0.1):
        h.observe(v)
    (row,) = [r for r in _rows(registry) if r["name"] == "lat_seconds"]
    assert (row["count"], row["sum"], row["min"], row["max"]) == (4, 2.65, 0.05, 2.0)
    assert row["sketch"]
    child = h.labels() if h.label_names else h._unlabelled()
    assert child.bucket_counts == [2, 1, 1]  # <=0.1, <=1, +Inf (not cumulative)
    (nan,) = [r for r in _rows(registry) if r["name"] == NAN_METRIC]
    assert nan["value"] == 1
    (empty,) = [r for r in _rows(registry) if r["name"] == "lat_seconds"]
    assert (empty["count"], empty["sketch"]) == (0, None)  # the next interval saw nothing


def test_increments_from_many_threads_are_all_counted(registry: Registry) -> None:
    """8 threads x 20,000 increments and observations lose none."""
    c = metrics.counter("t_total", labels=["k"], registry=registry)
    s = metrics.summary("t_seconds", registry=registry)

    def work() -> None:
        child = c.labels(k="x")
        for _ in range(20_000):
            child.inc()
            s.observe(1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.labels(k="x").get() == 160_000
    table = registry.collect(now=1_800_000_000.0)
    summ = table.filter(pc.equal(table.column("name"), "t_seconds"))
    assert summ.column("count")[0].as_py() == 160_000


def test_a_histogram_buffer_past_its_bound_is_folded_by_the_caller(registry: Registry) -> None:
    """A worker far behind never lets a buffer grow past MAX_BUFFER; nothing is lost."""
    from llamonitor.metrics import _children as _instruments

    h = metrics.histogram("big_seconds", registry=registry)
    n = _instruments.MAX_BUFFER * 2 + 5
    for _ in range(n):
        h.observe(0.2)
    child = h._unlabelled()
    assert len(child._buf) < _instruments.MAX_BUFFER
    (row,) = [r for r in _rows(registry) if r["name"] == "big_seconds"]
    assert row["count"] == n


def test_timer_observes_seconds(registry: Registry) -> None:
    """histogram.time() as a context manager and a decorator records one value each."""
    h = metrics.histogram("op_seconds", registry=registry)
    with h.time():
        pass

    @h.time()
    def f() -> int:
        return 3

    assert f() == 3
    (row,) = [r for r in _rows(registry) if r["name"] == "op_seconds"]
    assert row["count"] == 2 and 0 <= row["min"] <= row["max"] < 5


def test_a_clock_jumping_back_keeps_points_in_order(registry: Registry) -> None:
    """A snapshot taken after the wall clock went back is stamped after the last one,
    so a counter never looks reset (its increase is not counted twice)."""
    from llamonitor.metrics import window_aggregates

    c = metrics.counter("jump_total", registry=registry)
    c.inc(5)
    first = registry.collect(now=1_800_000_100.0)
    c.inc(1)
    back = registry.collect(now=1_800_000_000.0)  # 100 s earlier
    import pyarrow as pa

    stamps = [r["timestamp"] for r in back.to_pylist()]
    assert all(s > max(r["timestamp"] for r in first.to_pylist()) for s in stamps)
    windows = window_aggregates(pa.concat_tables([first, back]), 3600)
    assert sum(windows.column("sum").to_pylist()) == 6.0



def test_an_observation_that_is_not_a_number_fails_at_the_call_and_loses_nothing(
    registry: Registry,
) -> None:
    """histogram.observe("abc") raises at once (the caller's bug, as in
    prometheus_client); the valid observations around it are all kept."""
    h = metrics.histogram("typed_seconds", buckets=[1.0], registry=registry)
    h.observe(0.5)
    with pytest.raises((TypeError, ValueError)):
        h.observe("abc")  # type: ignore[arg-type]
    h.observe(2.0)
    (row,) = [r for r in _rows(registry) if r["name"] == "typed_seconds"]
    assert (row["count"], row["sum"]) == (2, 2.5)
