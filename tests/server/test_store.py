"""The server's store: pooled query objects and the time bound on each query."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from llamonitor.server import create_app, open_server_store
from llamonitor.server._deps import state
from llamonitor.server._store import QueryTimeout

ENDLESS = "SELECT count(*) AS n FROM {rel}, range(100000000000)"


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    from llamonitor.cli._demo import run_demo

    run_demo(tmp_path, 7, first_run=True)
    return tmp_path


def test_a_query_past_the_time_bound_is_interrupted_and_the_connection_reused(
    demo_dir: Path,
) -> None:
    store = open_server_store(demo_dir, workers=1, timeout_seconds=0.3)
    with pytest.raises(QueryTimeout, match="query_timeout_seconds"):
        store.run(ENDLESS)
    table = store.run("SELECT count(*) AS n FROM {rel}")  # the one connection still works
    assert table is not None and table.column("n")[0].as_py() > 0


def test_a_slow_query_is_a_503_naming_the_setting(demo_dir: Path) -> None:
    store = open_server_store(demo_dir, workers=1, timeout_seconds=0.3)
    guard = create_app(store)
    extra = APIRouter()

    @extra.get("/api/test-endless")
    def endless(request: Request) -> dict[str, int]:
        return {"n": len(state(request).store.rows(ENDLESS))}

    guard.app.include_router(extra)
    guard.app.router.routes.insert(0, guard.app.router.routes.pop())  # before the 404 catch-all
    response = TestClient(guard, base_url="http://127.0.0.1").get("/api/test-endless")
    assert response.status_code == 503
    assert "LLMOPS_SERVER__QUERY_TIMEOUT_SECONDS" in response.json()["error"]


def test_queries_run_side_by_side_on_the_pool(demo_dir: Path) -> None:
    store = open_server_store(demo_dir, workers=2, timeout_seconds=5.0)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            store.run(ENDLESS)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    while store._pool.qsize() == 2:  # until the endless query holds a connection
        threading.Event().wait(0.01)
    # While one connection is busy with the endless query, the other answers.
    assert store.rows("SELECT count(*) AS n FROM {rel}")[0]["n"] > 0
    assert t.is_alive()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], QueryTimeout)


def test_a_directory_not_written_yet_is_an_empty_store(tmp_path: Path) -> None:
    store = open_server_store(tmp_path / "not-yet")
    assert store.run("SELECT count(*) AS n FROM {rel}") is None
    health = TestClient(create_app(store), base_url="http://127.0.0.1").get("/api/health")
    assert health.json()["store"]["rows"] == 0
