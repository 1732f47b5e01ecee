"""Shared fixtures.

Every test fails if monitoring swallowed an internal error during it (the
sentry-python ``internal_exceptions`` habit), unless the test takes the
``internal_errors`` fixture and inspects (and clears) the list itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamonitor
from llamonitor import _internal
from llamonitor.testing import capture_spans

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Reports remember candidate prices in a cache directory: the tests' own
    (also for the processes they start), not the user's."""
    old = os.environ.get("LLMOPS_CACHE_DIR")
    os.environ["LLMOPS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LLMOPS_CACHE_DIR", None)
    else:
        os.environ["LLMOPS_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def internal_errors() -> Iterator[list[tuple[str, BaseException]]]:
    errors = _internal.start_collecting()
    yield errors
    llamonitor.shutdown_monitoring(10.0)
    _internal.stop_collecting()
    _internal.set_fail_silently(True)
    if errors:
        kind, exc = errors[0]
        pytest.fail(f"monitoring swallowed {len(errors)} error(s); first in {kind}: {exc!r}")


@pytest.fixture
def spans() -> Iterator[llamonitor.InMemoryBackend]:
    """Monitoring into memory; call ``llamonitor.flush()`` before reading."""
    with capture_spans() as backend:
        yield backend


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A Parquet store directory for the test."""
    return tmp_path / "store"
