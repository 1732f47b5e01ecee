"""The system collector reads this process and this host as /proc does."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llamonitor.metrics import SystemCollector

from ._points import names, value

MB = 1 << 20


def _vmrss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def test_process_rss_matches_proc_self_status() -> None:
    """process_memory_rss_bytes is the VmRSS the kernel reports (within 2 MB)."""
    c = SystemCollector(["memory_usage"], host=False)
    before = _vmrss()
    rss = value(c.collect(), "process_memory_rss_bytes")
    after = _vmrss()
    assert min(before, after) - 2 * MB <= rss <= max(before, after) + 2 * MB


def test_an_allocation_of_200_mb_shows_in_process_rss() -> None:
    """Touching 200 MB raises the collected RSS by about 200 MB."""
    c = SystemCollector(["memory_usage"], host=False)
    before = value(c.collect(), "process_memory_rss_bytes")
    block = bytearray(200 * MB)
    block[::4096] = b"\x01" * (len(block) // 4096)  # touch every page
    during = value(c.collect(), "process_memory_rss_bytes")
    del block
    assert during - before >= 190 * MB


def _steady(c: SystemCollector, name: str, independent: Callable[[], int]) -> float:
    """The collected ``name`` when an independent count taken just before and
    just after agrees (other threads of the test process come and go)."""
    for _ in range(20):
        before = independent()
        got = value(c.collect(), name)
        if independent() == before:
            assert got == before
            return got
    raise AssertionError(f"{name}: the process kept changing")


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def _regular_files() -> int:
    links = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    return sum(1 for p in links if os.path.isfile(p))


def test_a_started_thread_and_an_opened_file_are_counted(tmp_path: Path) -> None:
    """A thread started and a file opened each show in the process's counts
    (checked against /proc/self/task and /proc/self/fd)."""
    c = SystemCollector(["threads", "open_files"], host=False)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    path = tmp_path / "held.txt"
    f = open(path, "w")  # noqa: SIM115 - held open on purpose
    try:
        assert str(t.native_id) in os.listdir("/proc/self/task")
        _steady(c, "process_threads", _tasks)
        files_open = _steady(c, "process_open_files", _regular_files)
    finally:
        f.close()
        stop.set()
        t.join()
    assert _steady(c, "process_open_files", _regular_files) == files_open - 1
    for _ in range(200):  # the kernel reaps a joined thread's task a moment later
        if str(t.native_id) not in os.listdir("/proc/self/task"):
            break
        time.sleep(0.01)
    assert str(t.native_id) not in os.listdir("/proc/self/task")


def test_host_figures_match_proc() -> None:
    """Host memory total, CPU count and thread count agree with /proc."""
    m = SystemCollector().collect()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert value(m, "system_memory_total_bytes") == int(meminfo["MemTotal"].split()[0]) * 1024
    assert value(m, "system_cpu_count") == os.cpu_count()
    threads = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    assert abs(value(m, "system_threads") - threads) <= 50
    for n in ("system_cpu_seconds_total", "system_network_bytes_total",
              "system_open_fds", "process_cpu_seconds_total", "process_io_bytes_total"):
        assert n in names(m)
    assert all(x.kind in ("counter", "gauge") for x in m)


def test_groups_limit_what_is_collected() -> None:
    """Only the chosen groups are read; an unknown group is refused by name."""
    m = SystemCollector(["threads"]).collect()
    assert names(m) == {"process_threads", "process_context_switches_total", "system_threads"}
    with pytest.raises(ValueError, match="gpu_usage"):
        SystemCollector(["gpu_usage"])


def test_missing_psutil_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psutil the collector says which extra to install."""
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)
    with pytest.raises(ImportError, match=r"llamonitor\[metrics\]"):
        SystemCollector()
