"""The spool: an outage (at start, mid-run, a killed process) loses nothing, a
full or unwritable spool fails loudly but safely, rejected rows are kept with
their errors, and operators can see and replay it all from the command line."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import llamonitor
from _helpers import accounted, span_row
from llamonitor import (
    ConfigurationError,
    MonitorConfig,
    StorageConfig,
    initialize_monitoring,
    monitor_llm,
    shutdown_monitoring,
)
from llamonitor.cli import cli
from llamonitor.storage import parquet
from llamonitor.storage.base import RowsRejected
from llamonitor.storage.parquet import ParquetBackend
from llamonitor.transport import spool as _spool
from llamonitor.transport._sinks import is_transient

STORE = "test_spool:FlagStore"
TESTS_DIR = Path(__file__).parent


class FlagStore(ParquetBackend):
    """A real Parquet store with switches kept as files in its output_dir (so
    another process sees them too): ``DOWN`` makes it unreachable (connection
    refused, at initialize and on every write); rows of operation ``bad`` are
    rejected for their content, the rest of their batch written, unless an
    ``ACCEPT`` file exists."""

    def _flag(self, name: str) -> bool:
        return (self.root / name).exists()

    async def initialize(self) -> None:
        if self._flag("DOWN"):
            raise ConnectionRefusedError(111, "Connection refused")
        await super().initialize()

    async def write_table(self, table: pa.Table) -> None:
        if self._flag("DOWN"):
            raise ConnectionRefusedError(111, "Connection refused")
        if not self._flag("ACCEPT"):
            bad = pc.equal(table.column("operation_name"), "bad")
            if pc.any(bad).as_py():
                await super().write_table(table.filter(pc.invert(bad)))
                refused = table.filter(bad)
                errors = [
                    f"value out of range for column duration_ms: {d}"
                    for d in refused.column("duration_ms").to_pylist()
                ]
                raise RowsRejected(refused, errors)
        await super().write_table(table)


@monitor_llm(operation_name="op")
def op(i: int) -> int:
    return i


@monitor_llm(operation_name="bad")
def bad(i: int) -> int:
    return i


def _config(out: Path, **kw: Any) -> MonitorConfig:
    storage = StorageConfig(
        backend=kw.pop("backend", STORE),
        output_dir=out,
        batch_size=kw.pop("batch_size", 50),
        flush_interval_seconds=0.02,
    )
    kw.setdefault("retry_backoff_seconds", 0.01)
    kw.setdefault("retry_max_backoff_seconds", 0.05)
    kw.setdefault("max_retries", 2)
    return MonitorConfig(storage=storage, **kw)


def _down(out: Path, down: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    flag = out / "DOWN"
    if down:
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def _ids(out: Path) -> list[str]:
    """event_id of every row in the Parquet store (duplicates kept)."""
    ids: list[str] = []
    for f in parquet.data_files(out):
        ids += pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist()
    return ids


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _health() -> dict[str, Any]:
    writer = llamonitor.get_writer()
    assert writer is not None
    return dict(writer.health_check())


def _sink(h: dict[str, Any]) -> dict[str, Any]:
    return next(iter(h["sinks"].values()))  # type: ignore[no-any-return]




def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_an_outage_mid_run_loses_nothing_and_writes_each_event_once(tmp_path: Path) -> None:
    """Store down mid-run: events go to the spool; back up: every event written exactly once."""
    out = tmp_path / "store"
    writer = initialize_monitoring(_config(out))
    for i in range(100):
        op(i)
    assert llamonitor.flush(5)
    _down(out)
    for i in range(300):
        assert op(i) == i
    result = llamonitor.flush(5)
    assert result and result.spooled == 300
    h = _health()
    assert h["events_written"] == 100 and h["events_spooled"] == 300
    assert _sink(h)["outage"] and not h["backend_healthy"]
    assert _sink(h)["spool_bytes"] > 0
    assert accounted(h) == h["events_received"] == 400
    assert len(_ids(out)) == 100

    _down(out, False)
    assert _wait(lambda: _health()["events_spooled"] == 0)
    for i in range(50):
        op(i)
    assert shutdown_monitoring(10)
    h = writer.health_check()
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 450
    assert h["events_written"] == 450 and h["events_replayed"] == 300
    assert h["events_failed"] == 0 and not _sink(h)["outage"]
    assert accounted(h) == h["events_received"] == 450
    assert not _spool.segment_files(out / ".spool" / _spool.sink_dir_name(_config(out).storage))


def test_a_store_down_at_start_does_not_stop_monitoring(tmp_path: Path) -> None:
    """Connection refused at initialize: monitoring starts, spools, and catches up later."""
    out = tmp_path / "store"
    _down(out)
    writer = initialize_monitoring(_config(out))
    for i in range(120):
        assert op(i) == i
    assert llamonitor.flush(5).spooled == 120
    h = writer.health_check()
    assert _sink(h)["outage"] and "Connection refused" in _sink(h)["last_error"]
    _down(out, False)
    assert _wait(lambda: writer.health_check()["events_spooled"] == 0)
    assert shutdown_monitoring(10)
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 120
    assert writer.health_check()["events_written"] == 120


class BadSettings(ParquetBackend):
    async def initialize(self) -> None:
        raise ConfigurationError("storage.connection_string", "password authentication failed")


def test_a_configuration_error_at_start_still_fails_initialize(tmp_path: Path) -> None:
    """Only an unreachable store starts in outage mode; a wrong setting raises, named."""
    with pytest.raises(ConfigurationError, match="password authentication failed"):
        initialize_monitoring(_config(tmp_path, backend=BadSettings(), spool_enabled=True))


def _refused() -> BaseException:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise RuntimeError("driver: cannot connect") from exc
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError("connect timed out"), True),
        (OSError(113, "No route to host"), True),
        (_refused(), True),  # a driver's own error, caused by a refused connection
        (ConfigurationError("storage.backend", "bad"), False),
        (ImportError("No module named 'asyncpg'"), False),
        (PermissionError(13, "denied"), False),
        (ValueError("invalid DSN"), False),
    ],
)
def test_which_start_errors_mean_the_store_is_down(exc: BaseException, transient: bool) -> None:
    """Refused, timed out, unreachable (or caused by them): down; anything else: a setting."""
    assert is_transient(exc) is transient


def test_a_full_spool_warns_once_and_counts_the_rest_as_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past spool_max_bytes: one warning naming the directory and the limit; exact counts."""
    out = tmp_path / "store"
    _down(out)
    limit = 60_000
    writer = initialize_monitoring(_config(out, spool_max_bytes=limit))
    with caplog.at_level(logging.WARNING, logger="llamonitor"):
        for i in range(3000):
            assert op(i) == i
            if i % 50 == 49:
                assert llamonitor.flush(5)  # batches of 50, ~10 KB each in the spool
        assert shutdown_monitoring(10)
    h = writer.health_check()
    sink = _sink(h)
    assert sink["spool_full"] and 0 < h["events_spooled"] < 3000
    assert h["events_failed"] == sink["failed_reasons"]["spool_full"] > 0
    assert accounted(h) == h["events_received"] == 3000
    assert sink["spool_bytes"] <= limit
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1
    assert str(out / ".spool") in full[0].getMessage()
    assert "spool_max_bytes=60,000" in full[0].getMessage()


