"""A private PostgreSQL cluster, and a TCP proxy that can stall, for the fault tests.

The machine's shared server (127.0.0.1:5432) is used by other tests and
people, so the fault tests never stop it: :class:`PgCluster` runs a cluster of
its own from the real server binaries (``/usr/lib/postgresql/<version>/bin``),
in a temporary directory, on a free port, with trust logins and ``fsync=off``
(``synchronous_commit`` stays on: a killed server keeps every acknowledged commit),
and can stop it cleanly, kill it (SIGKILL to the postmaster and all its
processes) and start it again. As root (the tests' usual user here) the
server runs as the ``postgres`` OS user, since PostgreSQL refuses to run as
root.

:class:`StallProxy` forwards TCP connections to it, and on :meth:`~StallProxy.stall`
stops forwarding bytes in both directions while keeping every connection (and
new ones) open: a network that silently stops delivering.

Fixtures (``pytest_plugins = ["_pgcluster"]``): ``pg_cluster`` (one cluster
per test module), ``stall_proxy`` (a proxy to it, per test) and
``make_stall_proxy`` (proxies to any server, e.g. the shared MariaDB). If the
binaries are missing or the cluster does not start, the tests are skipped,
or failed when ``CI`` is set (the rule of ``_servers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

IN_CI = bool(os.environ.get("CI"))

START_TIMEOUT_SECONDS = 60
"""How long ``pg_ctl`` waits for the server to start or stop (under load too)."""

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # fsync=off loses nothing when only the server is killed (the kernel has
    # the WAL); synchronous_commit must stay on, or a SIGKILL would lose
    # commits the client was told about.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "40",
    "max_wal_size": "256MB",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def unavailable(reason: object) -> NoReturn:
    """Skip (or, in CI, fail) a test that needs the cluster."""
    message = f"a private PostgreSQL cluster cannot be started: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory, or None."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgCluster:
    """A PostgreSQL cluster of its own (see the module docstring).

    Args:
        bin_dir: where ``initdb``, ``pg_ctl`` and ``postgres`` are.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="llamonitor-pgfault-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    # -- commands ---------------------------------------------------------

    def _run(self, *args: str, timeout: float = START_TIMEOUT_SECONDS + 30) -> str:
        """Run a server program (as ``postgres`` when we are root); its output.

        Raises:
            RuntimeError: it failed (with its output and the server log's tail).
        """
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
                f"\n-- server log:\n{self.log_tail()}"
            )
        return proc.stdout

    def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own; its rows."""
        return asyncio.run(self._execute(sql, params))

    async def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def init(self) -> None:
        """``initdb`` the cluster and write its settings."""
        self.sockets.mkdir()
        if self._as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o755)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self._configure()

    def _configure(self) -> None:
        settings = {
            **SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        # postgresql.auto.conf is read last: it wins over postgresql.conf.
        (self.data / "postgresql.auto.conf").write_text(conf)

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_SECONDS), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Shut down cleanly (``pg_ctl stop -m fast``: sessions are terminated)."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
            "-t", str(START_TIMEOUT_SECONDS), "stop",
        )  # fmt: skip

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started (no clean
        shutdown: the next start runs crash recovery)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid, *_children(pid)]
        for p in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A dead postmaster stays a zombie until init reaps it, and PostgreSQL
        # takes the zombie for a live server holding the lock file. Every
        # process of the cluster is dead: the lock file is stale.
        deadline = time.monotonic() + 2
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        if os.path.exists(f"/proc/{pid}"):
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def cleanup(self) -> None:
        """Stop the server (as fast as possible) and remove the directory."""
        try:
            if self.running():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def start_cluster() -> Iterator[PgCluster]:
    """A running private cluster, removed afterwards (skipped, or failed in CI,
    if it cannot be had)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        unavailable("no initdb in /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser is missing (the server cannot run as root)")
    cluster = PgCluster(bin_dir)
    try:
        try:
            cluster.init()
            cluster.start()
        except Exception as exc:
            unavailable(exc)
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster for the module's tests (see :class:`PgCluster`);
    each test leaves it running."""
    yield from start_cluster()


@pytest.fixture
def stall_proxy(pg_cluster: PgCluster) -> Iterator[StallProxy]:
    """A :class:`StallProxy` to ``pg_cluster``, closed after the test."""
    with StallProxy("127.0.0.1", pg_cluster.port) as proxy:
        yield proxy


@pytest.fixture
def make_stall_proxy() -> Iterator[Callable[[str, int], StallProxy]]:
    """``make(host, port)``: a :class:`StallProxy` to any server, closed after the test."""
    made: list[StallProxy] = []

    def make(host: str, port: int) -> StallProxy:
        made.append(StallProxy(host, port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# -- the proxy ------------------------------------------------------------------


class StallProxy:
    """Forwards TCP connections from a local port to ``(host, port)``, one
    thread per direction; :meth:`stall` holds every byte (connections stay
    open, new ones are accepted and held too) until :meth:`resume`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, name="stall-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> StallProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def stall(self) -> None:
        """Stop forwarding (both directions, every connection)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, the held bytes first."""
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        with self._lock:
            _close(*self._sockets)
            self._sockets.clear()
        self._thread.join(5)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.connections += 1
            threading.Thread(
                target=self._open, args=(client,), name="stall-proxy-conn", daemon=True
            ).start()

    def _open(self, client: socket.socket) -> None:
        self._track(client)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Barrier(2, action=lambda: _close(client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(src, dst, done), name="stall-proxy-pump", daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        """Copy ``src`` to ``dst`` until EOF, holding the bytes while stalled."""
        try:
            while not self._closed.is_set():
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                while not self._flowing.wait(0.1):  # stalled: hold the bytes
                    if self._closed.is_set():
                        return
                dst.sendall(data)  # blocks while the reader is behind: TCP back-pressure
        except (OSError, ValueError):
            _close(src, dst)  # one side broke (or was closed): so does the connection
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait(timeout=30)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
        with contextlib.suppress(OSError):
            s.close()
