"""The ClickHouse store against a real, privately started ClickHouse 18.16
server (Debian's package): the table derived from the schema, columnar writes,
idempotent redelivery, migrations, and the same answers as SQLite from the
report, stats, trace, the CLI and the server."""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result
from pydantic import BaseModel, SecretStr

from _helpers import span_row
from llamonitor.analysis import analyze
from llamonitor.cli import cli
from llamonitor.schema import register_metrics
from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema._extensions import rows_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import RowsRejected, StoreError, create_backend
from llamonitor.storage import sqlite as sqlite_store
from llamonitor.storage._duckdb import Filters

if TYPE_CHECKING:
    from _clickhouse import CHStore

pytest_plugins = ["_clickhouse"]  # the clickhouse_server and ch fixtures

UTC = timezone.utc
T0 = datetime(2026, 1, 30, 22, 0, 0, 123456, tzinfo=UTC)  # spans cross into February
MODELS = (
    ("openai", "gpt-4o", 2.5e-6),
    ("anthropic", "claude-sonnet-4", 3e-6),
    ("local", "llama", None),
)


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def run(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def workload(n_traces: int = 40, seed: int = 3) -> list[dict[str, Any]]:
    """Sessions of agent traces over two days that cross a month boundary:
    an agent root, LLM calls (three providers, one unpriced), tools, retried
    failures, text with quotes, tabs and newlines, sampled spans."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for k in range(n_traces):
        session = f"session-{k % 7}"
        trace = secrets.token_hex(16) if k else "ab" * 16
        start = T0 + timedelta(minutes=70 * k, microseconds=rnd.randrange(10**6))
        root = f"{len(rows):016x}"
        rows.append(
            span_row(
                len(rows),
                event_id=secrets.token_hex(8),
                session_id=session,
                trace_id=trace,
                span_id=root,
                operation_name="agent.run",
                operation_type="agent_workflow",
                timestamp=start,
                duration_ms=2000.0 + rnd.random() * 1000,
                project_name="p1" if k % 2 else "p2",
                agent_name="orchestrator",
            )
        )
        for j in range(rnd.randrange(2, 6)):
            provider, model, price = MODELS[rnd.randrange(3)]
            tokens_in, tokens_out = rnd.randrange(100, 4000), rnd.randrange(10, 800)
            failed = rnd.random() < 0.15
            attrs: dict[str, Any] = {"step": j, "note": 'a "quoted"\tvalue\nline 2'}
            if j == 1:
                attrs["llamonitor.sample_rate"] = 0.25
            rows.append(
                span_row(
                    len(rows),
                    event_id=secrets.token_hex(8),
                    session_id=session,
                    trace_id=trace,
                    span_id=f"{len(rows):016x}",
                    parent_span_id=root,
                    operation_name="llm.chat" if j % 2 == 0 else "tool.search",
                    operation_type="llm_call" if j % 2 == 0 else "tool",
                    timestamp=start + timedelta(milliseconds=100 * (j + 1), microseconds=j),
                    duration_ms=rnd.random() * 900,
                    error=True if failed else None,
                    error_type="TimeoutError" if failed else None,
                    error_message="timed out after 30 s\n(retrying)" if failed else None,
                    provider=provider,
                    model=model,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    total_tokens=tokens_in + tokens_out,
                    cost_usd=None if price is None else (tokens_in + tokens_out) * price,
                    prompt_hash=f"h{rnd.randrange(5)}",
                    project_name="p1" if k % 2 else "p2",
                    custom_attributes=json.dumps(attrs),
                    text_char_count=rnd.randrange(1000),
                )
            )
    return rows


def sqlite_query(tmp_path: Path, rows: list[dict[str, Any]]) -> Any:
    config = StorageConfig(
        backend="sqlite",
        connection_string=SecretStr(f"sqlite:///{tmp_path / 'peer.db'}"),
        table_name="metric_events",
    )

    async def go() -> None:
        backend = create_backend(config)
        await backend.initialize()
        await backend.write_table(table_of(rows))
        await backend.close()

    asyncio.run(go())
    return sqlite_store.query(config)


def same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (sums over rows read in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


# -- the table -------------------------------------------------------------------


def test_table_is_derived_from_the_schema(ch: CHStore) -> None:
    """Every schema column with its type (nullable where the schema says), the
    microseconds beside the start time, a ReplacingMergeTree by month ordered
    by trace and time, and the schema version recorded."""
    ch.write(table_of([span_row(0)]))
    columns = dict(
        ch.execute(
            "SELECT name, type FROM system.columns WHERE database = 'default' AND table = %(t)s",
            {"t": ch.table},
        )
    )
    assert columns["event_id"] == "String"
    assert columns["parent_span_id"] == "Nullable(String)"
    assert columns["timestamp"] == "DateTime('UTC')"
    assert columns["timestamp_us"] == "UInt32"
    assert columns["duration_ms"] == "Nullable(Float64)"
    assert columns["error"] == "Nullable(UInt8)"
    assert columns["process_id"] == "Int64"
    assert set(columns) == {*SCHEMA.names, "timestamp_us"}
    ((create,),) = ch.execute(f"SHOW CREATE TABLE `{ch.table}`")
    assert "ENGINE = ReplacingMergeTree" in create
    assert "PARTITION BY toYYYYMM(timestamp)" in create
    assert "ORDER BY (trace_id, timestamp, event_id)" in create
    ((version,),) = ch.execute(
        "SELECT argMax(schema_version, updated_at) FROM llamonitor_schema_version "
        "WHERE table_name = %(t)s",
        {"t": ch.table},
    )
    assert version == SCHEMA_VERSION


def test_every_column_round_trips(ch: CHStore) -> None:
    """Every column type, nulls, unicode and control characters, microseconds and
    64-bit extremes read back exactly, with the schema's Arrow types."""
    text = "naïve 漢字 🙂 'single' \"double\" back\\slash %_ \n\ttab \x1a end"
    rows = []
    for i, ints in enumerate((2**63 - 1, -(2**63), 12345)):
        row = span_row(i, timestamp=T0 + timedelta(days=40 * i, microseconds=999_999 - i))
        for f in SCHEMA:
            if f.name in ("event_id", "timestamp"):
                continue
            if pa.types.is_string(f.type):
                row[f.name] = f"{f.name}-{i} {text}"
            elif pa.types.is_int64(f.type):
                row[f.name] = ints
            elif pa.types.is_float64(f.type):
                row[f.name] = (0.1, 1e300, -2.5e-300)[i]
            elif pa.types.is_boolean(f.type):
                row[f.name] = True if i % 2 else None
        rows.append(row)
    rows.append(span_row(3))  # every nullable column None
    ch.write(table_of(rows))
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
        arrow = q.run("SELECT * FROM {rel} ORDER BY event_id")
    assert got == {r["event_id"]: {**r, "error": bool(r["error"])} for r in rows}
    assert arrow is not None
    assert arrow.schema.types == SCHEMA.types


def test_spans_are_partitioned_by_month_in_utc(ch: CHStore) -> None:
    """A span at 23:30 UTC on the last day of a month is in that month's
    partition, whatever the server's time zone (the test server's is not UTC)."""
    last = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    ch.write(
        table_of([span_row(0, timestamp=last), span_row(1, timestamp=last + timedelta(hours=1))])
    )
    parts = ch.execute(
        "SELECT DISTINCT partition FROM system.parts WHERE table = %(t)s AND active "
        "ORDER BY partition",
        {"t": ch.table},
    )
    assert [p for (p,) in parts] == ["202601", "202602"]
    ((tz,),) = ch.execute("SELECT timezone()")
    assert tz != "UTC"


# -- idempotence -----------------------------------------------------------------


def test_redelivered_batches_are_counted_once(ch: CHStore, tmp_path: Path) -> None:
    """A batch delivered again (whole, and in part inside a later batch) leaves
    copies in the table until a merge, and every query counts each span once;
    after the merge one copy is left."""
    rows = workload(10)
    first, second = table_of(rows[:30]), table_of(rows[30:])
    redelivery = pa.concat_tables([table_of(rows[20:40]), second])
    ch.write(first, first, second, redelivery)
    assert ch.raw_count() > len(rows)  # the copies are there, not merged yet
    peer = sqlite_query(tmp_path, rows)
    with ch.query() as q, peer:
        assert q.count() == len(rows)
        same(q.stats(), peer.stats())
        same(q.overview(), peer.overview())
        tid = rows[25]["trace_id"]
        assert q.trace(tid) == peer.trace(tid)
    ch.execute(f"OPTIMIZE TABLE `{ch.table}` FINAL")
    assert ch.raw_count() == len(rows)


def test_a_retried_write_through_the_transport_lands_once(ch: CHStore) -> None:
    """The same events written by two backends (a worker's retry after its
    first attempt did land) are one span each."""
    rows = workload(3)
    ch.write(table_of(rows))
    ch.write(table_of(rows))
    with ch.query() as q:
        assert q.count() == len(rows)
        assert sorted(r["event_id"] for r in q.events(limit=None)) == sorted(
            r["event_id"] for r in rows
        )


# -- migrations ------------------------------------------------------------------


def test_version_1_table_is_migrated_in_place(ch: CHStore) -> None:
    """A table of schema version 1 (error and duration_ms not nullable, no LLM
    columns) gets the columns on initialize; error 0 becomes NULL; its rows
    read back, new rows beside them."""
    from llamonitor.storage._clickhouse_ddl import column_defs

    fields = [
        f.with_nullable(False) if f.name in ("error", "duration_ms") else f
        for f in SCHEMA
        if f.name in COLUMNS_V1
    ]
    ch.execute(
        f"CREATE TABLE `{ch.table}` ({', '.join(column_defs(fields))}) "
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (trace_id, timestamp, event_id)"
    )
    ch.execute(
        f"INSERT INTO `{ch.table}` (event_id, session_id, trace_id, span_id, operation_name, "
        "operation_type, timestamp, timestamp_us, duration_ms, error, process_id) VALUES",
        [
            (
                f"old{i}",
                "old",
                "t" * 32,
                f"{i:016x}",
                "op",
                "tool",
                1_777_000_000 + i,
                5,
                1.5,
                1 if i == 3 else 0,
                7,
            )
            for i in range(5)
        ],
    )
    with ch.query() as q:  # readable before any writer migrated it
        assert q.count() == 5
        assert q.overview()["errors"] == 1
        assert q.events(limit=1)[0]["model"] is None
    ch.write(table_of([span_row(100, model="gpt-4o", input_tokens=7)]))
    columns = dict(
        ch.execute("SELECT name, type FROM system.columns WHERE table = %(t)s", {"t": ch.table})
    )
    assert set(SCHEMA.names) <= set(columns)
    assert columns["error"] == "Nullable(UInt8)"
    assert columns["model"] == "Nullable(String)"
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
        assert q.overview()["errors"] == 1
    assert len(got) == 6
    assert got["old3"]["error"] is True and got["old2"]["error"] is False
    assert got["old1"]["timestamp"] == datetime.fromtimestamp(1_777_000_001, UTC).replace(
        microsecond=5
    )
    assert got["old1"]["model"] is None
    assert got["e000100"]["model"] == "gpt-4o"
    nulls = ch.execute(f"SELECT count() FROM `{ch.table}` WHERE error IS NULL")
    assert nulls == [(5,)]  # the four old 0s (a mutation) and the new span


class CHProbe(BaseModel):
    latency_s: float
    label: str
    hits: int


def test_a_metric_group_adds_its_columns(ch: CHStore) -> None:
    """A batch bringing a registered metric group's values adds its columns
    (recorded in the meta table), and the query side reads them back."""
    register_metrics("chprobe", CHProbe)
    ch.write(table_of([span_row(0)]))
    rows = [span_row(1, chprobe_latency_s=0.5, chprobe_label="x", chprobe_hits=3)]
    ch.write(rows_table(rows))
    columns = dict(
        ch.execute("SELECT name, type FROM system.columns WHERE table = %(t)s", {"t": ch.table})
    )
    assert columns["chprobe_latency_s"] == "Nullable(Float64)"
    assert columns["chprobe_hits"] == "Nullable(Int64)"
    with ch.query() as q:
        got = {r["event_id"]: r for r in q.events(limit=None)}
    assert got["e000001"]["chprobe_label"] == "x"
    assert got["e000001"]["chprobe_hits"] == 3
    assert got["e000000"]["chprobe_latency_s"] is None


def test_a_newer_schema_version_is_refused(ch: CHStore) -> None:
    ch.write(table_of([span_row(0)]))
    ch.execute(
        "INSERT INTO llamonitor_schema_version (table_name, schema_version, updated_at, "
        "extensions) VALUES",
        [(ch.table, SCHEMA_VERSION + 1, datetime(2100, 1, 1), "{}")],
    )
    with pytest.raises(ConfigurationError, match="newer than this llamonitor"):
        ch.write(table_of([span_row(1)]))


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


# -- faults and configuration ------------------------------------------------------


def test_a_start_time_outside_datetime_is_rejected_and_the_rest_written(ch: CHStore) -> None:
    """ClickHouse's DateTime holds 1970 to 2106: a span outside is rejected (with
    the reason), the others of its batch are written."""
    rows = [span_row(0), span_row(1, timestamp=datetime(1969, 12, 31, tzinfo=UTC)), span_row(2)]
    with pytest.raises(RowsRejected) as info:
        ch.write(table_of(rows))
    assert info.value.rejected.column("event_id").to_pylist() == ["e000001"]
    assert "DateTime range" in info.value.errors[0]
    with ch.query() as q:
        assert sorted(r["event_id"] for r in q.events(limit=None)) == ["e000000", "e000002"]


def test_an_unreachable_server_is_a_transient_store_error(tmp_path: Path) -> None:
    """Nothing listening: the write fails with a StoreError the transport retries
    (then spools), the password masked."""
    from _clickhouse import free_port

    dsn = f"clickhouse://u:S3cr3t@127.0.0.1:{free_port()}/default?connect_timeout=2"
    backend = create_backend(StorageConfig(backend="clickhouse", connection_string=SecretStr(dsn)))
    with pytest.raises(StoreError) as info:
        asyncio.run(backend.initialize())
    assert info.value.llamonitor_transient
    assert "S3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"options": {"compression": "lz4"}}, "storage.options"),
        ({"schema_name": "analytics"}, "storage.schema_name"),
        ({"table_name": "bad-name"}, "storage.table_name"),
        ({"connection_string": SecretStr("postgresql://h/db")}, "storage.connection_string"),
    ],
)
def test_bad_configuration_names_the_setting(settings: dict[str, Any], setting: str) -> None:
    given: dict[str, Any] = {"connection_string": SecretStr("clickhouse://127.0.0.1:9000/db")}
    given.update(settings)
    with pytest.raises(ConfigurationError) as info:
        create_backend(StorageConfig(backend="clickhouse", **given))
    assert info.value.setting == setting


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
