"""The Metrics page in real Chromium: the list of metrics, and one drawn as a chart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from .conftest import off_loop, shot


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server over a store holding 30 minutes of a labelled counter and a histogram
    (one label value is markup: it must show as text)."""
    from llamonitor import metrics
    from llamonitor.metrics import write_points
    from llamonitor.metrics._registry import Registry
    from llamonitor.schema.config import StorageConfig
    from llamonitor.server import ServerConfig, start_server

    d = tmp_path_factory.mktemp("metrics-store")
    reg = Registry()
    c = metrics.counter("evaluations_total", labels=["model"], registry=reg)
    h = metrics.histogram("evaluation_duration_seconds", registry=reg)
    now = time.time()
    batches = []
    for i in range(180):
        c.labels(model="gpt-4o").inc(1 + i % 3)
        c.labels(model="<img src=x onerror=window.__xss=1>").inc()
        h.observe(0.1 + (i % 10) / 10)
        batches.append(reg.collect(now=now - 1800 + 10 * i))
    off_loop(write_points, StorageConfig(output_dir=d), pa.concat_tables(batches))
    handle = start_server(ServerConfig(port=0), directory=d)
    yield handle
    handle.stop()


def _url(server: Any, path: str) -> str:
    return str(server.url.rstrip("/") + path)


def test_the_metrics_page_lists_metrics_and_draws_a_series(page: Any, metrics_server: Any) -> None:
    """Nav -> Metrics -> a metric: its chart draws (a canvas), its series are listed,
    label values stay text."""
    page.goto(_url(metrics_server, "/"))
    page.click('#nav a[href="/series"]')
    page.wait_for_selector("a.metric-link", timeout=15_000)
    names = page.eval_on_selector_all("a.metric-link", "els => els.map(e => e.textContent)")
    assert names == ["evaluation_duration_seconds", "evaluations_total"]
    shot(page, "metrics-list")
    page.click('a.metric-link:text("evaluations_total")')
    page.wait_for_selector("canvas", timeout=15_000)
    page.wait_for_selector("text=model=gpt-4o")
    assert page.get_by_text("model=<img src=x onerror=window.__xss=1>").first.is_visible()
    assert page.evaluate("window.__xss") is None
    page.select_option('select[name="field"]', "rate")
    page.wait_for_url("**field=rate**")
    page.wait_for_selector("canvas")
    shot(page, "metrics-series")
    page.goto(_url(metrics_server, "/series/evaluation_duration_seconds?field=p99&step=5m"))
    page.wait_for_selector("canvas", timeout=15_000)
    shot(page, "metrics-histogram")
    assert page.problems == []
