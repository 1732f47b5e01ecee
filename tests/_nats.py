"""NATS for the broker tests: the shared server, and private ones to kill.

The machine's shared NATS (127.0.0.1:4222, JetStream on) serves the tests
that leave it running; each of them uses streams of its own, deleted
afterwards. A test that must kill the broker starts :class:`NatsServer`, a
private ``nats-server -js`` with file storage in a temporary directory, on a
free port. A missing server or binary skips the test, or fails it when
``CI`` is set (the rule of ``_servers``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from _pgcluster import free_port
from _servers import unavailable

SHARED_URL = os.environ.get("LLMOPS_TEST_NATS_URL", "nats://127.0.0.1:4222")
START_TIMEOUT_SECONDS = 30.0


async def _connect(url: str) -> Any:
    import nats

    async def quiet(exc: Exception) -> None:
        pass

    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1,
        connect_timeout=5, error_cb=quiet,
    )


async def check_jetstream(url: str) -> None:
    """Raise unless ``url`` answers with JetStream enabled."""
    nc = await _connect(url)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


def require_shared() -> str:
    """The shared server's URL (skips, or fails in CI, when it does not answer)."""
    try:
        asyncio.run(check_jetstream(SHARED_URL))
    except Exception as exc:
        unavailable(f"NATS JetStream at {SHARED_URL}", repr(exc))
    return SHARED_URL


async def delete_streams(url: str, *names: str) -> None:
    import nats.js.errors

    nc = await _connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            try:
                await js.delete_stream(name)
            except nats.js.errors.NotFoundError:
                pass
    finally:
        await nc.close()


class NatsServer:
    """A private ``nats-server -js -sd <dir>`` that a test can kill and start again."""

    def __init__(self, store_dir: Path) -> None:
        self.binary = shutil.which("nats-server")
        if self.binary is None:
            unavailable("nats-server", "the binary is not installed (apt-get install nats-server)")
        self.store_dir = store_dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "nats-server.log"

    def start(self) -> None:
        assert self.binary is not None
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1",
                 "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                unavailable("a private nats-server", self.log.read_text(errors="replace")[-2000:])
            try:
                asyncio.run(check_jetstream(self.url))
                return
            except Exception as exc:
                last = exc
                time.sleep(0.1)
        unavailable("a private nats-server", f"no JetStream answer in time: {last!r}")

    def kill(self) -> None:
        """SIGKILL: what the server wrote is in its files, nothing else."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None
        # The port is free again once the kernel closed the listener.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def stop(self) -> None:
        self.kill()