def _write_spool(directory: Path, records: int, rows: int) -> list[list[str]]:
    """``records`` records of ``rows`` rows each, in one segment; their event ids."""
    spool = _spool.Spool(directory, 10**9)
    ids = []
    for r in range(records):
        table = pa.Table.from_pylist(
            [span_row(r * rows + i) for i in range(rows)], schema=llamonitor.SCHEMA
        )
        spool.append(table)
        ids.append(table.column("event_id").to_pylist())
    spool.close()
    return ids


def _record_offsets(segment: Path) -> list[int]:
    data = segment.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        length = int.from_bytes(data[offset + 12 : offset + 16], "little")
        offset += _spool.HEADER_SIZE + length
    return offsets


def test_a_torn_tail_and_a_flipped_byte_lose_only_those_records(tmp_path: Path) -> None:
    """A half-written last record and a corrupted payload are skipped and counted;
    every complete record is written by the next start."""
    out = tmp_path / "store"
    storage = _config(out).storage
    directory = out / ".spool" / _spool.sink_dir_name(storage)
    ids = _write_spool(directory, records=5, rows=10)
    (segment,) = _spool.segment_files(directory)
    offsets = _record_offsets(segment)
    data = bytearray(segment.read_bytes())
    data[offsets[2] + _spool.HEADER_SIZE + 40] ^= 0xFF  # inside the third record's payload
    segment.write_bytes(bytes(data[:-7]))  # and the last record torn

    status = run("spool", "status", "--dir", out, "--json")
    assert status.exit_code == 0, status.output
    (sink,) = json.loads(status.output)["sinks"]
    assert sink["events"] == 30 and sink["corrupt_records"] == 2

    writer = initialize_monitoring(_config(out))
    assert _wait(lambda: _sink(writer.health_check())["recovered"] == 30)
    assert shutdown_monitoring(10)
    sink_health = _sink(writer.health_check())
    assert sink_health["corrupt_records"] == 2
    assert sorted(_ids(out)) == sorted(ids[0] + ids[1] + ids[3])
    assert not _spool.segment_files(directory)  # replayed: nothing left to keep


