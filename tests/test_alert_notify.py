"""Webhook failures never show the webhook's secret: the error kept for the UI,
the state file, ``/api/alerts`` and the log name the scheme and host only."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from _alert_store import span, write_spans
from llamonitor.quality import _alert_notify as notify
from llamonitor.quality import parse_rules
from llamonitor.quality._alert_rules import Notifier
from llamonitor.quality._alert_watch import STATE_FILE_NAME, Watcher

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "T0AAA/B0BBB/XoXsEcReTtOkEn"
# Port 9 (discard) on loopback: the URL is refused before any connection (a space in it).
BAD_URL = f"http://127.0.0.1:9/services/{SECRET} x"


def _wait(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the notifier never failed")
        time.sleep(0.02)


def test_a_webhook_error_keeps_no_secret_of_its_url(
    store: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Slack-style URL with a stray space: urllib refuses it, quoting its path;
    the error in the log, the notifier's last_error, the state file's outbox and
    the snapshot (/api/alerts) keep its scheme and host, never the token."""
    monkeypatch.setattr(notify, "BACKOFF_FIRST_SECONDS", 60.0)  # one failure is enough
    rules = parse_rules({
        "rules": [{"name": "errors", "metric": "error_rate", "threshold": "20%",
                   "window": "1m"}],
        "notifiers": [{"name": "slack", "type": "slack", "url": BAD_URL}],
    })
    write_spans(store, [span(NOW + timedelta(seconds=i % 5), error=True) for i in range(10)])
    caplog.set_level(logging.WARNING, "llamonitor.alerts")
    with Watcher(rules, store) as w:
        w.evaluate(NOW + timedelta(seconds=6))
        (deliverer,) = w.deliverers
        _wait(lambda: deliverer.failures)
        error = deliverer.last_error
        assert error is not None and "InvalidURL" in error  # the failure is still said
        snapshot = w.snapshot()
        state = (store / STATE_FILE_NAME).read_text()
    (pending,) = snapshot["pending_notifications"]
    shown = [error, pending["last_error"], snapshot["notifiers"][0]["last_error"],
             json.dumps(json.loads(state)["outbox"]), caplog.text]
    for text in shown:
        assert "XoXsEcReTtOkEn" not in text and "/services/" not in text, text
    assert "http://127.0.0.1:9/…" in caplog.text


def test_redact_cuts_every_url_and_the_notifiers_secrets() -> None:
    """Any URL in an error is cut to scheme and host (port kept); the notifier's
    own path, query, password and header values go wherever they appear."""
    hook = Notifier(name="h", type="webhook", url="https://bot:pa55word@hooks.example.com:8443"
                    "/services/T1/B2/s3cr3t?token=abc123", headers={"authorization": "Bearer zz9"})
    text = ("POST https://hooks.example.com:8443/services/T1/B2/s3cr3t?token=abc123 failed; "
            "path '/services/T1/B2/s3cr3t' rejected, token=abc123, login pa55word, "
            "header b'Bearer zz9\\n'; see http://other.example/x/y?k=v")
    out = notify.redact(text, hook)
    for secret in ("s3cr3t", "abc123", "pa55word", "zz9", "/x/y", "k=v"):
        assert secret not in out
    assert "https://hooks.example.com:8443/…" in out and "http://other.example/…" in out
    assert notify.redact("refused by http://[::1/x", None) == "refused by http://…"
    assert notify.redact("no url here", hook) == "no url here"
