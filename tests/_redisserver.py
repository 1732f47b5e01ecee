"""A private Redis server, for the tests that kill or restart the broker.

The machine's shared Redis (127.0.0.1:6379) is used by other tests, so a
fault test never stops it: :class:`RedisServer` runs ``redis-server`` of its
own on a free port, in a temporary directory, with the append-only file on
(``appendfsync always``: every write the server confirmed is on disk before
the reply, so a SIGKILL loses nothing it acknowledged), and can kill it
(SIGKILL) and start it again on the same port and directory (it reloads the
AOF). Missing ``redis-server`` skips the tests, or fails them when ``CI``
is set (the rule of ``_servers``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _pgcluster import free_port

IN_CI = bool(os.environ.get("CI"))
START_TIMEOUT_SECONDS = 30.0


def unavailable(reason: object) -> None:
    message = f"a private Redis server cannot be started: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class RedisServer:
    """``redis-server`` on a free port with AOF on (see the module docstring)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="llamonitor-redisfault-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=10)

    def start(self) -> None:
        """Start the server (reloading its AOF) and wait until it answers ``PING``."""
        import redis

        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.root), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--logfile", str(self.log), "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if self.client().ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running private :class:`RedisServer`, removed after the test."""

    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no redis-server on PATH (apt-get install redis-server)")
        raise AssertionError  # unreachable
    server = RedisServer(binary)
    try:
        try:
            server.start()
        except Exception as exc:
            unavailable(exc)
        yield server
    finally:
        server.cleanup()