SIGKILL_SCRIPT = """
import sys, time
from llamonitor import MonitorConfig, StorageConfig, initialize_monitoring, monitor_llm

@monitor_llm(operation_name="op")
def op(i):
    return i

writer = initialize_monitoring(MonitorConfig(
    storage=StorageConfig(backend={store!r}, output_dir={out!r}, batch_size=50,
                          flush_interval_seconds=0.02),
    retry_backoff_seconds=0.01, retry_max_backoff_seconds=0.05, max_retries=1,
))
for i in range({n}):
    op(i)
deadline = time.monotonic() + 60
while writer.health_check()["events_spooled"] < {n} and time.monotonic() < deadline:
    time.sleep(0.01)
print("spooled", writer.health_check()["events_spooled"], flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["next start", "spool replay"])
def test_events_spooled_by_a_killed_process_are_written_later(tmp_path: Path, how: str) -> None:
    """SIGKILL while the store is down: the next start (or `spool replay`) writes all N."""
    out, n = tmp_path / "store", 1000
    _down(out)
    script = SIGKILL_SCRIPT.format(store=STORE, out=str(out), n=n)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["spooled", str(n)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert _ids(out) == []
    _down(out, False)
    if how == "next start":
        writer = initialize_monitoring(_config(out))
        assert _wait(lambda: _sink(writer.health_check())["recovered"] == n)
        assert shutdown_monitoring(10)
    else:
        result = run("spool", "replay", "--backend", STORE, "--dir", out, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["events_written"] == n
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == n


def test_rejected_rows_are_kept_with_their_errors_and_replayed_on_request(tmp_path: Path) -> None:
    """Rows the store refuses are isolated (the rest written), kept with the store's
    error, listed by `spool status`, and written by `spool replay --rejected`."""
    out = tmp_path / "store"
    writer = initialize_monitoring(_config(out, batch_size=10_000))
    for i in range(40):
        op(i)
        if i % 10 == 0:
            bad(i)
    assert llamonitor.flush(5)
    h = writer.health_check()
    assert h["events_written"] == 40 and h["events_rejected"] == 4
    assert h["events_failed"] == 0 and _sink(h)["healthy"]
    assert accounted(h) == h["events_received"] == 44
    assert len(_ids(out)) == 40
    assert shutdown_monitoring(10)

    status = run("spool", "status", "--dir", out, "--json")
    (sink,) = json.loads(status.output)["sinks"]
    assert sink["events"] == 0 and len(sink["rejected_rows"]) == 4
    assert {r["operation_name"] for r in sink["rejected_rows"]} == {"bad"}
    assert all("out of range" in r["error"] for r in sink["rejected_rows"])
    text = run("spool", "status", "--dir", out)
    assert "out of range for column duration_ms" in text.output

    # Not replayed automatically (they would fail again) ...
    plain = run("spool", "replay", "--backend", STORE, "--dir", out, "--json")
    assert json.loads(plain.output)["events_written"] == 0
    # ... but on request, once the store accepts them.
    (out / "ACCEPT").touch()
    again = run("spool", "replay", "--backend", STORE, "--dir", out, "--rejected")
    assert again.exit_code == 0, again.output
    assert "wrote 4 events" in again.output
    assert len(set(_ids(out))) == 44
    (sink,) = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"]
    assert sink["rejected_rows"] == []


def test_an_unwritable_spool_counts_failed_warns_once_and_the_sink_survives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool directory that cannot be created: exact failed counts, one warning,
    and the sink writes again once the store is back."""
    out = tmp_path / "store"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    _down(out)
    writer = initialize_monitoring(_config(out, spool_dir=blocker / "spool"))
    with caplog.at_level(logging.WARNING, logger="llamonitor"):
        for i in range(200):
            assert op(i) == i
        assert llamonitor.flush(5)
    h = writer.health_check()
    assert h["events_failed"] == _sink(h)["failed_reasons"]["spool_error"] == 200
    assert h["events_spooled"] == 0 and _sink(h)["running"]
    assert len([r for r in caplog.records if "cannot write the spool" in r.getMessage()]) == 1
    _down(out, False)
    time.sleep(0.1)  # past the recovery probe's delay: the next batch is the probe
    for i in range(30):
        op(i)
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_written"] == 30 == len(_ids(out))
    assert accounted(h) == h["events_received"] == 230


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_a_read_only_spool_directory_counts_failed(tmp_path: Path) -> None:
    """chmod 0o500 spool directory: events counted failed, nothing raised."""
    out, spool_dir = tmp_path / "store", tmp_path / "spool"
    spool_dir.mkdir(mode=0o500)
    _down(out)
    writer = initialize_monitoring(_config(out, spool_dir=spool_dir))
    for i in range(50):
        op(i)
    assert shutdown_monitoring(10)
    assert writer.health_check()["events_failed"] == 50


def test_a_spool_dir_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    """spool_dir naming a file fails at initialize, naming the setting."""
    path = tmp_path / "spool"
    path.write_text("")
    with pytest.raises(ConfigurationError, match="spool_dir"):
        initialize_monitoring(_config(tmp_path / "store", spool_dir=path))


