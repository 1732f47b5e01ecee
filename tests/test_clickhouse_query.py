"""The ClickHouse store's query side against a private ClickHouse 18.16
server: the report, stats, trace, the CLI and the server answer as over SQLite
on the same spans; decorated calls and ingest workers end to end."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from _clickhouse_data import T0, run, same, sqlite_query, table_of, workload
from llamonitor.analysis import analyze
from llamonitor.storage._duckdb import Filters

if TYPE_CHECKING:
    from _clickhouse import CHStore

pytest_plugins = ["_clickhouse"]  # the clickhouse_server and ch fixtures


# -- the query side: the same answers as SQLite ------------------------------------


def test_report_stats_and_trace_match_sqlite(ch: CHStore, tmp_path: Path) -> None:
    """The analysis report, stats (per group and filtered), the overview, events
    and traces over ClickHouse equal SQLite's on the same spans."""
    rows = workload()
    ch.write(table_of(rows[: len(rows) // 2]), table_of(rows[len(rows) // 2 :]))
    peer = sqlite_query(tmp_path, rows)
    since, until = T0 + timedelta(hours=5, microseconds=7), T0 + timedelta(hours=30)
    with ch.query() as q, peer:
        for kwargs in (
            {},
            {"group_by": "model"},
            {"group_by": None},
            {"since": since, "until": until},
            {"session_id": "session-2"},
        ):
            same(q.stats(**kwargs), peer.stats(**kwargs))
        same(q.overview(), peer.overview())
        assert q.events(limit=None) == peer.events(limit=None)
        assert q.events(operation="tool.*", since=since) == peer.events(
            operation="tool.*", since=since
        )
        for tid in {r["trace_id"] for r in rows[::9]}:
            assert q.trace(tid) == peer.trace(tid)
        assert q.find_trace_ids("abab") == ["ab" * 16]
        ours, theirs = analyze(q).to_dict(), analyze(peer).to_dict()
        scoped = analyze(q, since=since, project="p1").to_dict()
        scoped_peer = analyze(peer, since=since, project="p1").to_dict()
    for report in (ours, theirs, scoped, scoped_peer):
        report.pop("generated_at")
        report.pop("timings_ms", None)
    assert ours["cost"]["total_usd"] > 0
    same(ours, theirs)
    same(scoped, scoped_peer)


def test_filters_are_pushed_into_clickhouse(ch: CHStore) -> None:
    """The source reads only the rows the filters select (a glob and the
    sub-second edges of the time range are applied by DuckDB afterwards)."""
    rows = workload(12)
    ch.write(table_of(rows))
    t = sorted(r["timestamp"] for r in rows)
    cases = [
        (Filters(session_id="session-3"), lambda r: r["session_id"] == "session-3"),
        (Filters(trace_id=rows[0]["trace_id"]), lambda r: r["trace_id"] == rows[0]["trace_id"]),
        (Filters(project_name="p1"), lambda r: r["project_name"] == "p1"),
        (Filters(since=t[10], until=t[20]), lambda r: t[10] <= r["timestamp"] < t[20]),
    ]
    with ch.query() as q:
        for filters, keep in cases:
            reader = q._source(filters)
            assert isinstance(reader, pa.RecordBatchReader)
            got = set(reader.read_all().column("event_id").to_pylist())
            expected = {r["event_id"] for r in rows if keep(r)}
            # the time range is widened to whole seconds, never narrowed
            assert expected <= got, filters
            if filters.since is None:
                assert got == expected, filters
        assert {r["event_id"] for r in q.events(since=t[10], until=t[20], limit=None)} == {
            r["event_id"] for r in rows if t[10] <= r["timestamp"] < t[20]
        }


def test_cli_report_stats_and_trace_read_clickhouse(ch: CHStore, tmp_path: Path) -> None:
    """`llamonitor report`, `stats` and `trace` with --dsn clickhouse://... print
    what they print for the same spans in SQLite."""
    rows = workload(12)
    ch.write(table_of(rows))
    sqlite_query(tmp_path, rows).close()
    ours = ("--dsn", ch.dsn, "--table", ch.table)
    theirs = ("--dsn", f"sqlite:///{tmp_path / 'peer.db'}", "--table", "metric_events")
    for command in (["stats", "--json"], ["trace", "abab", "--json"], ["report", "--json"]):
        got, want = run(*command, *ours), run(*command, *theirs)
        assert got.exit_code == 0, got.output
        assert want.exit_code == 0, want.output
        a, b = json.loads(got.stdout), json.loads(want.stdout)
        for doc in (a, b):
            for key in ("generated_at", "timings_ms", "store"):
                doc.pop(key, None)
        same(a, b, command[0])
    result = run("stats", *ours)
    assert result.exit_code == 0, result.output
    assert f"{len(rows)} spans" in result.output


def test_server_reads_clickhouse(ch: CHStore, tmp_path: Path) -> None:
    """`llamonitor serve --dsn clickhouse://...`: the API's traces, a trace tree,
    spans and report answer as over SQLite."""
    from fastapi.testclient import TestClient

    from llamonitor.server._app import create_app
    from llamonitor.server._settings import ServerConfig
    from llamonitor.server._store import open_server_store

    rows = workload(8)
    ch.write(table_of(rows))
    sqlite_query(tmp_path, rows).close()
    stores = [
        open_server_store(tmp_path / "none", dsn=ch.dsn, table=ch.table),
        open_server_store(tmp_path / "none", dsn=f"sqlite:///{tmp_path / 'peer.db'}"),
    ]
    try:
        clients = [
            TestClient(create_app(s, ServerConfig()), base_url="http://127.0.0.1:8585")
            for s in stores
        ]
        assert stores[0].info.kind == "clickhouse"
        for path in (
            "/api/traces",
            f"/api/traces/{'ab' * 16}",
            "/api/spans?limit=500",
            "/api/sessions",
            "/api/report",
        ):
            got, want = (c.get(path) for c in clients)
            assert got.status_code == 200, (path, got.text)
            assert want.status_code == 200, (path, want.text)
            a, b = got.json(), want.json()
            for doc in (a, b):
                if isinstance(doc, dict):
                    for key in ("generated_at", "timings_ms", "store"):
                        doc.pop(key, None)
            same(a, b, path)
    finally:
        for s in stores:
            s.close()


def test_missing_table_is_an_empty_store(ch: CHStore) -> None:
    with ch.query() as q:
        assert q.count() == 0
        assert q.stats() == []
    result = run("trace", "abc", "--dsn", ch.dsn, "--table", ch.table)
    assert result.exit_code == 1
    assert "not found in" in result.output


# -- end to end ------------------------------------------------------------------


def test_decorated_calls_land_in_clickhouse(ch: CHStore) -> None:
    """initialize_monitoring(MonitorConfig.for_production("clickhouse://...")) and
    decorated calls in a session: the spans, their hierarchy and error are read back."""
    import llamonitor

    writer = llamonitor.initialize_monitoring(
        llamonitor.MonitorConfig.for_production(ch.dsn, table_name=ch.table)
    )
    try:

        @llamonitor.monitor_llm(operation_name="inner", measure_text=True)
        def inner(i: int) -> str:
            if i == 2:
                raise ValueError("boom")
            return "word " * i

        @llamonitor.monitor_llm(operation_name="outer")
        def outer() -> None:
            for i in range(4):
                try:
                    inner(i)
                except ValueError:
                    pass

        with llamonitor.monitoring_session("ch-session"):
            outer()
        assert llamonitor.flush(30)
        assert writer.health_check()["events_written"] == 5
    finally:
        llamonitor.shutdown_monitoring(30)
    with ch.query() as q:
        rows = q.events(session_id="ch-session", limit=None)
    assert len(rows) == 5
    (root,) = [r for r in rows if r["operation_name"] == "outer"]
    children = [r for r in rows if r["operation_name"] == "inner"]
    assert {r["parent_span_id"] for r in children} == {root["span_id"]}
    assert [r["error"] for r in children].count(True) == 1
    assert sorted(r["text_word_count"] for r in children if not r["error"]) == [0, 1, 3]


def test_ingest_workers_write_redis_streams_to_clickhouse_once(ch: CHStore) -> None:
    """`llamonitor ingest --from redis://... --to clickhouse://...`: two workers
    share the stream; a message published twice (a redelivery) and a batch
    written again are one span each in every query."""
    import os

    redis = pytest.importorskip("redis")
    from llamonitor.cli._ingest import build_worker
    from llamonitor.export._broker_codec import encode
    from llamonitor.export._redis_streams import entry_fields

    url = "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"redis is not reachable: {exc}")
        pytest.skip(f"redis is not reachable: {exc}")
    stream = f"test-ch-{secrets.token_hex(4)}"
    rows = workload(30)
    tables = [table_of(rows[i : i + 25]) for i in range(0, len(rows), 25)]
    try:
        for t in [*tables, tables[1]]:
            client.xadd(stream, entry_fields(encode(t)))  # type: ignore[arg-type]
        workers = [
            build_worker(
                f"{url}/{stream}",
                ch.dsn,
                table=ch.table,
                consumer=name,
                idle_exit_seconds=1.0,
                wait_seconds=0.2,
                batch_messages=2,
            )
            for name in ("w1", "w2")
        ]

        async def both() -> None:
            await asyncio.gather(*(w.run() for w in workers))

        asyncio.run(both())
    finally:
        client.delete(stream, stream + ":dead")
    assert sum(w.stats.spans for w in workers) == len(rows) + tables[1].num_rows
    assert ch.raw_count() > len(rows)
    with ch.query() as q:
        assert q.count() == len(rows)
        assert sum(g["count"] for g in q.stats()) == len(rows)
