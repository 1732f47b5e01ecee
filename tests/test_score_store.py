"""Scores in every store: Parquet, SQLite, PostgreSQL, MySQL/MariaDB (the real
servers of tests/_servers.py), ClickHouse (a private server, tests/_clickhouse.py),
idempotent by score_id, migrated, flagged when their target is unknown."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from llamonitor.schema._scores import SCORE_SCHEMA, make_score, scores_table
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _sql_scores
from llamonitor.storage._duckdb import DuckDBQuery
from llamonitor.storage._layout import data_files
from llamonitor.storage._scores import ScoreFilters, mark_targets, read_scores, write_scores

sys.path.insert(0, str(Path(__file__).parent))
from _servers import _execute, server_dsn

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture

STORES = ("parquet", "sqlite", "postgres", "mysql", "clickhouse")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def store_of(kind: str, tmp_path: Path) -> Iterator[StorageConfig]:
    if kind == "parquet":
        yield StorageConfig(output_dir=tmp_path / "store")
        return
    if kind == "sqlite":
        yield StorageConfig(
            backend="sqlite", connection_string=SecretStr(f"sqlite:///{tmp_path}/s.db")
        )
        return
    dsn = server_dsn(kind)
    schema = "sc_" + secrets.token_hex(5)
    if kind == "mysql":
        _execute(kind, dsn, f"CREATE DATABASE {schema}")
    try:
        yield StorageConfig(backend=kind, connection_string=SecretStr(dsn), schema_name=schema)
    finally:
        drop = "SCHEMA IF EXISTS {} CASCADE" if kind == "postgres" else "DATABASE IF EXISTS {}"
        _execute(kind, dsn, "DROP " + drop.format(schema))


def ch_execute(server: Any, sql: str) -> list[tuple[Any, ...]]:
    from clickhouse_driver import Client

    client = Client.from_url(server.dsn)
    try:
        rows: list[tuple[Any, ...]] = client.execute(sql)
        return rows
    finally:
        client.disconnect()


def database_of(store: StorageConfig) -> str:
    assert store.connection_string is not None
    return store.connection_string.get_secret_value().rsplit("/", 1)[1]


def clickhouse_store(server: Any) -> Iterator[StorageConfig]:
    """A database of its own in the private ClickHouse server (its scores table
    is always ``llamonitor_scores``), dropped afterwards."""
    with server.fresh_database("sc_") as store:
        yield store


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageConfig]:
    if request.param == "clickhouse":
        yield from clickhouse_store(request.getfixturevalue("clickhouse_server"))
        return
    yield from store_of(str(request.param), tmp_path)


def _score(name: str = "helpful", value: float | None = 0.5, **kw: object) -> dict[str, object]:
    kw.setdefault("trace_id", "t1")
    kw.setdefault("timestamp", T0)
    return make_score(name, value, **kw)  # type: ignore[arg-type]


def test_scores_round_trip_in_every_store(store: StorageConfig) -> None:
    """What is written reads back the same: values, labels, comments, ids, times."""
    rows = [
        _score("helpful", 0.75, comment="clear, cites sources", source="llm", evaluator="judge"),
        _score("feedback", None, label="bad", span_id="00ab", trace_id=None, source="human",
               span_trace_id="t1"),
        _score("cost_ok", True, session_id="s-1", trace_id=None, metadata={"limit": 0.1}),
    ]
    assert write_scores(store, scores_table(rows)) == 3
    out = read_scores(store)
    assert out.schema.equals(SCORE_SCHEMA, check_metadata=False)
    got = {r["name"]: r for r in out.to_pylist()}
    assert got["helpful"]["value"] == 0.75 and got["helpful"]["comment"] == "clear, cites sources"
    assert got["helpful"]["source"] == "llm" and got["helpful"]["evaluator"] == "judge"
    assert got["helpful"]["timestamp"] == T0
    assert got["feedback"]["label"] == "bad" and got["feedback"]["value"] is None
    assert got["feedback"]["target"] == "span" and got["feedback"]["trace_id"] == "t1"
    assert got["cost_ok"]["value"] == 1.0 and got["cost_ok"]["target"] == "session"
    assert got["cost_ok"]["metadata"] == '{"limit": 0.1}'


def test_writing_a_score_again_replaces_it(store: StorageConfig) -> None:
    """An evaluator re-run (same name, target, source, evaluator) leaves one row:
    the later one; an older replay does not overwrite a newer score."""
    write_scores(store, scores_table([_score(value=0.2, evaluator="e")]))
    later = _score(value=0.9, evaluator="e", timestamp=T0 + timedelta(hours=1))
    write_scores(store, scores_table([later]))
    write_scores(store, scores_table([later]))
    write_scores(store, scores_table([_score(value=0.1, evaluator="e")]))  # an old replay
    out = read_scores(store).to_pylist()
    assert [(r["value"], r["timestamp"]) for r in out] == [(0.9, T0 + timedelta(hours=1))]


def test_filters_keep_what_they_name(store: StorageConfig) -> None:
    rows = [
        _score("a", 1.0, trace_id="t1"),
        _score("b", 2.0, trace_id="t2", timestamp=T0 + timedelta(days=2)),
        _score("a", 3.0, trace_id="t3", source="human"),
    ]
    write_scores(store, scores_table(rows))
    assert {r["value"] for r in read_scores(store, ScoreFilters(name="a")).to_pylist()} == {1, 3}
    assert [r["value"] for r in read_scores(store, ScoreFilters(trace_id="t2")).to_pylist()] == [2]
    since = ScoreFilters(since=T0 + timedelta(days=1))
    assert [r["name"] for r in read_scores(store, since).to_pylist()] == ["b"]
    assert [r["value"] for r in read_scores(store, ScoreFilters(source="human")).to_pylist()] == [
        3
    ]


def test_an_empty_store_has_no_scores(store: StorageConfig) -> None:
    assert read_scores(store).num_rows == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
def test_a_table_of_an_older_version_gains_the_new_columns(kind: str, tmp_path: Path) -> None:
    """Migration: a scores table without a column of today's schema gets it added
    (nullable); its rows stay and read back."""
    for store in store_of(kind, tmp_path):
        write_scores(store, scores_table([_score()]))
        q = "`" if kind == "mysql" else '"'
        table = f"{q}{_sql_scores.SCORES_TABLE}{q}"
        if store.schema_name:
            table = f"{q}{store.schema_name}{q}.{table}"
        dsn = store.connection_string.get_secret_value()  # type: ignore[union-attr]
        _execute(kind, dsn, f"ALTER TABLE {table} DROP COLUMN {q}metadata{q}")
        _sql_scores._migrated.clear()  # a new process
        write_scores(store, scores_table([_score("new", metadata={"k": 1})]))
        out = {r["name"]: r["metadata"] for r in read_scores(store).to_pylist()}
        assert out == {"helpful": None, "new": '{"k": 1}'}


def test_a_clickhouse_table_of_an_older_version_gains_the_new_columns(
    clickhouse_server: Any,
) -> None:
    """The same migration on ClickHouse: a column dropped (an older table) is
    added back by the next process's first write; the old row reads back."""
    from llamonitor.storage import _clickhouse_scores, _clickhouse_side

    for store in clickhouse_store(clickhouse_server):
        write_scores(store, scores_table([_score()]))
        table = f"{database_of(store)}.{_clickhouse_scores.SCORES_TABLE}"
        ch_execute(clickhouse_server, f"ALTER TABLE {table} DROP COLUMN metadata")
        _clickhouse_side._created.clear()  # a new process
        write_scores(store, scores_table([_score("new", metadata={"k": 1})]))
        out = {r["name"]: r["metadata"] for r in read_scores(store).to_pylist()}
        assert out == {"helpful": None, "new": '{"k": 1}'}


