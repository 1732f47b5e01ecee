"""Schemathesis against the published ``/api/openapi.json`` over the demo store:
for every GET operation the schema lists, generated requests never get a 500,
and every answer conforms to the schema (status code, content type, body).

Bounded and reproducible: 30 derandomized valid requests per operation, and
30 invalid ones (those must get a 4xx). The live
tail (``/api/live/...``) is left out: its answer is a stream that does not end
(``test_live`` covers it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from llamonitor.server import create_app, open_server_store

STREAMS = r"^/api/live/"
EXAMPLES = 30
REJECTIONS = ["400", "401", "404", "413", "414"]
"""How an invalid request may be refused: a bad parameter, no token, an unknown
id, or the guard's bounds on the body and the query string (too long)."""
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


@pytest.fixture(scope="module")
def api_schema(demo_store: Path) -> Iterator[Any]:
    store = open_server_store(demo_store)
    schema = schemathesis.openapi.from_asgi(
        "/api/openapi.json", create_app(store), config=CONFIG, headers={"host": "127.0.0.1:8585"}
    )
    yield schema.include(method="GET").exclude(path_regex=STREAMS)
    store.close()


def no_nan(response: Any) -> None:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in the JSON body")

    if response.headers.get("content-type", [""])[0].startswith("application/json"):
        json.loads(response.text, parse_constant=refuse)


def fuzz(operation: Any, mode: GenerationMode) -> None:
    """30 derandomized requests of ``mode`` to ``operation``: no 500, and (for
    valid requests) an answer the schema describes."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        # A value the schema lets through may still be refused with a 400 naming it
        # (a time that is not one, a range upside down, a foreign cursor): that is
        # the contract, so "valid per the schema" need not mean 2xx.
        response = case.call_and_validate(
            headers={"host": "127.0.0.1:8585"}, excluded_checks=[positive_data_acceptance]
        )
        no_nan(response)
        assert response.status_code < 500, response.text

    run()


def test_no_500_and_answers_conform_to_the_schema(api_schema: Any) -> None:
    """Every GET operation of the schema (what other modules add included)."""
    failures: dict[str, BaseException] = {}
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode)
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # (negative: no parameter to make invalid, as for /api/health)
            except Exception as exc:  # every operation runs; all failures are reported
                failures[f"{operation.label} ({mode.value})"] = exc
    assert "GET /api/spans" in labels and "GET /api/sessions/{session_id}" in labels
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
