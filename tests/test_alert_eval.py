"""Rule evaluation: the figures match exact SQL, and the incremental evaluation equals a
full one; ``serve`` evaluates its rule file and answers GET /api/alerts."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import httpx
import pytest

from _alert_store import span, write_spans
from llamonitor.quality import parse_rules
from llamonitor.quality._alert_eval import Evaluator
from llamonitor.quality._alert_watch import parquet_query

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def _rules() -> list:  # type: ignore[type-arg]
    return parse_rules({"rules": [
        {"name": "p95", "metric": "latency_p95", "threshold": "1s", "window": "10m",
         "group_by": ["model"]},
        {"name": "cost", "metric": "cost", "threshold": 1, "window": "1h",
         "operation": "llm.*"},
        {"name": "err", "metric": "error_rate", "threshold": "5%", "window": "10m"},
    ]}).rules


def test_figures_match_exact_sql_and_incremental_equals_full(store: Path) -> None:
    """p95 within 1% of DuckDB's exact quantile; cost and error rate exact; an evaluator fed
    the spans in steps gives what a fresh one reading everything gives."""
    inc = Evaluator(parquet_query(store), late_seconds=30)
    for step in range(6):
        at = NOW + timedelta(seconds=60 * step)
        write_spans(store, [
            span(at + timedelta(seconds=i % 50), model="ab"[i % 2], duration_ms=float(i * 7 + 1),
                 cost_usd=0.01, error=True if i % 9 == 0 else None,
                 operation_name="llm.answer" if i % 3 else "tool.x")
            for i in range(300)
        ])
        for rule in _rules():
            inc.evaluate(rule, at + timedelta(seconds=55))
    end = NOW + timedelta(seconds=355)
    full = Evaluator(parquet_query(store))
    for rule in _rules():
        assert inc.evaluate(rule, end) == full.evaluate(rule, end)
    exact = duckdb.sql(
        "SELECT model, quantile_disc(duration_ms, 0.95) AS p FROM read_parquet(?) "
        "WHERE timestamp >= ? GROUP BY model ORDER BY model",
        params=[str(store / "**/*.parquet"), end - timedelta(minutes=10)],
    ).fetchall()
    p95 = {o.group[0][1]: o.value for o in full.evaluate(_rules()[0], end)}
    for model, p in exact:
        assert p95[model] == pytest.approx(p / 1000, rel=0.011)
    (cost,) = full.evaluate(_rules()[1], end)
    assert cost.value == pytest.approx(6 * 200 * 0.01)
    (err,) = full.evaluate(_rules()[2], end)
    assert err.value == pytest.approx(6 * 34 / 1800)


def test_serve_evaluates_its_rules_and_lists_them(store: Path, tmp_path: Path) -> None:
    """start_server with alert_rules: /api/alerts shows the rule firing within an interval."""
    from llamonitor.server import ServerConfig, start_server

    now = datetime.now(timezone.utc)
    write_spans(store, [span(now, error=True) for _ in range(5)])
    rules = tmp_path / "r.yaml"
    rules.write_text("settings: {interval: 0.2s}\nrules:\n  - {name: errs, metric: errors, "
                     "threshold: 1, window: 5m}\n")
    handle = start_server(ServerConfig(port=0, otlp=False, alert_rules=str(rules)),
                          directory=store)
    try:
        deadline = time.monotonic() + 20
        body: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            body = httpx.get(handle.url + "api/alerts").json()
            if body["alerts"]:
                break
            time.sleep(0.1)
        assert body["enabled"] is True
        assert body["alerts"][0]["rule"] == "errs" and body["alerts"][0]["status"] == "firing"
        assert body["history"][0]["status"] == "firing"
    finally:
        handle.stop()