def test_application_calls_stay_fast_while_the_store_is_down(tmp_path: Path) -> None:
    """During an outage the spool is written by the sink thread: p99 of a call < 50 ms."""
    out = tmp_path / "store"
    _down(out)
    writer = initialize_monitoring(_config(out, batch_size=20))
    times = []
    for i in range(2000):
        start = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - start)
    assert shutdown_monitoring(10)
    times.sort()
    assert times[int(len(times) * 0.99)] < 0.05
    h = writer.health_check()
    assert h["events_spooled"] == 2000 and h["events_failed"] == 0


def test_spool_replay_exits_non_zero_while_the_store_is_down(tmp_path: Path) -> None:
    """`spool replay` against a store still down: exit 1, the spool untouched."""
    out = tmp_path / "store"
    _down(out)
    initialize_monitoring(_config(out))
    for i in range(70):
        op(i)
    assert shutdown_monitoring(10)
    before = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"][0]
    result = run("spool", "replay", "--backend", STORE, "--dir", out)
    assert result.exit_code == 1
    assert "unreachable" in result.output and "left as it is" in result.output
    after = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"][0]
    assert after["events"] == before["events"] == 70
    text = run("spool", "status", "--dir", out)
    assert text.exit_code == 0 and "70" in text.output and "test_spool" in text.output