def test_clickhouse_keeps_one_row_per_score_once_merged(clickhouse_server: Any) -> None:
    """Written three times (the old replay last), a score is three rows until a
    merge; the table's own read (FINAL, no deduplication on top) gives one row,
    the newest by its time, not the last written; the merge keeps that one."""
    from llamonitor.storage import _clickhouse_scores

    for store in clickhouse_store(clickhouse_server):
        table = f"{database_of(store)}.{_clickhouse_scores.SCORES_TABLE}"
        for days, value in ((0, 0.1), (2, 0.9), (1, 0.5)):  # 0.5: an older replay, last
            write_scores(store, scores_table([_score(value=value, timestamp=T0 + timedelta(days))]))
        assert ch_execute(clickhouse_server, f"SELECT count() FROM {table}") == [(3,)]
        raw = _clickhouse_scores.fetch(store).to_pylist()
        assert [(r["value"], r["timestamp"]) for r in raw] == [(0.9, T0 + timedelta(2))]
        assert [r["value"] for r in read_scores(store).to_pylist()] == [0.9]
        ch_execute(clickhouse_server, f"OPTIMIZE TABLE {table} FINAL")
        assert ch_execute(clickhouse_server, f"SELECT value FROM {table}") == [(0.9,)]


def test_clickhouse_reads_push_the_filters_and_keep_the_latest(clickhouse_server: Any) -> None:
    """read_scores on ClickHouse pushes until and the name, trace, source and
    evaluator filters into the WHERE (the table's own read returns only what
    they select), and a score re-given after ``until`` is not read as its
    older value (WHERE after FINAL), as read_scores filters the latest rows."""
    from llamonitor.storage import _clickhouse_scores

    for store in clickhouse_store(clickhouse_server):
        write_scores(store, scores_table([
            _score("a", 1.0, trace_id="t1", evaluator="e1"),
            _score("b", 2.0, trace_id="t2"),
            _score("a", 3.0, trace_id="t3", source="human"),
            _score("x", 0.1),
        ]))  # fmt: skip
        write_scores(store, scores_table([_score("x", 0.9, timestamp=T0 + timedelta(hours=2))]))
        raw = _clickhouse_scores.fetch
        assert sorted(r["value"] for r in raw(store, name="a").to_pylist()) == [1.0, 3.0]
        assert [r["value"] for r in raw(store, trace_id="t2").to_pylist()] == [2.0]
        assert [r["value"] for r in raw(store, source="human").to_pylist()] == [3.0]
        assert [r["value"] for r in raw(store, evaluator="e1").to_pylist()] == [1.0]
        until = T0 + timedelta(hours=1)
        assert sorted(r["name"] for r in raw(store, until=until).to_pylist()) == ["a", "a", "b"]
        got = read_scores(store, ScoreFilters(name="a", until=until, source="human")).to_pylist()
        assert [r["value"] for r in got] == [3.0]
        assert "x" not in read_scores(store, ScoreFilters(until=until)).column("name").to_pylist()


