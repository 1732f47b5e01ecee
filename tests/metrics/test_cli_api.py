"""``llamonitor metrics`` and the /api/metrics endpoints over a real store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from llamonitor import metrics
from llamonitor.cli._app import cli
from llamonitor.metrics import write_points
from llamonitor.metrics._registry import Registry
from llamonitor.schema.config import StorageConfig


@pytest.fixture
def store_dir(tmp_path: Path, registry: Registry) -> Path:
    """The last 30 minutes of a counter by model and a histogram, every 10 s."""
    directory = tmp_path / "store"
    c = metrics.counter("evals_total", labels=["model"], registry=registry)
    h = metrics.histogram("lat_seconds", registry=registry)
    now = time.time()
    batches = []
    for i in range(180):
        c.labels(model="a").inc()
        c.labels(model="b").inc(2)
        h.observe(0.5)
        batches.append(registry.collect(now=now - 1800 + 10 * i))
    write_points(StorageConfig(output_dir=directory), pa.concat_tables(batches))
    return directory


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_metrics_list_and_query_json(store_dir: Path) -> None:
    """list names the metrics; query sums a counter's increases per step and label."""
    code, out = _run("metrics", "list", "--dir", str(store_dir), "--json")
    assert code == 0, out
    assert {m["name"]: m["kind"] for m in json.loads(out)} == {
        "evals_total": "counter",
        "lat_seconds": "histogram",
    }
    code, out = _run(
        "metrics",
        "query",
        "evals_total",
        "--dir",
        str(store_dir),
        "--since",
        "1h",
        "--step",
        "10m",
        "--label",
        "model=b",
        "--json",
    )
    assert code == 0, out
    res = json.loads(out)
    (series,) = res["series"]
    assert series["labels"] == {"model": "b"}
    assert sum(v for _, v in series["points"]) == 360  # every increment of 2, exactly once
    code, out = _run(
        "metrics",
        "query",
        "evals_total",
        "--dir",
        str(store_dir),
        "--by",
        "",
        "--field",
        "rate",
        "--step",
        "1h",
        "--json",
    )
    assert code == 0, out
    assert len(json.loads(out)["series"]) == 1


def test_metrics_query_table_and_errors(store_dir: Path) -> None:
    """The table shows the values; a bad step, field or label is a one-line error."""
    code, out = _run("metrics", "query", "lat_seconds", "--dir", str(store_dir), "--field", "p99")
    assert code == 0 and "lat_seconds (histogram, p99" in out
    code, out = _run("metrics", "query", "lat_seconds", "--dir", str(store_dir), "--step", "soon")
    assert code == 2 and "duration" in out
    code, out = _run("metrics", "query", "lat_seconds", "--dir", str(store_dir), "--field", "rise")
    assert code == 1 and "field" in out
    code, out = _run("metrics", "query", "x", "--dir", str(store_dir), "--label", "novalue")
    assert code == 2 and "key=value" in out
    code, out = _run("metrics", "list", "--dir", str(store_dir / "missing"))
    assert code == 1 and "no store" in out


def test_metrics_rollup_command(store_dir: Path) -> None:
    """`llamonitor metrics rollup` builds the levels once."""
    code, out = _run("metrics", "rollup", "--dir", str(store_dir), "--json")
    assert code == 0, out
    assert json.loads(out)["points"]["60"] > 0
    code, out = _run("metrics", "rollup", "--dir", str(store_dir), "--json")
    assert json.loads(out)["total"] == 0


@pytest.fixture
def client(store_dir: Path) -> TestClient:
    from llamonitor.server._app import create_app
    from llamonitor.server._store import open_server_store

    return TestClient(create_app(open_server_store(store_dir)).app)


def test_api_lists_and_serves_series(client: TestClient) -> None:
    """GET /api/metrics and /api/metrics/{name}/series answer what the store holds."""
    listing = client.get("/api/metrics").json()["metrics"]
    assert [m["name"] for m in listing] == ["evals_total", "lat_seconds"]
    res = client.get(
        "/api/metrics/evals_total/series", params={"start": "1h", "step": "5m", "by": "model"}
    ).json()
    assert res["kind"] == "counter" and res["field"] == "increase"
    totals = {s["labels"]["model"]: sum(v for _, v in s["points"]) for s in res["series"]}
    assert totals == {"a": 180, "b": 360}
    hist = client.get("/api/metrics/lat_seconds/series", params={"field": "p50"}).json()
    assert hist["series"][0]["points"][-1][1] == pytest.approx(0.5, rel=0.0101)
    assert client.get("/series/evals_total").status_code == 200  # the UI page


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"step": "soon"}, "step"),
        ({"step": "1s", "start": "1w"}, "step"),
        ({"start": "yesterday-ish"}, "start"),
        ({"start": "10m", "end": "1h"}, "end"),
        ({"label": "model"}, "label"),
        ({"label": "bad key=x"}, "label"),
        ({"by": "a-b"}, "by"),
        ({"field": "rise"}, "field"),
        ({"field": "p99"}, "field"),  # not a counter's field
        ({"resolution": "7"}, "resolution"),
    ],
)
def test_api_bad_parameters_are_400_naming_them(
    client: TestClient, params: dict[str, str], parameter: str
) -> None:
    """Every bad parameter is answered 400 with its name."""
    r = client.get("/api/metrics/evals_total/series", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == parameter


def test_api_bad_metric_name_is_400(client: TestClient) -> None:
    """A name that is not a metric name never reaches the store."""
    r = client.get("/api/metrics/x'%3B drop/series")
    assert r.status_code == 400 and r.json()["parameter"] == "name"
