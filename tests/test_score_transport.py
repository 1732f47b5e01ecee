"""llamonitor.score() and current_span().score() from the application to the
store, through the spans' sinks: flushed with the writer, spooled through an
outage of the store and replayed when it is back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import llamonitor
from llamonitor.schema._scores import make_score
from llamonitor.schema.config import StorageConfig
from llamonitor.storage._scores import read_scores
from llamonitor.transport import _scores as score_transport

pytest_plugins = ["_pgcluster"]


def test_scores_from_code_reach_the_store_at_flush(tmp_path: Path) -> None:
    """A score on a trace and on the current span are in the store after flush(),
    with the span's trace kept beside its span id."""
    store = StorageConfig(output_dir=tmp_path)
    llamonitor.initialize_monitoring({"storage": {"output_dir": str(tmp_path)}})

    @llamonitor.monitor_llm(operation_name="answer")
    def answer() -> str:
        span = llamonitor.current_span()
        assert span is not None
        assert span.score("helpful", 0.9, comment="good", source="llm")
        return "ok"

    answer()
    assert llamonitor.score("feedback", label="good", trace_id="t-1", source="human")
    assert llamonitor.flush(10.0)
    rows = {r["name"]: r for r in read_scores(store).to_pylist()}
    assert rows["feedback"]["target"] == "trace" and rows["feedback"]["trace_id"] == "t-1"
    helpful = rows["helpful"]
    assert helpful["target"] == "span" and helpful["value"] == 0.9 and helpful["source"] == "llm"
    assert helpful["span_id"] and helpful["trace_id"]
    assert score_transport.health()["dropped"] == 0


def test_a_bare_session_scope_scores_its_session(tmp_path: Path) -> None:
    """score() on the scope of monitoring_session(), outside any span, targets the
    session instead of raising into the application."""
    store = StorageConfig(output_dir=tmp_path)
    llamonitor.initialize_monitoring({"storage": {"output_dir": str(tmp_path)}})
    with llamonitor.monitoring_session("sess-1") as scope:
        assert scope.score("session_ok", 1.0)
    assert llamonitor.flush(10.0)
    (row,) = [r for r in read_scores(store).to_pylist() if r["name"] == "session_ok"]
    assert row["target"] == "session" and row["session_id"] == "sess-1"


def test_a_bad_score_raises_at_the_call_and_nothing_is_queued(tmp_path: Path) -> None:
    llamonitor.initialize_monitoring({"storage": {"output_dir": str(tmp_path)}})
    llamonitor.score("warm", 1.0, trace_id="t")  # the transport exists
    received = score_transport.health()["received"]
    with pytest.raises(ValueError, match="finite"):
        llamonitor.score("x", float("nan"), trace_id="t")
    with pytest.raises(ValueError, match="exactly one target"):
        llamonitor.score("x", 1.0, trace_id="t", session_id="s")
    assert score_transport.health()["received"] == received


def test_without_monitoring_a_score_is_not_queued() -> None:
    llamonitor.shutdown_monitoring()
    assert llamonitor.score("x", 1.0, trace_id="t") is False


def _wait_for(check: Any, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_scores_given_while_the_store_is_down_are_spooled_and_written_later(
    pg_cluster: Any, tmp_path: Path
) -> None:
    """PostgreSQL stopped: the scores go to the spool; once it is back, the
    spool is replayed and every score is in the table, once."""
    storage = StorageConfig(backend="postgres", connection_string=SecretStr(pg_cluster.dsn))
    pg_cluster.stop()
    try:
        llamonitor.initialize_monitoring(
            {
                "storage": {"backend": "postgres", "connection_string": pg_cluster.dsn},
                "spool_dir": str(tmp_path / "spool"),
                "max_retries": 0,
                "retry_backoff_seconds": 0.05,
                "retry_max_backoff_seconds": 0.2,
            }
        )
        for i in range(3):
            assert llamonitor.score("during_outage", float(i), trace_id=f"t{i}")
        assert llamonitor.flush(15.0).value
        spooled = [s for s in score_transport.health()["sinks"].values()]
        assert spooled and spooled[0]["spooled"] == 3
    finally:
        pg_cluster.start()
    rows = _wait_for(lambda: read_scores(storage).num_rows == 3 and read_scores(storage))
    assert rows, "the spooled scores were not replayed"
    assert sorted(rows.column("value").to_pylist()) == [0.0, 1.0, 2.0]
    llamonitor.score("during_outage", 1.0, trace_id="t1")  # again: replaces
    assert llamonitor.flush(15.0)
    assert read_scores(storage).num_rows == 3


def test_a_row_that_cannot_be_stored_is_dropped_alone(tmp_path: Path) -> None:
    """A queued row the table cannot hold (score() validates, so only a bug gets one
    there) is dropped and counted; the scores queued with it still land."""
    store = StorageConfig(output_dir=tmp_path)
    llamonitor.initialize_monitoring({"storage": {"output_dir": str(tmp_path)}})
    assert llamonitor.score("before", 1.0, trace_id="t-1")
    transport = score_transport._current
    assert transport is not None
    good = make_score("bad", 1.0, trace_id="t-1")
    assert transport.submit({**good, "value": "not a number"})
    assert llamonitor.score("after", 2.0, trace_id="t-1")
    assert llamonitor.flush(10.0)
    names = sorted(r["name"] for r in read_scores(store).to_pylist())
    assert names == ["after", "before"]
    assert score_transport.health()["dropped"] == 1
    assert score_transport.health()["queued"] == 0
