"""The guard every request passes: loopback by default, a token elsewhere, the
Content-Security-Policy and the bounds (the API's own answers are tested per endpoint)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from llamonitor.schema.config import ConfigurationError
from llamonitor.server import ServerConfig, create_app, open_server_store
from llamonitor.server._security import CONTENT_SECURITY_POLICY

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llamonitor.cli._demo import run_demo

    d = tmp_path_factory.mktemp("demo")
    run_demo(d, 7, first_run=True)
    return d


def client(directory: Path, base: str = "http://127.0.0.1:8585", **config: object) -> TestClient:
    store = open_server_store(directory)
    return TestClient(create_app(store, ServerConfig(**config)), base_url=base)  # type: ignore[arg-type]


def test_binding_off_loopback_without_a_token_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"server\.token") as info:
        ServerConfig(host="0.0.0.0").check()
    assert "LLMOPS_SERVER__TOKEN" in str(info.value)
    with pytest.raises(ConfigurationError, match="at least 16"):
        ServerConfig(host="0.0.0.0", token="short").check()
    assert ServerConfig(host="::1").check().host == "::1"  # loopback needs none


def test_on_loopback_only_a_local_host_header_is_answered(demo_dir: Path) -> None:
    assert client(demo_dir).get("/api/health").status_code == 200
    assert client(demo_dir, "http://localhost:8585").get("/api/health").status_code == 200
    rebound = client(demo_dir, "http://attacker.example:8585")
    for path in ("/api/health", "/", "/static/index.html"):
        response = rebound.get(path)
        assert response.status_code == 421, path
        assert "localhost" in response.json()["error"]


def test_with_a_token_every_request_must_carry_it(demo_dir: Path) -> None:
    c = client(demo_dir, "http://10.1.2.3:8585", host="0.0.0.0", token=TOKEN)
    for path in ("/api/health", "/api/openapi.json", "/", "/traces", "/static/index.html"):
        refused = c.get(path)
        assert refused.status_code == 401, path
        assert "token" in refused.json()["error"]
    wrong = {"Authorization": "Bearer wrong-token-000000000"}
    assert c.get("/api/health", headers=wrong).status_code == 401
    assert c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_token_in_the_url_becomes_a_cookie_and_leaves_the_url(demo_dir: Path) -> None:
    c = client(demo_dir, "http://10.1.2.3:8585", host="0.0.0.0", token=TOKEN)
    response = c.get(f"/traces?model=gpt-4o&token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/traces?model=gpt-4o"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    c.cookies.set("llamonitor_token", TOKEN)
    assert c.get("/api/health").status_code == 200
    assert c.get("/traces").status_code == 200


def test_another_site_s_page_cannot_call_the_api(demo_dir: Path) -> None:
    """A browser fetch from another site's page (Sec-Fetch-Site cross-site or
    same-site) is refused at /api/; the UI's own calls, a link followed by the user,
    the pages themselves and clients that send no such header pass."""
    c = client(demo_dir)
    for site in ("cross-site", "same-site"):
        for mode, path in (("cors", "/api/traces"), ("no-cors", "/api/health")):
            refused = c.get(path, headers={"sec-fetch-site": site, "sec-fetch-mode": mode})
            assert refused.status_code == 403 and "cross-site" in refused.json()["error"]
    own = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
    assert c.get("/api/traces", headers=own).status_code == 200
    link = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
    assert c.get("/api/health", headers=link).status_code == 200
    assert c.get("/", headers=link).status_code == 200
    assert c.get("/api/health").status_code == 200


def test_every_response_forbids_inline_script(demo_dir: Path) -> None:
    c = client(demo_dir)
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    paths = ("/", "/api/health", "/api/nothing-here", "/static/index.html", "/api/openapi.json")
    for path in paths:
        response = c.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_oversized_requests_are_refused(demo_dir: Path) -> None:
    c = client(demo_dir)
    assert c.get("/api/health?q=" + "x" * 9000).status_code == 414
    big = c.post("/api/health", content=b"x" * (2 * 1024 * 1024))
    assert big.status_code == 413


def test_the_api_is_read_only(demo_dir: Path) -> None:
    c = client(demo_dir)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert c.request(method, "/api/health").status_code == 405, method


def test_unknown_endpoints_are_404_json(demo_dir: Path) -> None:
    response = client(demo_dir).get("/api/no/such/thing")
    assert response.status_code == 404
    assert response.json()["error"].startswith("no such endpoint")


def test_the_ui_routes_serve_the_page(demo_dir: Path) -> None:
    c = client(demo_dir)
    pages = ("/", "/traces", "/traces/abc", "/sessions", "/sessions/alice-1", "/report", "/live")
    for path in pages:
        response = c.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "llamonitor.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_prints_its_url_and_answers_there(demo_dir: Path) -> None:
    proc = _serve("--dir", str(demo_dir), "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"llamonitor serving {demo_dir} at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        health = httpx.get(url + "api/health", timeout=10).json()
        assert health["store"]["rows"] > 0
        assert health["store"]["kind"] == "parquet"
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_refuses_a_public_address_without_a_token() -> None:
    proc = _serve("--host", "0.0.0.0", "--port", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "server.token" in err and "--token" in err


def test_serve_on_a_taken_port_names_the_port(demo_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _serve("--dir", str(demo_dir), "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "server.port" in err and str(port) in err


def test_serve_demo_starts_on_a_fresh_demo_store() -> None:
    proc = _serve("--demo", "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "llamonitor-demo-" in line, line
        url = line.rsplit(" ", 1)[1].strip()
        assert httpx.get(url + "api/health", timeout=10).json()["store"]["rows"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
