"""The anomaly signals of Parquet, SQLite and PostgreSQL stores agree with numpy
over the same rows; ``GET /api/anomalies`` lists what ``detect_anomalies`` finds
and refuses bad parameters."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from _helpers import span_row
from llamonitor.analysis._anomaly_signals import bucket_of, bucket_rows

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def rows() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(1500):
        t = T0 + timedelta(seconds=float(rng.uniform(0, 6 * 3600)))
        model = [None, "gpt-4o", "mini"][i % 3]
        out.append(span_row(
            i, timestamp=t, duration_ms=float(rng.lognormal(5, 1)), model=model,
            error=True if rng.random() < 0.1 else None,
            cost_usd=None if i % 7 == 0 else float(rng.uniform(0, 0.01)),
            total_tokens=int(rng.integers(1, 500)) if i % 5 else None,
        ))
    return out


ROWS = rows()


def test_signals_agree_with_numpy(any_store: Any) -> None:
    """Per hour and model: volume, errors, cost, tokens and the exact p95."""
    store = any_store.write(ROWS).open()
    got = bucket_rows(store, first_bucket=bucket_of(T0, 3600),
                      end_bucket=bucket_of(T0, 3600) + 6, bucket_seconds=3600)
    want: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ROWS:
        want[(bucket_of(r["timestamp"], 3600), r["model"] or "")].append(r)
    assert {(g.bucket, g.group[0][1]) for g in got} == set(want)
    for g in got:
        mine = want[(g.bucket, g.group[0][1])]
        assert g.volume == len(mine)
        assert g.errors == sum(1 for r in mine if r["error"])
        costs = [r["cost_usd"] for r in mine if r["cost_usd"] is not None]
        assert g.cost == pytest.approx(sum(costs))
        assert g.tokens == sum(r["total_tokens"] for r in mine if r["total_tokens"])
        assert g.latency_p95 == pytest.approx(
            float(np.percentile([r["duration_ms"] for r in mine], 95)), rel=1e-9
        )


def test_api_lists_anomalies(write_store: Any, client_for: Any) -> None:
    """A burst of errors for one model in the last hour is answered with its figures."""
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=3)
    rng = np.random.default_rng(1)
    made = []
    for h in range(72):
        for k in range(20):
            t = start + timedelta(hours=h, minutes=k * 3)
            burst = h == 70
            made.append(span_row(
                len(made), timestamp=t, duration_ms=float(rng.lognormal(5, 0.1)),
                model="gpt-4o", error=True if burst and k < 15 else None,
            ))
    client = client_for(write_store("parquet", made))
    r = client.get("/api/anomalies", params={"since": "1d", "signal": "error_rate"})
    assert r.status_code == 200, r.text
    (a,) = [x for x in r.json() if x["kind"] == "spike"]
    assert a["group"] == {"model": "gpt-4o"} and a["observed"] == pytest.approx(0.75)
    assert a["bucket_start"].startswith((start + timedelta(hours=70)).isoformat()[:13])
    assert client.get("/api/anomalies", params={"by": "colour"}).status_code == 400
    assert client.get("/api/anomalies", params={"since": "soon"}).status_code == 400
