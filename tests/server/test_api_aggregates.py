"""``GET /api/aggregates`` against the same figures computed in Python over the
same rows (totals, groups, the series per bucket with the groups past the top
10 as "other", the top operations), the buckets and their bound, bad inputs;
and ``GET /api/report`` against ``analyze(...).to_dict()``. Over Parquet,
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llamonitor.server._aggregates import Aggregates

from ._fixtures_traces import UTC, Made, at, iso, kind, made, span  # noqa: F401  (kind: a fixture)


def dashboard_rows() -> list[dict[str, Any]]:
    """About 600 spans over three hours: 12 models (past the series' cap of 10),
    unknown costs, durations and models on some, errors on some."""
    rng = random.Random(7)
    rows = []
    for i in range(600):
        model = None if i % 17 == 0 else f"model-{rng.randrange(12):02d}"
        rows.append(span(
            f"s{i}", None, rng.uniform(0, 3 * 3600 * 1000),
            None if i % 23 == 0 else round(rng.lognormvariate(3, 1), 3),
            trace=f"t{i // 3}",
            model=model,
            provider=rng.choice(["openai", "anthropic", None]),
            agent_name=rng.choice(["planner", "coder"]),
            project_name=rng.choice(["p1", "p2"]),
            operation_name=rng.choice(["llm.chat", "tool.search", "tool.fetch", "agent.run"]),
            operation_type=rng.choice(["llm_call", "tool"]),
            error=True if rng.random() < 0.1 else None,
            cost_usd=None if i % 5 == 0 else rng.randrange(1, 1000) / 1e5,
            input_tokens=rng.randrange(1, 500), output_tokens=rng.randrange(1, 200),
        ))
    return rows


ROWS = dashboard_rows()


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[Made]:  # noqa: F811
    yield from made(kind, ROWS, tmp_path)


def get(m: Made, **params: Any) -> dict[str, Any]:
    r = m.client().get("/api/aggregates", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    Aggregates.model_validate(body)
    return body


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    durations = [r["duration_ms"] for r in rows if r["duration_ms"] is not None]
    costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    q = np.percentile(durations, [50, 95, 99]) if durations else [None] * 3
    return {
        "spans": len(rows),
        "errors": sum(1 for r in rows if r["error"]),
        "cost_usd": sum(costs) if costs else None,
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
    }


def same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for k, v in want.items():
        if isinstance(v, float):
            assert got[k] == pytest.approx(v, rel=1e-9), k
        else:
            assert got[k] == v, k


def ranked(rows: list[dict[str, Any]], column: str) -> list[tuple[str | None, dict[str, Any]]]:
    by: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r[column]].append(r)
    groups = [(k, figures(v)) for k, v in by.items()]
    groups.sort(key=lambda g: (-(g[1]["cost_usd"] or 0.0), -g[1]["spans"], g[0] is None,
                               g[0] or ""))
    return groups


def test_totals_and_groups_equal_a_direct_computation(store: Made) -> None:
    body = get(store)
    want = figures(ROWS)
    same(body["totals"], {**want, "error_rate": want["errors"] / want["spans"]})
    groups = ranked(ROWS, "model")
    assert [g["key"] for g in body["groups"]] == [k for k, _ in groups]
    for got, (_, fig) in zip(body["groups"], groups, strict=True):
        same(got, {**fig, "error_rate": fig["errors"] / fig["spans"]})
    for group_by, column in (("provider", "provider"), ("agent", "agent_name"),
                             ("operation", "operation_name"), ("project", "project_name"),
                             ("operation_type", "operation_type")):
        got = get(store, group_by=group_by)["groups"]
        assert [(g["key"], g["spans"]) for g in got] == [
            (k, f["spans"]) for k, f in ranked(ROWS, column)], group_by


def test_the_series_has_the_top_ten_groups_and_the_rest_as_other(store: Made) -> None:
    body = get(store, bucket="hour")
    assert body["bucket"] == "hour"
    top = [k for k, _ in ranked(ROWS, "model")[:10]]
    want: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for r in ROWS:
        hour = r["timestamp"].replace(minute=0, second=0, microsecond=0)
        want[(iso(hour), r["model"] if r["model"] in top else "other")].append(r)
    got = {(p["t"], p["group"]): p for p in body["series"]}
    assert set(got) == set(want)
    assert len({g for _, g in got}) == 11
    for key, rows in want.items():
        same(got[key], figures(rows))
    assert [p["t"] for p in body["series"]] == sorted(p["t"] for p in body["series"])


def test_top_operations_by_cost_and_by_p95(store: Made) -> None:
    body = get(store)
    ops = ranked(ROWS, "operation_name")
    by_cost = sorted(ops, key=lambda g: (-(g[1]["cost_usd"] or 0), -g[1]["spans"], g[0]))
    assert [(o["operation_name"], o["spans"]) for o in body["top_cost"]] == [
        (k, f["spans"]) for k, f in by_cost]
    by_p95 = sorted(ops, key=lambda g: (-g[1]["p95_ms"], -g[1]["spans"], g[0]))
    assert [o["operation_name"] for o in body["top_slow"]] == [k for k, _ in by_p95]
    slow = body["top_slow"][0]
    rows = [r for r in ROWS if r["operation_name"] == slow["operation_name"]]
    assert slow["max_ms"] == max(r["duration_ms"] for r in rows if r["duration_ms"] is not None)


def test_filters_narrow_every_figure(store: Made) -> None:
    rows = [r for r in ROWS if r["provider"] == "openai" and r["error"]]
    body = get(store, provider="openai", status="error", group_by="agent")
    same(body["totals"], figures(rows))
    assert sum(g["spans"] for g in body["groups"]) == len(rows)
    since = at(3600 * 1000)
    late = [r for r in ROWS if r["timestamp"] >= since]
    body = get(store, since=iso(since))
    assert body["totals"]["spans"] == len(late) and body["since"] == iso(since)
    empty = get(store, model="nobody")
    assert empty["totals"]["spans"] == 0 and empty["series"] == [] and empty["groups"] == []
    assert empty["totals"]["p50_ms"] is None and empty["totals"]["error_rate"] == 0.0


def test_buckets_fit_the_range_and_refuse_too_many(store: Made) -> None:
    assert get(store)["bucket"] == "minute"  # three hours of data
    first = min(r["timestamp"] for r in ROWS)
    month = iso(first - timedelta(days=30))
    assert get(store, since=iso(first - timedelta(days=10)))["bucket"] == "hour"
    assert get(store, since=month)["bucket"] == "day"
    assert get(store, since=iso(first - timedelta(days=60)))["bucket"] == "day"
    years = get(store, since=iso(first - timedelta(days=3 * 365)))
    assert years["bucket"] == "week" and len({p["t"] for p in years["series"]}) <= 500
    c = store.client()
    for params, name in (
        ({"bucket": "minute", "since": month}, "bucket"),
        ({"bucket": "week"}, "bucket"),
        ({"group_by": "span_id"}, "group_by"),
        ({"group_by": "model; DROP TABLE x"}, "group_by"),
        ({"since": iso(first), "until": iso(first - timedelta(hours=1))}, "until"),
        ({"min_cost_usd": "-1"}, "min_cost_usd"),
    ):
        r = c.get("/api/aggregates", params=params)
        assert r.status_code == 400, params
        assert r.json()["parameter"] == name, params
        assert name in r.json()["error"]


def test_a_range_up_to_500_buckets_is_answered(store: Made) -> None:
    first = min(r["timestamp"] for r in ROWS).replace(second=0, microsecond=0)
    body = get(store, bucket="minute", since=iso(first), until=iso(first + timedelta(minutes=500)))
    assert body["bucket"] == "minute"
    r = store.client().get("/api/aggregates", params={
        "bucket": "minute", "since": iso(first), "until": iso(first + timedelta(minutes=501))})
    assert r.status_code == 400


# -- the report ------------------------------------------------------------------


def command_json(m: Made, session: str | None = None, **scope: Any) -> Any:
    """What ``llamonitor report --json`` prints for the scope (its own encoder)."""
    from llamonitor.analysis import analyze, session_report
    from llamonitor.cli._render import dumps

    with m.store.query() as q:
        result = session_report(q, session, **scope) if session else analyze(q, **scope)
    return stable(json.loads(dumps(result.to_dict())))


def stable(report: Any) -> Any:
    """The report without what differs run to run: when, how long it took, and the
    suggestions' prose (money in it rounded to 3 digits, from sums that DuckDB's
    parallel aggregation may add in another order: $0.0394 once, $0.0395 next)."""
    out = {k: v for k, v in report.items() if k not in ("generated_at", "timings_ms")}
    out["suggestions"] = [{k: v for k, v in s.items() if k not in ("detail", "saving_usd")}
                          for s in out.get("suggestions", [])]
    return out


def test_the_report_is_the_commands_json(store: Made) -> None:
    c = store.client()
    assert stable(c.get("/api/report").json()) == command_json(store)
    since = at(3600 * 1000)
    got = c.get("/api/report", params={"since": iso(since), "project": "p1", "top": 3})
    assert got.status_code == 200
    assert stable(got.json()) == command_json(store, since=since, project="p1", top=3)
    session = stable(c.get("/api/report", params={"session": "s1"}).json())
    assert session == command_json(store, "s1") and session["session_id"] == "s1"
    for params, name in (({"top": 0}, "top"), ({"since": "soon"}, "since"),
                         ({"since": "1h", "until": "2h"}, "until")):
        r = c.get("/api/report", params=params)
        assert r.status_code == 400 and r.json()["parameter"] == name, params


def test_the_report_of_nothing_is_an_empty_report(store: Made) -> None:
    body = store.client().get("/api/report", params={"since": iso(datetime.now(UTC))}).json()
    assert stable(body) == command_json(store, since=datetime.fromisoformat(
        body["scope"]["since"]).astimezone(UTC))
    assert body["overview"]["spans"] == 0
