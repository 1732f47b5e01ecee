"""Real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright:
browser downloads are impossible here) against a real server on a free port.

Outside CI a missing Chromium skips these tests; in CI (``CI`` set) it fails them.
Each test saves a screenshot of the pages it saw to ``tests/browser/screenshots/``
(git-ignored), to look at.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

CHROMIUM = os.environ.get("LLAMONITOR_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent / "screenshots"


def off_loop(fn: Any, *args: Any) -> Any:
    """Run ``fn`` on a thread of its own: Playwright's sync API holds an event
    loop on this one, and the store's writers use ``asyncio.run``."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0] if out else None


def write_rows(directory: Path, rows: list[dict[str, Any]]) -> None:
    from llamonitor.schema._columns import SCHEMA
    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage.parquet import ParquetBackend

    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    backend = ParquetBackend(StorageConfig(output_dir=directory))
    off_loop(asyncio.run, backend.write_table(table))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, for this module only: Playwright's sync API runs an event loop on
    the main thread until it stops, and later tests call ``asyncio.run`` there."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page; console errors and page errors are collected in ``page.problems``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.problems = problems
    yield pg
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from llamonitor.cli._demo import run_demo
    from llamonitor.server import ServerConfig, start_server

    d = tmp_path_factory.mktemp("demo")
    off_loop(run_demo, d, 7, True)
    handle = start_server(ServerConfig(port=0), directory=d)
    handle.directory = d
    yield handle
    handle.stop()
