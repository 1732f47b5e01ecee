"""Our OTLP exporter against a real Arize Phoenix (``phoenix serve``): the spans
show up in its REST API with the right model, tokens and parent links.

Phoenix is heavy (a ~850 MB environment, about 80 s of CPU to install, 20-40 s
to start here) and pins its own dependencies, so it lives in an environment of
its own: ``.ci/run`` builds one (``.venv-phoenix``) while lint and type checks
run, and points ``PHOENIX_BIN`` at its ``phoenix`` command. By hand::

    python -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix
    PHOENIX_BIN=.venv-phoenix/bin/phoenix python -m pytest tests/test_otlp_phoenix.py

(or have ``phoenix`` on the PATH). Without it the test is skipped; in CI (``CI``
set, or ``LLMOPS_PEERS=1``) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto")

from _helpers import span_row
from llamonitor.export import OTLPExporterConfig
from test_otlp_export import FULL_ROW, _table

START_TIMEOUT_SECONDS = 240.0  # a loaded CI machine: Phoenix imports a lot
PROJECT = "llamonitor-otlp-test"


def _phoenix_bin() -> str | None:
    given = os.environ.get("PHOENIX_BIN")
    if given:
        return given
    beside = Path(sys.executable).with_name("phoenix")
    if beside.exists():
        return str(beside)
    return shutil.which("phoenix")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    command = _phoenix_bin()
    if command is None:
        if os.environ.get("LLMOPS_PEERS") or os.environ.get("CI"):
            pytest.fail("in CI, but no phoenix command was found (PHOENIX_BIN; .ci/run "
                        "installs it into .venv-phoenix)")
        pytest.skip("Arize Phoenix is not installed (an opt-in peer: see the module docstring)")
    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",  # offline: no usage reports
    }
    log = (work / "phoenix.log").open("wb")
    proc = subprocess.Popen(
        [command, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work
    )
    base = f"http://127.0.0.1:{port}"
    try:
        pause = threading.Event()
        for _ in range(int(START_TIMEOUT_SECONDS / 0.5)):
            if proc.poll() is not None:
                pytest.fail(f"phoenix serve exited: {(work / 'phoenix.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            pause.wait(0.5)
        else:
            pytest.fail(f"phoenix serve did not answer within {START_TIMEOUT_SECONDS:g} s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.timeout(START_TIMEOUT_SECONDS + 120)  # the fixture's start counts too
def test_phoenix_shows_our_spans_with_model_tokens_and_parents(phoenix: str) -> None:
    """Phoenix reads our GenAI spans as an LLM span under an agent span, with
    the model, the token counts, the error status and the session."""
    root = span_row(
        9, trace_id=FULL_ROW["trace_id"], span_id="c3" * 8, session_id=FULL_ROW["session_id"],
        operation_type="agent_workflow", operation_name="plan",
    )
    sink = OTLPExporterConfig(
        endpoint=phoenix, resource_attributes={"openinference.project.name": PROJECT}
    ).create_backend()
    sink.write_table(_table([root, FULL_ROW]))
    sink.close()

    spans: dict[str, Any] = {}
    pause = threading.Event()
    for _ in range(100):  # Phoenix inserts in the background
        try:
            got = _get(f"{phoenix}/v1/projects/{PROJECT}/spans?limit=100")["data"]
        except OSError:
            got = []
        spans = {s["context"]["span_id"]: s for s in got}
        if len(spans) == 2:
            break
        pause.wait(0.2)
    assert set(spans) == {"c3" * 8, "b2" * 8}
    agent, llm = spans["c3" * 8], spans["b2" * 8]
    assert agent["name"] == "invoke_agent plan" and agent["span_kind"] == "AGENT"
    assert llm["name"] == "chat gpt-4o" and llm["span_kind"] == "LLM"
    assert llm["parent_id"] == "c3" * 8 and agent["parent_id"] is None
    assert llm["context"]["trace_id"] == agent["context"]["trace_id"] == "a1" * 16
    a = llm["attributes"]
    assert a["llm.model_name"] == "gpt-4o"
    assert a["llm.token_count.prompt"] == 120 and a["llm.token_count.completion"] == 40
    assert a["llm.token_count.prompt_details.cache_read"] == 100
    assert a["gen_ai.usage.cost"] == pytest.approx(0.0007)
    assert a["session.id"] == FULL_ROW["session_id"]
    assert llm["status_code"] == "ERROR" and llm["status_message"] == "slow down"
