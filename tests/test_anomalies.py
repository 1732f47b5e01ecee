"""The anomaly detector on constructed series (each kind found where it was put,
clean series quiet, NaN, empty and short histories), the incremental watcher,
and ``llamonitor anomalies`` over a Parquet store."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from _helpers import span_row
from llamonitor import SCHEMA, StorageConfig
from llamonitor.analysis.anomalies import (
    Anomaly,
    AnomalyWatcher,
    detect_anomalies,
    detect_in_series,
)
from llamonitor.cli._app import cli
from llamonitor.storage import _parquet_read
from llamonitor.storage.parquet import ParquetBackend

N = 24 * 14
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def noise(seed: int = 1, seasonal: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100 + rng.normal(0, 5, N)
    if seasonal:
        x += 40 * np.sin(np.arange(N) * 2 * np.pi / 24)
    return x


@pytest.mark.parametrize("seasonal", [False, True])
def test_a_clean_series_is_quiet(seasonal: bool) -> None:
    """No anomaly on noise alone, with or without a daily profile."""
    for seed in range(5):
        assert detect_in_series(noise(seed, seasonal)) == []


@pytest.mark.parametrize("seasonal", [False, True])
def test_a_spike_and_a_dip_are_found_at_their_bucket(seasonal: bool) -> None:
    """A +12 sigma bucket is a spike, a -12 sigma one a dip, with expected and observed."""
    x = noise(2, seasonal)
    x[250] += 60
    x[280] -= 60
    found = detect_in_series(x)
    assert [(i, k) for i, *_, k in found] == [(250, "spike"), (280, "dip")]
    _, expected, observed, deviation, _ = found[0]
    assert observed == x[250] and abs(expected - (x[250] - 60)) < 15 and deviation > 5


def test_a_level_shift_is_found_once_and_the_baseline_moves_on() -> None:
    """A lasting +30 (6 sigma) step is one level shift near its start; nothing after."""
    x = noise(3)
    x[200:] += 30
    found = detect_in_series(x)
    shifts = [f for f in found if f[4] == "level_shift"]
    assert len(shifts) == 1 and 200 <= shifts[0][0] <= 206
    assert all(f[0] <= 206 for f in found)


def test_a_slow_drift_is_found_while_it_drifts() -> None:
    """A ramp of +40 over 60 buckets is reported as it happens, not before it."""
    x = noise(4)
    x[200:] += np.minimum(np.arange(N - 200) * 40 / 60, 40)
    found = detect_in_series(x)
    assert found and all(200 <= f[0] <= 290 for f in found)
    assert any(f[4] == "drift" for f in found)


def test_nan_empty_and_short_histories() -> None:
    """Empty and short series report nothing; NaN buckets are skipped, not judged."""
    assert detect_in_series([]) == []
    assert detect_in_series([1.0, 50.0, 1.0]) == []
    x = noise(5)
    x[100:110] = math.nan
    x[150] = math.inf
    assert detect_in_series(x) == []
    with pytest.raises(ValueError, match="timestamps"):
        detect_in_series([1.0, 2.0], timestamps=[T0])


def test_describe_gives_the_figures() -> None:
    a = Anomaly("latency_p95", (("model", "gpt-4o"),), T0, 3600, 1210.0, 3420.0, 6.3, "spike")
    assert a.describe() == (
        "spike: p95 latency of model=gpt-4o at 2026-11-02 00:00 UTC (1h): "
        "3,420 ms vs 1,210 ms expected, +6.3 sigma"
    )
    assert a.to_dict()["group"] == {"model": "gpt-4o"}


def _store(tmp_path, hours: int = 24 * 10, slow_from: int | None = None):  # type: ignore[no-untyped-def]
    """Ten spans an hour per model for ``hours``; gpt-4o 10x slower from ``slow_from``."""
    rng = np.random.default_rng(0)
    rows = []
    for h in range(hours):
        for m in ("gpt-4o", "mini"):
            for k in range(10):
                slow = slow_from is not None and h >= slow_from and m == "gpt-4o"
                rows.append(span_row(
                    len(rows), timestamp=T0 + timedelta(hours=h, minutes=k * 5),
                    duration_ms=float(rng.lognormal(6, 0.1)) * (10 if slow else 1), model=m,
                    cost_usd=0.01, total_tokens=100,
                ))
    backend = ParquetBackend(StorageConfig(output_dir=tmp_path))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=SCHEMA)))
    return tmp_path


def test_detect_anomalies_over_a_parquet_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A p95 10x up for one model in the last day is one level shift of that model,
    from the bucket it began (the spikes it explains are merged into it)."""
    root = _store(tmp_path, slow_from=24 * 9 + 5)
    now = T0 + timedelta(days=10)
    found = detect_anomalies(str(root), since=T0 + timedelta(days=8), now=now)
    assert found
    assert {(a.signal, a.group) for a in found} == {("latency_p95", (("model", "gpt-4o"),))}
    assert [a.kind for a in found] == ["level_shift"]
    assert found[0].onset == T0 + timedelta(hours=24 * 9 + 5)
    assert found[0].observed > 5 * found[0].expected


