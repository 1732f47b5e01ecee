"""Rollups of points (raw -> 60 s -> 300 s -> 3600 s) and of spans: exact sums
and counts, quantiles within the sketch's 1%, built once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from llamonitor import metrics
from llamonitor.metrics import _sketch, read_points, rollup, write_points
from llamonitor.metrics._registry import Registry
from llamonitor.schema.config import StorageConfig

T0 = 1_780_000_000 - 1_780_000_000 % 3600  # an hour boundary (epoch seconds)


def _record_an_hour(storage: StorageConfig, registry: Registry, name: str) -> np.ndarray:
    """A counter, a gauge and a histogram snapshotted every 10 s for one hour."""
    c = metrics.counter(f"{name}_total", labels=["model"], registry=registry)
    g = metrics.gauge(f"{name}_depth", registry=registry)
    h = metrics.histogram(f"{name}_seconds", registry=registry)
    rng = np.random.default_rng(7)
    observed = rng.lognormal(0, 1, 360 * 20)
    batches = []
    for i in range(360):
        c.labels(model="a" if i % 3 else "b").inc(2)
        g.set(i % 50)
        for v in observed[i * 20 : (i + 1) * 20]:
            h.observe(float(v))
        batches.append(registry.collect(now=T0 + 10 * i + 5))
    write_points(storage, pa.concat_tables(batches))
    return observed


def _of(t: pa.Table, name: str) -> pa.Table:
    return t.filter(pc.equal(t.column("name"), name))


def test_rollups_keep_exact_sums_counts_and_extremes(
    any_store: StorageConfig, name: str, registry: Registry
) -> None:
    """Every level holds the same increase, counts, sums, min and max as the raw points."""
    observed = _record_an_hour(any_store, registry, name)
    result = rollup(any_store, now=T0 + 3 * 3600, spans=False)
    assert set(result.written) == {60, 300, 3600} and all(result.written.values())
    for res in (60, 300, 3600):
        t = read_points(any_store, resolution=res, start=datetime.fromtimestamp(T0, timezone.utc))
        counter = _of(t, f"{name}_total")
        assert pc.sum(counter.column("sum")).as_py() == 720  # 360 increments of 2
        gauge = _of(t, f"{name}_depth")
        assert pc.sum(gauge.column("count")).as_py() == 360
        assert pc.sum(gauge.column("sum")).as_py() == sum(i % 50 for i in range(360))
        assert (pc.min(gauge.column("min")).as_py(), pc.max(gauge.column("max")).as_py()) == (0, 49)
        hist = _of(t, f"{name}_seconds")
        assert pc.sum(hist.column("count")).as_py() == observed.size
        assert pc.sum(hist.column("sum")).as_py() == pytest.approx(observed.sum(), rel=1e-12)
        assert pc.min(hist.column("min")).as_py() == observed.min()
        assert pc.max(hist.column("max")).as_py() == observed.max()
        merged = _sketch.merge(hist.column("sketch").to_pylist())
        for q in (0.5, 0.9, 0.99):
            (est,) = _sketch.quantiles(merged, [q])
            rank = np.sort(observed)[int(q * (observed.size - 1))]
            assert abs(est - rank) <= 0.0101 * rank  # DDSketch: 1% relative accuracy


def test_a_second_rollup_adds_nothing(
    parquet: StorageConfig, name: str, registry: Registry
) -> None:
    """Rollup is idempotent: run again, no window is built twice."""
    _record_an_hour(parquet, registry, name)
    first = rollup(parquet, now=T0 + 3 * 3600, spans=False)
    assert first.total > 0
    assert rollup(parquet, now=T0 + 3 * 3600, spans=False).total == 0
    assert _of(read_points(parquet, resolution=3600), f"{name}_total").num_rows == 2


def test_windows_still_filling_are_left_for_later(
    parquet: StorageConfig, name: str, registry: Registry
) -> None:
    """Only windows that ended settle_seconds ago are built; the rest come next run."""
    _record_an_hour(parquet, registry, name)
    early = rollup(parquet, now=T0 + 1800, spans=False)
    t = read_points(parquet, resolution=60)
    assert pc.max(t.column("timestamp")).as_py() < datetime.fromtimestamp(T0 + 1800, timezone.utc)
    later = rollup(parquet, now=T0 + 3 * 3600, spans=False)
    total = pc.sum(_of(read_points(parquet, resolution=60), f"{name}_total").column("sum"))
    assert early.written[60] and later.written[60] and total.as_py() == 720


def _write_spans(directory: Path, rows: list[dict]) -> None:
    from llamonitor.schema._columns import SCHEMA
    from llamonitor.storage.parquet import ParquetBackend

    backend = ParquetBackend(StorageConfig(output_dir=directory))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=SCHEMA)))


def test_spans_roll_up_into_cost_token_error_and_latency_series(tmp_path: Path) -> None:
    """Spans become per-minute and per-hour series by model and operation:
    counts, errors, cost and tokens exact, latency quantiles from the sketch."""
    from _helpers import T0 as SPAN_T0
    from _helpers import span_row

    rows = []
    for i in range(600):  # 10 minutes, one span a second
        model = "gpt-4o" if i % 2 else "claude"
        rows.append(
            span_row(
                i,
                model=model,
                cost_usd=0.01,
                input_tokens=10,
                output_tokens=5,
                total_tokens=15,
                duration_ms=float(i + 1),
                error=True if i % 10 == 0 else None,
            )
        )
    _write_spans(tmp_path, rows)
    storage = StorageConfig(output_dir=tmp_path)
    now = (SPAN_T0 + timedelta(hours=3)).timestamp()
    result = rollup(storage, now=now)
    assert result.spans[60] > 0 and result.spans[3600] > 0
    for res in (60, 3600):
        t = read_points(storage, resolution=res)
        t = t.filter(pc.equal(t.column("source"), "spans"))
        spans_total = _of(t, "llm_spans_total")
        assert pc.sum(spans_total.column("sum")).as_py() == 600
        assert pc.sum(_of(t, "llm_span_errors_total").column("sum")).as_py() == 60
        assert pc.sum(_of(t, "llm_cost_usd_total").column("sum")).as_py() == pytest.approx(6.0)
        assert pc.sum(_of(t, "llm_tokens_total").column("sum")).as_py() == 9000
        labels = set(spans_total.column("labels").to_pylist())
        assert labels == {
            '{"model":"claude","operation":"op"}',
            '{"model":"gpt-4o","operation":"op"}',
        }
        lat = _of(t, "llm_span_duration_ms")
        assert pc.sum(lat.column("count")).as_py() == 600
        (p99,) = _sketch.quantiles(_sketch.merge(lat.column("sketch").to_pylist()), [0.99])
        assert abs(p99 - 594) <= 0.0101 * 594
    assert rollup(storage, now=now).spans == {60: 0, 3600: 0}


def test_stream_aggregator_quantiles_are_the_sketchs() -> None:
    """StreamAggregator's vectorized quantiles equal DDSketch.get_quantile_value's,
    and count/sum/min/max per name and window are exact (NaN skipped)."""
    from llamonitor.metrics import StreamAggregator

    rng = np.random.default_rng(2)
    values = np.concatenate([rng.lognormal(0, 2, 3000), -rng.lognormal(0, 1, 500), np.zeros(50)])
    rng.shuffle(values)
    names = np.array(["a", "b", "c"])[rng.integers(0, 3, values.size)]
    times = 1_780_000_000 + rng.uniform(0, 300, values.size)
    agg = StreamAggregator(window_size=60, quantiles=(0.01, 0.5, 0.9, 0.99))
    agg.add(names, values, times)
    agg.add_metric("a", float("nan"), 1_780_000_010)
    got = agg.aggregates().to_pylist()
    assert sum(r["count"] for r in got) == values.size
    for r in got:
        mask = (names == r["name"]) & (np.floor(times / 60) * 60 == r["window"])
        part = values[mask]
        assert (r["count"], r["min"], r["max"]) == (part.size, part.min(), part.max())
        assert r["sum"] == pytest.approx(part.sum())
        s = _sketch.new_sketch()
        for v in part:
            s.add(float(v))
        for q in (0.01, 0.5, 0.9, 0.99):
            assert r[f"p{q * 100:g}"] == pytest.approx(s.get_quantile_value(q), rel=1e-9)
