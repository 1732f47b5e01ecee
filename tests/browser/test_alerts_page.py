"""The Alerts page in real Chromium: a server evaluating a rule file shows each rule's
state and figures, the alerts firing and pending, the history, and a notifier's error;
rule names and label values from the file and the store are shown as text, never run."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import shot, write_rows

HOSTILE_RULE = "<img src=x onerror=window.__xss=1>"
HOSTILE_MODEL = "<svg onload=window.__xss=2>"
WAIT_SECONDS = 60.0


def _closed_port() -> int:
    """A loopback port nothing listens on (the notifier's requests are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rules(path: Path) -> Path:
    rules = {
        "settings": {"interval": "1s"},
        "notifiers": [{"name": "ops-hook", "type": "webhook", "timeout": "2s",
                       "url": f"http://127.0.0.1:{_closed_port()}/hook"}],
        "rules": [
            {"name": HOSTILE_RULE, "metric": "latency_p95", "comparison": ">",
             "threshold": "1s", "window": "1h", "group_by": ["model"],
             "description": "p95 latency by model"},
            {"name": "errors climbing", "metric": "error_rate", "comparison": ">",
             "threshold": "50%", "window": "1h", "for": "1h"},
            {"name": "spend", "metric": "cost", "comparison": ">", "threshold": "$50",
             "window": "1d"},
        ],
    }
    # JSON is valid YAML: the rule file stays readable whatever the names hold.
    path.write_text(json.dumps(rules, indent=1), "utf-8")
    return path


@pytest.fixture(scope="module")
def alerts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server over spans of the last minutes: a slow model whose name is markup
    (its p95 rule fires), a fast one (ok), 60% errors (pending for 1 h), little cost."""
    from _helpers import span_row
    from llamonitor.server import ServerConfig, start_server

    now = datetime.now(timezone.utc)
    rows = []
    for i in range(40):
        slow = i % 2 == 0
        rows.append(span_row(
            i, timestamp=now - timedelta(minutes=10, seconds=-i),
            model=HOSTILE_MODEL if slow else "fast-model",
            duration_ms=2500.0 if slow else 200.0, error=i % 5 < 3, cost_usd=0.01,
        ))
    d = tmp_path_factory.mktemp("alerts-store")
    write_rows(d, rows)
    rules = _rules(tmp_path_factory.mktemp("alerts-rules") / "alerts.yaml")
    handle = start_server(ServerConfig(port=0, alert_rules=str(rules)), directory=d)
    try:
        yield handle
    finally:
        handle.stop()


def _wait_for(url: str, ready: Any) -> dict[str, Any]:
    """Poll GET /api/alerts until ``ready(body)``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        body: dict[str, Any] = httpx.get(url + "api/alerts", timeout=10).json()
        if ready(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts never got ready: {body}")
        time.sleep(0.2)


def test_the_alerts_page_shows_rules_alerts_history_and_errors(page: Any, alerts_server: Any
                                                              ) -> None:
    """Nav -> Alerts: the markup-named rule fires for the markup-named model (text, not
    markup), the error-rate rule is pending, spend is ok, the history holds the firing,
    and the refused webhook's error is shown."""
    base = alerts_server.url.rstrip("/") + "/"
    _wait_for(base, lambda b: any(n.get("last_error") for n in b["notifiers"]))
    page.goto(base)
    page.click('#nav a[href="/alerts"]')
    page.wait_for_url("**/alerts")
    page.wait_for_selector("table.rules-table", timeout=15_000)

    rules = page.locator("table.rules-table tbody tr")
    assert rules.count() == 3
    states = {row.locator(".rule-name").inner_text(): row.locator(".badge").inner_text()
              for row in rules.all()}
    assert states == {HOSTILE_RULE: "firing", "errors climbing": "pending", "spend": "ok"}
    hostile_row = rules.filter(has_text=HOSTILE_RULE)
    assert HOSTILE_MODEL in hostile_row.inner_text()  # the label value, as text
    # its p95 figure (the evaluator's percentiles are within 2%)
    assert re.search(r"model=<svg onload=window.__xss=2>: 2\.[45]\d s", hostile_row.inner_text())
    assert "$0.400" in rules.filter(has_text="spend").inner_text()  # 40 x $0.01: under $50

    current = page.locator("table.alerts-table tbody tr")
    assert current.count() == 2
    firing = current.filter(has_text="firing")
    assert f"model={HOSTILE_MODEL}" in firing.inner_text()
    assert "latency_p95 > 1.00 s over 1 h" in firing.inner_text()
    assert "60.0%" in current.filter(has_text="pending").inner_text()

    history = page.locator("table.history-table tbody tr")
    assert history.count() == 1
    assert "firing" in history.first.inner_text() and HOSTILE_RULE in history.first.inner_text()

    notifier = page.locator("table.notifiers-table tbody tr")
    assert "ops-hook" in notifier.inner_text()
    assert "unreachable" in notifier.locator(".notifier-error").inner_text()

    assert page.locator(".rule-name", has_text=HOSTILE_RULE).count() >= 3  # rules, alerts, history
    assert page.locator("img, svg[onload]").count() == 0
    assert page.evaluate("window.__xss") is None
    shot(page, "alerts")
    assert page.problems == []


def test_the_alerts_page_without_rules_says_how_to_turn_them_on(page: Any, tmp_path: Path
                                                                ) -> None:
    """A server started without --rules: the page says so instead of showing empty tables."""
    from _helpers import span_row
    from llamonitor.server import ServerConfig, start_server

    write_rows(tmp_path, [span_row(0)])
    handle = start_server(ServerConfig(port=0), directory=tmp_path)
    try:
        page.goto(handle.url.rstrip("/") + "/alerts")
        page.wait_for_selector(".empty", timeout=15_000)
        assert "--rules" in page.locator(".empty").inner_text()
        assert page.locator("table.rules-table").count() == 0
        assert page.problems == []
    finally:
        handle.stop()