def test_the_watcher_reads_only_new_buckets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After its warm-up, a poll judges the completed buckets since the last one, once."""
    root = _store(tmp_path, slow_from=24 * 9 + 5)
    with _parquet_read.query(root) as q:
        w = AnomalyWatcher(q)
        assert w.poll(T0 + timedelta(hours=24 * 9 + 5)) == []
        assert w.watermark == T0 + timedelta(hours=24 * 9 + 5)
        found = w.poll(T0 + timedelta(hours=24 * 9 + 6, minutes=30))
        assert [(a.signal, a.kind) for a in found] == [("latency_p95", "spike")]
        assert w.poll(T0 + timedelta(hours=24 * 9 + 6, minutes=50)) == []  # same bucket


def _late_spans(root, hour: int, n: int) -> None:  # type: ignore[no-untyped-def]
    """``n`` more spans of gpt-4o in the bucket of ``hour``, written now (late)."""
    rows = [span_row(10_000_000 + i, timestamp=T0 + timedelta(hours=hour, minutes=i % 60),
                     model="gpt-4o", duration_ms=400.0, event_id=f"late{hour}-{i}")
            for i in range(n)]
    backend = ParquetBackend(StorageConfig(output_dir=root))
    asyncio.run(backend.write_table(pa.Table.from_pylist(rows, schema=SCHEMA)))


@pytest.mark.parametrize("late_seconds", [0.0, 3600.0])
def test_the_watcher_judges_again_a_bucket_late_spans_reach(  # type: ignore[no-untyped-def]
        tmp_path, late_seconds: float) -> None:
    """Spans written into a bucket after it was judged: a watcher with late_seconds
    covering them reports the volume spike they make, once; one without never does."""
    hours = 24 * 9
    root = _store(tmp_path, hours=hours + 2)
    last = hours  # the bucket judged first, then reached by late spans
    with _parquet_read.query(root) as q:
        w = AnomalyWatcher(q, signals=["volume"], late_seconds=late_seconds)
        assert w.poll(T0 + timedelta(hours=last + 1, minutes=5)) == []
        _late_spans(root, last, 200)  # 10 -> 210 spans: far out
        found = w.poll(T0 + timedelta(hours=last + 1, minutes=40))  # same bucket in progress
        again = w.poll(T0 + timedelta(hours=last + 2, minutes=30))  # past late: final
    spikes = [(a.bucket_start, a.kind) for a in found + again if a.group == (("model", "gpt-4o"),)]
    if late_seconds:
        assert spikes == [(T0 + timedelta(hours=last), "spike")]
        assert found and not again  # reported once
    else:
        assert spikes == []


def test_cli_lists_anomalies(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``llamonitor anomalies`` prints one line per anomaly, and JSON with --json."""
    root = _store(tmp_path, slow_from=24 * 9 + 5)
    monkeypatch.setattr("llamonitor.cli._options.now", lambda: T0 + timedelta(days=10))
    monkeypatch.setattr("llamonitor.cli._anomalies.now", lambda: T0 + timedelta(days=10))
    run = CliRunner().invoke(cli, ["anomalies", "--dir", str(root), "--since", "2d"])
    assert run.exit_code == 0, run.output
    assert "p95 latency of model=gpt-4o" in run.output
    run = CliRunner().invoke(cli, ["anomalies", "--dir", str(root), "--since", "2d", "--json"])
    body = json.loads(run.output)
    assert body[0]["signal"] == "latency_p95" and body[0]["group"] == {"model": "gpt-4o"}
    run = CliRunner().invoke(cli, ["anomalies", "--dir", str(root), "--since", "2d",
                                   "--by", "none", "--signal", "volume"])
    assert run.exit_code == 0 and "No anomaly" in run.output
