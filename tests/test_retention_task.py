"""The background retention task (``llamonitor.metrics._retention_task``) and
its place in ``serve``'s lifespan: runs on the interval, failures counted and
logged without ending anything, stopped with the app."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from _retention_data import T0, span_ids, span_times, write_spans
from llamonitor.metrics import RetentionConfig, RetentionTask, apply_retention
from llamonitor.schema.config import StorageConfig


def test_the_task_applies_the_policy_on_its_interval(tmp_path: Path) -> None:
    """Two runs a few milliseconds apart; the first removes the spans past
    the policy, the counters say so."""
    storage = StorageConfig(output_dir=tmp_path / "store")
    times = span_times(days=3, per_day=8, start=T0)
    write_spans(storage, times)
    now = T0 + timedelta(days=3)
    config = RetentionConfig(spans_days=1, interval_seconds=0.05)

    def apply(s: StorageConfig, c: RetentionConfig) -> Any:
        return apply_retention(s, c, now=now)

    async def go() -> dict[str, Any]:
        task = RetentionTask(storage, config, initial_delay_seconds=0, apply=apply).start()
        for _ in range(200):
            await asyncio.sleep(0.05)
            if task.runs >= 2:
                break
        await task.stop()
        return task.status()

    status = asyncio.run(go())
    assert status["runs"] >= 2 and status["failures"] == 0
    assert status["rows_removed"] == sum(1 for t in times if t < now - timedelta(days=1))
    assert status["running"] is False
    assert len(span_ids(storage)) == sum(1 for t in times if t >= now - timedelta(days=1))


def test_a_failing_run_is_counted_and_logged_and_the_next_one_still_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def apply(s: StorageConfig, c: RetentionConfig) -> Any:
        calls.append(1)
        raise OSError("disk gone")

    async def go() -> RetentionTask:
        task = RetentionTask(
            StorageConfig(output_dir="/nonexistent"),
            RetentionConfig(interval_seconds=0.02),
            initial_delay_seconds=0,
            apply=apply,
        ).start()
        for _ in range(200):
            await asyncio.sleep(0.02)
            if task.failures >= 3:
                break
        await task.stop()
        return task

    with caplog.at_level(logging.WARNING, logger="llamonitor.metrics.retention"):
        task = asyncio.run(go())
    assert task.failures >= 3 and len(calls) == task.runs
    assert task.last_error == "OSError: disk gone"
    assert "disk gone" in caplog.text


def test_serve_starts_the_task_with_its_lifespan_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LLMOPS_RETENTION__BACKGROUND=true``: the app's lifespan starts the task
    over the served store, ``/api/retention`` shows it, shutdown stops it;
    without the setting there is no task."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llamonitor.server._app import create_app
    from llamonitor.server._store import open_server_store

    storage = StorageConfig(output_dir=tmp_path / "store")
    write_spans(storage, span_times(days=1, per_day=4))
    store = open_server_store(tmp_path / "store", None, None, 1, 10.0)
    try:
        with TestClient(create_app(store), base_url="http://127.0.0.1:8585") as client:
            off = client.get("/api/retention").json()
        assert off["task"] is None and off["policy"]["background"] is False
        monkeypatch.setenv("LLMOPS_RETENTION__BACKGROUND", "true")
        monkeypatch.setenv("LLMOPS_RETENTION__INTERVAL_SECONDS", "1h")
        app = create_app(store)
        with TestClient(app, base_url="http://127.0.0.1:8585") as client:
            on = client.get("/api/retention").json()
            task = app.app.state.llamonitor.extras["retention"]  # type: ignore[attr-defined]
        assert on["task"]["running"] is True
        assert on["task"]["interval_seconds"] == 3600
        assert task.status()["running"] is False  # stopped with the app
    finally:
        store.close()


def test_a_bad_setting_leaves_the_task_off_and_the_server_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llamonitor.server._app import create_app
    from llamonitor.server._store import open_server_store

    storage = StorageConfig(output_dir=tmp_path / "store")
    write_spans(storage, span_times(days=1, per_day=4))
    monkeypatch.setenv("LLMOPS_RETENTION__BACKGROUND", "true")
    monkeypatch.setenv("LLMOPS_RETENTION__SPANS_DAYS", "-1")
    store = open_server_store(tmp_path / "store", None, None, 1, 10.0)
    try:
        with TestClient(create_app(store), base_url="http://127.0.0.1:8585") as client:
            body = client.get("/api/retention").json()
            assert client.get("/api/health").status_code == 200
        assert body["task"] is None
        assert "spans_days" in body["error"]
    finally:
        store.close()


def test_serve_applies_retention_to_the_table_of_its_table_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --dsn ... --table spans_x`` with no LLMOPS_STORAGE__TABLE_NAME:
    the background task's store is that table (a run over it removes its old spans)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llamonitor.server._app import create_app
    from llamonitor.server._store import open_server_store

    dsn = f"sqlite:///{tmp_path}/served.db"
    storage = StorageConfig(
        backend="sqlite", connection_string=SecretStr(dsn), table_name="spans_x"
    )
    times = span_times(days=4, per_day=4)
    write_spans(storage, times)
    monkeypatch.delenv("LLMOPS_STORAGE__TABLE_NAME", raising=False)
    monkeypatch.setenv("LLMOPS_RETENTION__BACKGROUND", "true")
    monkeypatch.setenv("LLMOPS_RETENTION__INTERVAL_SECONDS", "1h")
    store = open_server_store(tmp_path, dsn, "spans_x", 1, 10.0)
    try:
        app = create_app(store)
        with TestClient(app, base_url="http://127.0.0.1:8585"):
            task = app.app.state.llamonitor.extras["retention"]  # type: ignore[attr-defined]
    finally:
        store.close()
    assert task.storage.table_name == "spans_x"
    report = apply_retention(task.storage, RetentionConfig(spans_days=1), now=times[-1])
    assert report.tallies["spans"].rows == len(times) - len(span_ids(storage))
    assert 0 < len(span_ids(storage)) < len(times)


def test_watch_runs_retention_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``llamonitor watch`` gets a retention task over the store it watches when
    LLMOPS_RETENTION__BACKGROUND is on (none when off); a run removes what is past."""
    from llamonitor.cli._retention import watch_task
    from llamonitor.cli._watch import WATCH_TASKS, WatchContext

    assert watch_task in WATCH_TASKS
    storage = StorageConfig(output_dir=tmp_path / "store")
    times = span_times(days=3, per_day=4, start=datetime.now(timezone.utc) - timedelta(days=3))
    write_spans(storage, times)
    context = WatchContext(tmp_path / "store", None, None, None)
    assert watch_task(context) is None
    monkeypatch.setenv("LLMOPS_RETENTION__BACKGROUND", "true")
    monkeypatch.setenv("LLMOPS_RETENTION__SPANS_DAYS", "1")
    task = watch_task(context)
    assert task is not None and task.name == "retention"
    task.run()
    left = span_ids(storage)
    assert 0 < len(left) < len(times)