def test_a_batch_the_store_always_refuses_does_not_hold_the_sink_down(tmp_path: Path) -> None:
    """A spooled batch that fails while other writes succeed ends up rejected, with its
    error; every other event is written."""

    class Poison(FlagStore):
        async def write_table(self, table: pa.Table) -> None:
            if "poison" in table.column("operation_name").to_pylist():
                raise ValueError("value too long for type character varying(64)")
            await super().write_table(table)

    @monitor_llm(operation_name="poison")
    def poison() -> None:
        pass

    out = tmp_path / "store"
    writer = initialize_monitoring(
        _config(out, backend=Poison(StorageConfig(output_dir=out)), spool_enabled=True,
                batch_size=10_000)
    )
    poison()
    assert llamonitor.flush(5).spooled == 1
    rounds = 0
    while rounds < 20 and not writer.health_check()["events_rejected"]:
        rounds += 1
        for i in range(10):
            op(i)
        assert llamonitor.flush(5)
        time.sleep(0.06)  # past the probe delay
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_rejected"] == 1 and h["events_spooled"] == 0
    assert h["events_written"] == len(_ids(out)) == 10 * rounds
    assert accounted(h) == h["events_received"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_and_its_parent_share_a_spool_without_harm(tmp_path: Path) -> None:
    """Parent and child spool into one directory during an outage; afterwards the
    parent writes both processes' events, each once."""
    out = tmp_path / "store"
    _down(out)
    writer = initialize_monitoring(_config(out))
    for i in range(100):
        op(i)
    assert llamonitor.flush(5).spooled == 100
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for i in range(60):
                op(i)
            code = 0 if shutdown_monitoring(20) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(40):
        op(i)
    assert llamonitor.flush(5).spooled == 140
    _down(out, False)
    assert _wait(lambda: _sink(writer.health_check())["replayed"] == 200)
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert _sink(h)["recovered"] == 60 and h["events_written"] == 140
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 200


# -- regressions from the review of the spool ------------------------------------


class Refuses(FlagStore):
    """Refuses a batch holding a ``poison`` span for its content (a plain
    ``ValueError``: not a connection error, and not isolated by row); with a
    ``REFUSE_ALL`` file, refuses every batch that way."""

    async def write_table(self, table: pa.Table) -> None:
        if not self._flag("DOWN") and (
            self._flag("REFUSE_ALL") or "poison" in table.column("operation_name").to_pylist()
        ):
            raise ValueError("value too long for type character varying(64)")
        await super().write_table(table)


class Flaky(FlagStore):
    """With a ``FLAKY`` file, every other write fails: connection reset."""

    calls = 0

    async def write_table(self, table: pa.Table) -> None:
        if self._flag("FLAKY"):
            Flaky.calls += 1
            if Flaky.calls % 2:
                raise ConnectionResetError(104, "Connection reset by peer")
        await super().write_table(table)


class HangsAtConnect(FlagStore):
    """``initialize`` hangs until ``release`` is set (a connect timeout)."""

    release = threading.Event()

    async def initialize(self) -> None:
        HangsAtConnect.release.wait(60)
        await super().initialize()


class HangingProbe(FlagStore):
    """Refuses the first connection; every later ``initialize`` (the recovery
    probe) hangs until ``release`` is set, then is refused too."""

    calls = 0
    hanging = threading.Event()
    release = threading.Event()

    async def initialize(self) -> None:
        HangingProbe.calls += 1
        if HangingProbe.calls > 1:
            HangingProbe.hanging.set()
            HangingProbe.release.wait(60)
        raise ConnectionRefusedError(111, "Connection refused")


class Gated(FlagStore):
    """With a ``GATED`` file, every write hangs until ``gate`` is set (a slow store)."""

    gate = threading.Event()
    waiting = threading.Event()

    async def write_table(self, table: pa.Table) -> None:
        if self._flag("GATED"):
            Gated.waiting.set()
            Gated.gate.wait(60)
        await super().write_table(table)


@monitor_llm(operation_name="poison")
def poison() -> None:
    pass


def _spool_dir(out: Path, backend: str = STORE) -> Path:
    return out / ".spool" / _spool.sink_dir_name(StorageConfig(backend=backend, output_dir=out))


def _table(first: int, rows: int, **values: Any) -> pa.Table:
    return pa.Table.from_pylist(
        [span_row(first + i, **values) for i in range(rows)], schema=llamonitor.SCHEMA
    )


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_keep_the_parents_replay_segment_locked(tmp_path: Path) -> None:
    """The child closes its copies of a replay cursor's segment (descriptor and map):
    once the parent lets the segment go, it can be taken again while the child lives."""
    directory = tmp_path / "spool"
    _write_spool(directory, records=3, rows=5)
    spool = _spool.Spool(directory, 10**9)
    cursor = spool.cursor()
    assert cursor.next() is not None  # the cursor holds the segment's lock now
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: lives on, with whatever it kept, until told
        os.close(w)
        os.write(ready_w, b"r")  # the at-fork hooks have run
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r"
        os.close(ready_r)
        cursor.close()
        (segment,) = _spool.segment_files(directory)
        fd = os.open(segment, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the child holds it
        finally:
            os.close(fd)
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)
    spool.close()


def test_a_pass_that_met_a_locked_segment_keeps_the_backlog(tmp_path: Path) -> None:
    """A segment someone holds for a moment is looked at again: the backlog stays."""
    directory = tmp_path / "spool"
    _write_spool(directory, records=2, rows=5)
    (segment,) = _spool.segment_files(directory)
    spool = _spool.Spool(directory, 10**9)
    fd = os.open(segment, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as another reader would
        cursor = spool.cursor()
        assert cursor.next() is None and cursor.skipped_locked == 1
        cursor.close()
        assert spool.backlog
    finally:
        os.close(fd)
    cursor = spool.cursor()
    assert cursor.next() is not None
    cursor.close()
    spool.close()


def test_a_segment_locked_at_start_is_replayed_soon_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment locked when the sink first looks (another replayer, a reader) is
    replayed once released, without waiting for the five-minute rescan."""
    monkeypatch.setattr("llamonitor.transport.spool._spooling.LOCKED_RETRY_SECONDS", 0.2)
    out = tmp_path / "store"
    _down(out)
    initialize_monitoring(_config(out))
    for i in range(100):
        op(i)
    assert shutdown_monitoring(10)
    (segment,) = _spool.segment_files(_spool_dir(out))
    _down(out, False)
    fd = os.open(segment, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        writer = initialize_monitoring(_config(out))
        time.sleep(0.5)  # the sink's first replay pass meets the lock
    finally:
        os.close(fd)
    assert _wait(lambda: _sink(writer.health_check())["recovered"] == 100)
    assert len(set(_ids(out))) == 100


def test_a_refused_batch_at_the_head_of_the_spool_does_not_stall_an_idle_sink(
    tmp_path: Path,
) -> None:
    """A spooled batch the store refuses (not a connection error) first in line, and no
    new traffic: everything behind it is written, and it ends up rejected with its error."""
    out = tmp_path / "store"
    backend = "test_spool:Refuses"
    _down(out)
    writer = initialize_monitoring(_config(out, backend=backend))
    poison()
    assert llamonitor.flush(5).spooled == 1
    for i in range(200):
        op(i)
        if i % 50 == 49:
            assert llamonitor.flush(5)
    _down(out, False)  # the store is back; the application is idle from now on
    assert _wait(lambda: writer.health_check()["events_spooled"] == 0, timeout=30)
    h = writer.health_check()
    assert h["events_rejected"] == 1 and h["events_written"] == 200
    assert accounted(h) == h["events_received"] == 201
    assert len(set(_ids(out))) == 200
    assert shutdown_monitoring(10)
    (sink,) = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"]
    (row,) = sink["rejected_rows"]
    assert row["operation_name"] == "poison" and "value too long" in row["error"]


def test_spool_replay_sets_aside_a_record_the_store_keeps_refusing(tmp_path: Path) -> None:
    """`spool replay` passes a refused record by, writes the rest, and keeps the refused
    one with the rejected rows and the store's error: the next run does not stop there."""
    out = tmp_path / "store"
    backend = "test_spool:Refuses"
    directory = _spool_dir(out, backend)
    spool = _spool.Spool(directory, 10**9)
    spool.append(_table(0, 10))
    spool.append(_table(10, 1, operation_name="poison"))
    spool.append(_table(20, 10))
    spool.close()
    result = run("spool", "replay", "--backend", backend, "--dir", out, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["events_written"] == 20 and got["set_aside"] == 1 and got["events_left"] == 0
    assert len(_ids(out)) == 20
    (sink,) = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"]
    assert [r["event_id"] for r in sink["rejected_rows"]] == ["e000010"]
    assert "value too long" in sink["rejected_rows"][0]["error"]
    again = run("spool", "replay", "--backend", backend, "--dir", out)
    assert again.exit_code == 0 and "wrote 0 events" in again.output


def test_spool_replay_leaves_the_spool_alone_when_the_store_refuses_everything(
    tmp_path: Path,
) -> None:
    """Every record refused, nothing written: not a bad record but a bad store: exit 1,
    nothing set aside."""
    out = tmp_path / "store"
    backend = "test_spool:Refuses"
    _write_spool(_spool_dir(out, backend), records=3, rows=5)
    (out / "REFUSE_ALL").touch()
    result = run("spool", "replay", "--backend", backend, "--dir", out)
    assert result.exit_code == 1
    assert "refused every record" in result.output and "left as it is" in result.output
    (sink,) = json.loads(run("spool", "status", "--dir", out, "--json").output)["sinks"]
    assert sink["events"] == 15 and sink["rejected_rows"] == []


def test_spool_replay_reports_a_spool_it_cannot_write_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping rejected rows fails (disk full): a clean error, exit 1, the record kept."""
    out = tmp_path / "store"
    directory = _spool_dir(out)
    spool = _spool.Spool(directory, 10**9)
    spool.append(_table(0, 3, operation_name="bad"))
    spool.close()

    def no_space(*args: Any, **kwargs: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_spool.Spool, "append", no_space)
    result = run("spool", "replay", "--backend", STORE, "--dir", out)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert _spool.inspect(directory).events == 3


def test_a_spool_deleted_underneath_is_noticed_and_counted(tmp_path: Path) -> None:
    """`rm -rf` of the spool while the sink appends: the events in it are counted lost
    (failed), later ones go to a new segment, and flush() says only what is on disk."""
    out = tmp_path / "store"
    _down(out)
    writer = initialize_monitoring(_config(out))
    for i in range(100):
        op(i)
    assert llamonitor.flush(5).spooled == 100
    shutil.rmtree(out / ".spool")
    for i in range(100):
        op(i)
    result = llamonitor.flush(5)
    assert result and result.spooled == 100
    assert len(_spool.segment_files(_spool_dir(out))) == 1
    h = writer.health_check()
    assert h["events_failed"] == _sink(h)["failed_reasons"]["spool_lost"] == 100
    assert accounted(h) == h["events_received"] == 200
    _down(out, False)
    assert _wait(lambda: writer.health_check()["events_spooled"] == 0)
    assert shutdown_monitoring(10)
    assert len(set(_ids(out))) == 100


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("host=db user=app password=s3cret dbname=prod", "s3cret"),
        ("scott/t1ger@db.example:1521/orcl", "t1ger"),
        ("Driver={ODBC Driver 18};Server=db;Uid=app;Pwd=s3cret;", "s3cret"),
        ("postgresql://app:s3cret@db/prod?sslpassword=k3yp4ss", "k3yp4ss"),
        ("postgresql://app:s3cret@db/prod?sslpassword=k3yp4ss", "s3cret"),
        ("postgresql://app:123/s3cret@db/prod", "s3cret"),
    ],
)
def test_no_password_reaches_identity_json_or_the_cli(
    tmp_path: Path, dsn: str, secret: str
) -> None:
    """Whatever the connection string's form, its password is never shown or stored."""
    storage = StorageConfig(backend="mypkg.store:Store", connection_string=dsn)
    identity = _spool.sink_identity(storage)
    assert secret not in json.dumps(identity) and secret not in _spool.sink_dir_name(storage)
    if dsn.startswith("postgresql://"):
        assert identity["dsn"] == "postgresql://app@db/prod"
    directory = tmp_path / ".spool" / _spool.sink_dir_name(storage)
    spool = _spool.Spool(directory, 10**9, identity)
    spool.append(_table(0, 2))
    spool.close()
    assert secret not in (directory / "identity.json").read_text()
    text = run("spool", "status", "--dir", tmp_path)
    assert text.exit_code == 0 and secret not in text.output


def test_spool_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Segments and identity.json may hold captured prompts: 0o600 (the directory 0o700)."""
    directory = tmp_path / "spool" / "sink"
    spool = _spool.Spool(directory, 10**9, {"backend": "parquet"})
    spool.append(_table(0, 2))
    spool.close()
    (segment,) = _spool.segment_files(directory)
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "identity.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_new_segment_is_fsynced_into_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating (renaming) a segment fsyncs the directory, so a power loss keeps its name."""
    synced_dirs: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced_dirs.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    spool = _spool.Spool(tmp_path / "spool", 10**9)
    monkeypatch.setattr(os, "fsync", fsync)
    spool.append(_table(0, 2))
    assert any(synced_dirs)
    spool.close()


def test_stores_that_differ_in_options_or_dsn_parameters_get_their_own_spool() -> None:
    """Options and connection parameters pick the store: they pick the spool too;
    a changed password does not (the spool of the same store is found again)."""
    name = _spool.sink_dir_name

    def pg(dsn: str, **kw: Any) -> StorageConfig:
        return StorageConfig(backend="postgres", connection_string=dsn, **kw)

    a = StorageConfig(backend="mypkg.store:Store", options={"sub": "A"})
    b = StorageConfig(backend="mypkg.store:Store", options={"sub": "B"})
    assert name(a) != name(b)
    assert name(pg("postgresql://app:pw@db/prod?options=-csearch_path%3Da")) != name(
        pg("postgresql://app:pw@db/prod?options=-csearch_path%3Db")
    )
    assert name(pg("host=db dbname=a password=pw")) != name(pg("host=db dbname=b password=pw"))
    assert name(pg("postgresql://app:one@db/prod")) == name(pg("postgresql://app:two@db/prod"))
    assert name(pg("host=db password=one")) == name(pg("host=db password=two"))
    assert name(pg("postgresql://db/p", options={"password": "x", "sslmode": "require"})) == name(
        pg("postgresql://db/p", options={"password": "y", "sslmode": "require"})
    )


def test_a_flapping_store_never_turns_healthy_batches_into_rejected_rows(
    tmp_path: Path,
) -> None:
    """Connection resets on every other write while the spool replays: no strikes for
    transient errors, so every event is written once and nothing is rejected."""
    out = tmp_path / "store"
    backend = "test_spool:Flaky"
    Flaky.calls = 0
    _down(out)
    writer = initialize_monitoring(_config(out, backend=backend))
    for i in range(500):
        op(i)
        if i % 50 == 49:
            assert llamonitor.flush(5)
    (out / "FLAKY").touch()
    _down(out, False)
    for _ in range(20):
        for i in range(10):
            op(i)
        assert llamonitor.flush(5)
        time.sleep(0.06)
    assert _wait(lambda: writer.health_check()["events_spooled"] == 0, timeout=30)
    assert shutdown_monitoring(10)
    h = writer.health_check()
    assert h["events_rejected"] == 0 and h["events_failed"] == 0
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 700


def test_a_store_that_hangs_at_connect_starts_monitoring_in_outage_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """initialize hanging past INITIALIZE_TIMEOUT_SECONDS, with a spool: monitoring
    starts, spools, and catches up when the connection finally works."""
    from llamonitor.transport import _sinks

    monkeypatch.setattr(_sinks, "INITIALIZE_TIMEOUT_SECONDS", 0.3)
    HangsAtConnect.release.clear()
    out = tmp_path / "store"
    try:
        writer = initialize_monitoring(_config(out, backend="test_spool:HangsAtConnect"))
        h = writer.health_check()
        assert _sink(h)["outage"] and "did not finish" in _sink(h)["last_error"]
        for i in range(50):
            op(i)
        assert llamonitor.flush(5).spooled == 50
    finally:
        HangsAtConnect.release.set()
    assert _wait(lambda: writer.health_check()["events_spooled"] == 0)
    assert shutdown_monitoring(10)
    assert len(set(_ids(out))) == 50


def test_a_hanging_probe_does_not_stop_spooling(tmp_path: Path) -> None:
    """While the recovery probe hangs (a connect timeout), new batches still reach the
    spool: flush returns, nothing is dropped."""
    HangingProbe.calls = 0
    HangingProbe.hanging.clear()
    HangingProbe.release.clear()
    out = tmp_path / "store"
    try:
        writer = initialize_monitoring(_config(out, backend="test_spool:HangingProbe"))
        assert HangingProbe.hanging.wait(20)  # the probe hangs from now on
        for i in range(300):
            op(i)
        result = llamonitor.flush(10)
        assert result and result.spooled == 300
        h = writer.health_check()
        assert h["events_dropped"] == 0 and _sink(h)["outage"]
    finally:
        HangingProbe.release.set()
    assert shutdown_monitoring(10)


def test_shutdown_spools_what_is_queued_behind_a_slow_replay(tmp_path: Path) -> None:
    """The store is back but hangs on a replayed batch: at shutdown, the new events
    queued behind it are spooled by the deadline instead of dropped."""
    Gated.gate.clear()
    Gated.waiting.clear()
    out = tmp_path / "store"
    _down(out)
    writer = initialize_monitoring(_config(out, backend="test_spool:Gated"))
    try:
        for i in range(200):
            op(i)
            if i % 50 == 49:
                assert llamonitor.flush(5)
        (out / "GATED").touch()
        _down(out, False)
        assert Gated.waiting.wait(20)  # a replay is stuck in the store now
        for i in range(300):
            op(i)
        assert shutdown_monitoring(3.0)
        h = writer.health_check()
        assert h["dropped"]["shutdown"] == 0 and h["events_spooled"] == 500
        assert accounted(h) == h["events_received"] == 500
    finally:
        Gated.gate.set()


def test_events_another_process_replayed_leave_this_processs_spooled_count(
    tmp_path: Path,
) -> None:
    """`spool replay` writes this process's spooled events: its events_spooled and
    flush().spooled come down to 0, and they count as written (written_elsewhere)."""
    out = tmp_path / "store"
    writer = initialize_monitoring(
        _config(out, retry_backoff_seconds=0.02, retry_max_backoff_seconds=60)
    )
    _down(out)
    for i in range(100):
        op(i)
    assert llamonitor.flush(5).spooled == 100
    directory = _spool_dir(out)
    # The first recovery probe closes the segment we append to (it can be replayed then).
    assert _wait(lambda: not any(s.active for s in _spool.inspect(directory).segments))

    def replayed() -> bool:  # into the Parquet files directly: the app's store stays down
        r = run("spool", "replay", "--backend", "parquet", "--dir", out, "--sink",
                directory.name, "--json")  # fmt: skip
        return r.exit_code == 0 and json.loads(r.output)["events_left"] == 0

    assert _wait(replayed)
    assert llamonitor.flush(5).spooled == 0
    h = writer.health_check()
    assert h["events_spooled"] == 0 and h["events_written"] == 100
    assert _sink(h)["written_elsewhere"] == 100
    assert accounted(h) == h["events_received"] == 100


def test_temporary_segments_left_by_dead_writers_are_recovered_or_removed(
    tmp_path: Path,
) -> None:
    """A writer killed before renaming its segment: an old, unlocked temporary segment
    with records becomes replayable, an empty one goes; a locked one is left alone."""
    directory = tmp_path / "spool"
    ids = _write_spool(directory, records=2, rows=5)
    (segment,) = _spool.segment_files(directory)
    with_data = directory / f".{segment.name}.tmp"
    segment.rename(with_data)
    empty = directory / ".batch-00000000000000000001-1-00000001.seg.tmp"
    empty.touch()
    live = directory / ".batch-00000000000000000002-2-00000002.seg.tmp"
    live.touch()
    old = time.time() - 3600
    for path in (with_data, empty, live):
        os.utime(path, (old, old))
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its writer is alive
        spool = _spool.Spool(directory, 10**9)
        assert spool.backlog and not empty.exists() and live.exists()
        cursor = spool.cursor()
        got = []
        while (record := cursor.next()) is not None:
            got.append(record.table.column("event_id").to_pylist())
            cursor.done(record)
        cursor.close()
        spool.close()
    finally:
        os.close(fd)
    assert got == ids


def test_rejected_rows_have_a_limit_of_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rejected rows (never replayed automatically) stop at spool_rejected_max_bytes,
    with one warning; batches keep their own room in spool_max_bytes."""
    out = tmp_path / "store"
    limit = 20_000
    writer = initialize_monitoring(
        _config(out, batch_size=10_000, spool_rejected_max_bytes=limit, spool_max_bytes=60_000)
    )
    with caplog.at_level(logging.WARNING, logger="llamonitor"):
        for i in range(30):
            bad(i)
            assert llamonitor.flush(5)
    h = writer.health_check()
    failed = _sink(h)["failed_reasons"].get("rejected", 0)
    assert failed > 0 and h["events_rejected"] + failed == 30
    assert _sink(h)["spool_rejected_bytes"] <= limit and _sink(h)["spool_rejected_full"]
    full = [r for r in caplog.records if "spool_rejected_max_bytes" in r.getMessage()]
    assert len(full) == 1
    _down(out)
    for i in range(100):
        op(i)
    assert llamonitor.flush(5).spooled == 100


def test_suspect_records_need_a_write_in_between_and_are_bounded() -> None:
    """A refused record strikes again only after the store took another write; a
    transient error is no strike; the list is bounded and pruned."""
    from llamonitor.transport.spool._outage import Suspects

    suspects = Suspects(max_entries=3)
    refused = ValueError("value too long")
    assert not suspects.failed(("a", 0), refused)
    assert suspects.waiting() == {("a", 0)}
    assert not suspects.failed(("a", 0), refused)  # nothing written in between
    suspects.wrote()
    assert suspects.waiting() == frozenset()
    assert suspects.failed(("a", 0), refused)
    suspects.forget(("a", 0))
    assert not suspects.failed(("b", 0), ConnectionResetError(104, "reset")) and not suspects
    for i in range(5):
        suspects.failed((f"s{i}", 0), refused)
    assert len(suspects) == 3
    suspects.prune({"s4"})
    assert len(suspects) == 1
