"""POST /api/scores and GET /api/scores, scores in the trace and span answers,
and the write guard a page of another site cannot pass."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.server.conftest import BASE_URL, RowStore

from _helpers import span_row

WRITE = {"content-type": "application/json", "x-llamonitor-write": "1"}


@pytest.fixture
def trace() -> str:
    """A trace id no other test (sharing the database's scores table) uses."""
    return secrets.token_hex(16)


@pytest.fixture
def scored(
    any_store: RowStore, client_for: Callable[..., TestClient], trace: str
) -> TestClient:
    any_store.write([span_row(1, trace_id=trace), span_row(2, trace_id=trace)])
    return client_for(any_store)


def test_a_posted_score_is_in_the_trace_span_and_list_answers(
    scored: TestClient, trace: str
) -> None:
    """Thumbs down with a comment on a trace, a judge's number on a span: the
    API lists them, the trace and the span answers carry them."""
    r = scored.post(
        "/api/scores",
        json={"name": "user_feedback", "value": 0, "comment": "wrong answer", "trace_id": trace},
        headers=WRITE,
    )
    assert r.status_code == 201, r.text
    assert r.json()["scores"][0]["target_found"] is True
    r = scored.post(
        "/api/scores",
        json={"scores": [{"name": "judge", "value": 0.4, "span_id": f"{2:016x}",
                          "source": "llm", "evaluator": "judge"}]},
        headers=WRITE,
    )
    assert r.status_code == 201, r.text
    listed = scored.get("/api/scores", params={"trace_id": trace}).json()["scores"]
    assert [(s["name"], s["value"], s["comment"]) for s in listed] == [
        ("user_feedback", 0.0, "wrong answer")
    ]
    tree = scored.get(f"/api/traces/{trace}").json()
    assert [s["name"] for s in tree["scores"]] == ["user_feedback"]
    assert tree["spans"]  # the tree is whole
    span = scored.get(f"/api/traces/{trace}/spans/{2:016x}").json()
    assert [(s["name"], s["source"]) for s in span["scores"]] == [("judge", "llm")]


def test_the_same_feedback_again_replaces_it(scored: TestClient, trace: str) -> None:
    for value in (1, 0, 1):
        body = {"name": "user_feedback", "value": value, "trace_id": trace, "evaluator": "ui"}
        assert scored.post("/api/scores", json=body, headers=WRITE).status_code == 201
    listed = scored.get("/api/scores", params={"trace_id": trace}).json()["scores"]
    assert [s["value"] for s in listed] == [1.0]


def test_a_score_for_an_unknown_trace_is_kept_and_flagged(scored: TestClient) -> None:
    ghost = secrets.token_hex(16)
    r = scored.post("/api/scores", json={"name": "n", "value": 1, "trace_id": ghost},
                    headers=WRITE)
    assert r.status_code == 201
    assert r.json()["scores"][0]["target_found"] is False
    listed = scored.get("/api/scores", params={"trace_id": ghost}).json()["scores"]
    assert len(listed) == 1 and listed[0]["target_found"] is False


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ('{"name": "n", "value": NaN, "trace_id": "t"}', "scores[0]"),
        ('{"name": "n", "value": Infinity, "trace_id": "t"}', "scores[0]"),
        ('{"name": "n", "value": 1}', "scores[0]"),
        ('{"name": "n", "value": 1, "trace_id": "t", "span_id": "s"}', "scores[0]"),
        ('{"name": "n", "label": "x", "trace_id": "t", "bogus": 1}', "scores[0].bogus"),
        ('{"scores": []}', "scores"),
        ("not json", "body"),
    ],
)
def test_bad_scores_are_answered_400_naming_the_problem(
    write_store: Callable[..., RowStore],
    client_for: Callable[..., TestClient],
    body: str,
    parameter: str,
) -> None:
    client = client_for(write_store("parquet"))
    r = client.post("/api/scores", content=body, headers=WRITE)
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == parameter
    assert client.get("/api/scores").json()["scores"] == []  # nothing was written


# -- the write guard: what a page of another site can send ----------------------


def _attack(client: TestClient, headers: dict[str, str], content: str) -> Any:
    return client.post("/api/scores", content=content, headers=headers)


FORM = '{"name": "evil", "value": 1, "trace_id": "t"}'


@pytest.mark.parametrize(
    "headers",
    [
        # <form enctype="text/plain"> or fetch(no-cors): a simple request, no preflight
        {"content-type": "text/plain", "origin": "http://evil.example"},
        {"content-type": "application/x-www-form-urlencoded"},
        # JSON without the custom header (what a simple request cannot add)
        {"content-type": "application/json"},
        # both, but from another origin (a preflight would have been refused)
        {**WRITE, "origin": "http://evil.example"},
        {**WRITE, "sec-fetch-site": "cross-site"},
        {**WRITE, "origin": "null"},
    ],
)
def test_a_cross_site_write_is_refused(
    write_store: Callable[..., RowStore],
    client_for: Callable[..., TestClient],
    headers: dict[str, str],
) -> None:
    client = client_for(write_store("parquet"))
    r = _attack(client, headers, FORM)
    assert r.status_code in (403, 415), r.text
    assert client.get("/api/scores").json()["scores"] == []


def test_no_cors_preflight_is_granted(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    """The preflight a cross-site JSON write needs is never granted."""
    client = client_for(write_store("parquet"))
    r = client.options(
        "/api/scores",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type,x-llamonitor-write"},
    )
    assert r.status_code >= 400
    assert "access-control-allow-origin" not in r.headers


def test_a_same_origin_write_passes(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(write_store("parquet"))
    headers = {**WRITE, "origin": BASE_URL, "sec-fetch-site": "same-origin"}
    assert _attack(client, headers, FORM).status_code == 201


def test_with_a_token_a_write_needs_it(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(write_store("parquet"), token="s3cret-s3cret-s3cret")
    assert _attack(client, WRITE, FORM).status_code == 401
    ok = _attack(client, {**WRITE, "authorization": "Bearer s3cret-s3cret-s3cret"}, FORM)
    assert ok.status_code == 201


def test_other_routes_still_refuse_writes(
    write_store: Callable[..., RowStore], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(write_store("parquet"))
    assert client.post("/api/spans", content=FORM, headers=WRITE).status_code == 405
    assert client.delete("/api/scores").status_code == 405