def test_the_span_reader_skips_the_scores_directory(tmp_path: Path) -> None:
    store = StorageConfig(output_dir=tmp_path)
    write_scores(store, scores_table([_score()]))
    assert list((tmp_path / "scores").rglob("*.parquet"))
    assert data_files(tmp_path) == []


def test_a_store_without_scores_is_a_configuration_error() -> None:
    """The error names the setting and every store that holds scores."""
    with pytest.raises(ConfigurationError, match=r"storage\.backend") as info:
        write_scores(StorageConfig(backend="memory"), scores_table([_score()]))
    assert "mysql and clickhouse backends, not 'memory'" in str(info.value)


def _spans() -> DuckDBQuery:
    """A span store holding trace t1, span 00ab, session s-1."""
    rel = pa.table({"trace_id": ["t1"], "span_id": ["00ab"], "session_id": ["s-1"]})
    return DuckDBQuery(lambda _filters: rel)


def test_scores_for_unknown_ids_are_kept_and_flagged(tmp_path: Path) -> None:
    """A score on a trace the store does not hold is stored as given, and the
    query side says target_found = false."""
    store = StorageConfig(output_dir=tmp_path)
    rows = [
        _score("a", trace_id="t1"),
        _score("b", trace_id="nope"),
        _score("c", span_id="00ab", trace_id=None),
        _score("d", session_id="s-2", trace_id=None),
    ]
    write_scores(store, scores_table(rows))
    out = mark_targets(read_scores(store), _spans())
    assert {r["name"]: r["target_found"] for r in out.to_pylist()} == {
        "a": True, "b": False, "c": True, "d": False,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": float("nan")}, "finite"),
        ({"value": float("inf")}, "finite"),
        ({"value": "0.5"}, "number"),
        ({"value": None}, "value .* or a label"),
        ({"trace_id": None}, "exactly one target"),
        ({"span_id": "s"}, "exactly one target"),
        ({"source": "robot"}, "source"),
        ({"name": ""}, "name"),
        ({"comment": "x" * 10_001}, "comment"),
    ],
)
def test_bad_scores_are_refused_at_the_call(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "n", "value": 1.0, "trace_id": "t", **kwargs}
    name = args.pop("name")
    value = args.pop("value")
    with pytest.raises(ValueError, match=message):
        make_score(name, value, **args)
