"""Scores on the ClickHouse store end to end: ``llamonitor.score()`` in the
application travels through the writer into ClickHouse's ``llamonitor_scores``
table, and ``llamonitor report --dsn clickhouse://...`` shows them beside the
spans (a private server, tests/_clickhouse.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

import llamonitor
from llamonitor.cli import cli
from llamonitor.metrics._store import write_points
from llamonitor.schema.config import StorageConfig
from llamonitor.storage._scores import read_scores

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["_clickhouse"]  # the clickhouse_server fixture


@pytest.fixture
def database(clickhouse_server: Any) -> Iterator[str]:
    with clickhouse_server.fresh_database("cs_") as store:
        assert store.connection_string is not None
        yield store.connection_string.get_secret_value()


def test_scores_from_the_application_land_in_clickhouse_and_in_the_report(
    database: str,
) -> None:
    store = StorageConfig(backend="clickhouse", connection_string=SecretStr(database))
    llamonitor.initialize_monitoring({"storage": store})
    try:

        @llamonitor.monitor_llm(operation_name="answer", custom_attributes={"model": "gpt-4o-mini"})
        def answer(i: int) -> str:
            span = llamonitor.current_span()
            assert span is not None
            assert span.score("helpful", 0.25 * (i % 4), source="llm", evaluator="judge")
            return "ok"

        for i in range(8):
            answer(i)
        assert llamonitor.score("feedback", label="good", trace_id="t-1", source="human")
        assert llamonitor.flush(30.0)
    finally:
        llamonitor.shutdown_monitoring(10)
    rows = read_scores(store).to_pylist()
    assert sorted(r["name"] for r in rows) == ["feedback"] + ["helpful"] * 8
    assert all(r["span_id"] and r["trace_id"] for r in rows if r["name"] == "helpful")

    out = CliRunner().invoke(cli, ["report", "--dsn", database, "--json"])
    assert out.exit_code == 0, out.output
    section = json.loads(out.output)["scores"]
    assert section["scores"] == 8 and section["unmatched"] == 1  # trace t-1 has no spans
    helpful = {g["name"]: g for g in section["names"]}["helpful"]
    assert helpful["count"] == 8 and helpful["mean"] == pytest.approx(0.375)
    (by_model,) = [g for g in section["by"]["model"] if g["name"] == "helpful"]
    assert by_model["key"] == "gpt-4o-mini" and by_model["count"] == 8


def test_the_server_over_clickhouse_takes_and_shows_scores(database: str, tmp_path: Path) -> None:
    """``llamonitor serve --dsn clickhouse://...``: a score POSTed on the API (the
    UI's thumbs) is stored in ClickHouse and listed back, its target found."""
    from fastapi.testclient import TestClient

    from llamonitor.server._app import create_app
    from llamonitor.server._settings import ServerConfig
    from llamonitor.server._store import open_server_store

    store = StorageConfig(backend="clickhouse", connection_string=SecretStr(database))
    llamonitor.initialize_monitoring({"storage": store})
    try:

        @llamonitor.monitor_llm(operation_name="answer", trace_id_from="trace")
        def answer(trace: str) -> str:
            return "ok"

        answer(trace="ab" * 16)
        assert llamonitor.flush(30.0)
    finally:
        llamonitor.shutdown_monitoring(10)
    server_store = open_server_store(tmp_path / "none", dsn=database)
    try:
        client = TestClient(create_app(server_store, ServerConfig()), base_url="http://127.0.0.1:8585")
        posted = client.post(
            "/api/scores",
            json={"name": "user_feedback", "value": 1, "trace_id": "ab" * 16, "comment": "yes"},
            headers={"x-llamonitor-write": "1"},
        )
        assert posted.status_code == 201, posted.text
        listed = client.get("/api/scores").json()["scores"]
        assert [(s["name"], s["value"], s["comment"], s["target_found"]) for s in listed] == [
            ("user_feedback", 1.0, "yes", True)
        ]
        report = client.get("/api/report").json()
        assert report["scores"]["scores"] == 1
        # and its metric points, in the same database
        point = {
            "timestamp": [datetime(2026, 1, 10, tzinfo=timezone.utc)], "name": ["queue_depth"],
            "kind": ["gauge"], "labels": ["{}"], "resolution_seconds": [0], "value": [3.0],
        }  # fmt: skip
        write_points(store, pa.table(point))
        metrics = client.get("/api/metrics")
        assert metrics.status_code == 200, metrics.text
        assert [(m["name"], m["points"]) for m in metrics.json()["metrics"]] == [("queue_depth", 1)]
    finally:
        server_store.close()
