"""The container collector reads this process's cgroup (this sandbox's own),
and fake v2/v1 trees for limits, throttling, events, "max" and missing files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import llamonitor
from llamonitor.metrics import ContainerCollector, ContainerPressure, find_cgroups, latest_reading
from llamonitor.metrics._cgroup_fs import CgroupPaths

from ._points import names, value

MB = 1 << 20
HAS_CGROUP = Path("/proc/self/cgroup").exists() and Path("/sys/fs/cgroup").exists()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _own_memory_file() -> Path:
    """This process's memory usage file, found without the collector's code."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if hid == "0" and (Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current"
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
    pytest.skip("no memory cgroup")


@pytest.mark.skipif(not HAS_CGROUP, reason="needs a cgroup filesystem")
def test_own_cgroup_is_found_and_its_memory_read() -> None:
    """The collector finds this sandbox's cgroup and reads the usage the kernel reports."""
    own = _own_memory_file()
    c = ContainerCollector()
    dirs = [c.paths.v2, *c.paths.v1.values()]
    assert str(own.parent) in dirs
    before = int(own.read_text())
    usage = value(c.collect(), "container_memory_usage_bytes")
    after = int(own.read_text())
    assert min(before, after) - 20 * MB <= usage <= max(before, after) + 20 * MB
    assert c.get_metadata()["cgroup"] in ("v1", "v2", "hybrid")


@pytest.mark.skipif(not HAS_CGROUP, reason="needs a cgroup filesystem")
def test_an_allocation_of_200_mb_shows_in_the_cgroup() -> None:
    """Touching 200 MB raises the cgroup's memory usage (and anon memory) by about 200 MB."""
    _own_memory_file()
    c = ContainerCollector(["memory"])
    # The cgroup is shared (other processes of the test run free memory meanwhile):
    # the best of three tries.
    best = 0.0
    for _ in range(3):
        first = c.collect()
        block = bytearray(200 * MB)
        block[::4096] = b"\x01" * (len(block) // 4096)
        second = c.collect()
        del block
        grew = value(second, "container_memory_usage_bytes") - value(
            first, "container_memory_usage_bytes"
        )
        best = max(best, grew)
        if grew >= 180 * MB:
            break
    assert best >= 180 * MB
    if "container_memory_anon_bytes" in names(first):
        anon = value(second, "container_memory_anon_bytes") - value(first,
                                                                    "container_memory_anon_bytes")
        assert anon >= 180 * MB
    assert latest_reading()["container.memory.usage_bytes"] == value(
        second, "container_memory_usage_bytes")


def _v2_tree(tmp_path: Path) -> CgroupPaths:
    mount = tmp_path / "cgroup"
    leaf = mount / "kubepods" / "pod1"
    _write(mount / "kubepods", {"memory.max": str(512 * MB), "memory.high": "max\n",
                                "pids.max": "100\n"})
    _write(leaf, {
        "memory.current": str(256 * MB) + "\n",
        "memory.max": "max\n",
        "memory.high": str(400 * MB) + "\n",
        "memory.peak": str(300 * MB) + "\n",
        "memory.stat": f"anon {200 * MB}\nfile {50 * MB}\nkernel 1000\n",
        "memory.events": "low 0\nhigh 7\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n",
        "memory.pressure": "some avg10=12.50 avg60=3.00 avg300=1.00 total=4500000\n"
                           "full avg10=2.00 avg60=0.50 avg300=0.10 total=1000000\n",
        "cpu.stat": "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\n"
                    "nr_periods 100\nnr_throttled 40\nthrottled_usec 1500000\n",
        "cpu.max": "50000 100000\n",
        "pids.current": "12\n",
        "pids.max": "max\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    })
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 23 0:26 / {mount} rw,nosuid,nodev - cgroup2 cgroup2 rw\n")
    proc = tmp_path / "cgroup.proc"
    proc.write_text("0::/kubepods/pod1\n")
    paths = find_cgroups(str(proc), str(mountinfo))
    assert paths.v2 == str(leaf) and paths.version == "v2"
    return paths


def test_v2_tree_limits_throttling_events_and_io(tmp_path: Path) -> None:
    """A v2 cgroup gives usage against the effective (parent's) limit, events,
    pressure, throttling, the CPU limit in cores, pids and I/O."""
    m = ContainerCollector(paths=_v2_tree(tmp_path)).collect()
    assert value(m, "container_memory_usage_bytes") == 256 * MB
    assert value(m, "container_memory_limit_bytes") == 512 * MB  # the parent's binds
    assert value(m, "container_memory_usage_ratio") == 0.5
    assert value(m, "container_memory_high_bytes") == 400 * MB
    assert value(m, "container_memory_anon_bytes") == 200 * MB
    assert value(m, "container_memory_events_total", event="oom_kill") == 1
    assert value(m, "container_memory_events_total", event="high") == 7
    assert value(m, "container_memory_pressure_stall_ratio", kind="some", window="10s") == 0.125
    assert value(m, "container_memory_pressure_stall_seconds_total", kind="some") == 4.5
    assert value(m, "container_cpu_usage_seconds_total") == 5.0
    assert value(m, "container_cpu_throttled_periods_total") == 40
    assert value(m, "container_cpu_throttled_seconds_total") == 1.5
    assert value(m, "container_cpu_limit_cores") == 0.5
    assert value(m, "container_pids_current") == 12
    assert value(m, "container_pids_limit") == 100  # "max" here, 100 above
    assert value(m, "container_io_bytes_total", device="8:0", direction="write") == 8192
    assert {x.kind for x in m if x.name.endswith("_total")} == {"counter"}


def test_v1_tree_with_no_limit_and_a_hierarchical_one(tmp_path: Path) -> None:
    """A v1 hierarchy (combined cpu,cpuacct mount) gives the same series; "no
    limit" is left out and the hierarchical limit used instead."""
    base = tmp_path / "cg"
    mem, cpu, pids, blk = (base / d / "docker" / "c1"
                           for d in ("memory", "cpu,cpuacct", "pids", "blkio"))
    _write(mem, {"memory.usage_in_bytes": str(100 * MB),
                 "memory.limit_in_bytes": "9223372036854771712",
                 "memory.max_usage_in_bytes": str(150 * MB),
                 "memory.stat": f"rss {80 * MB}\ncache {20 * MB}\ntotal_rss {80 * MB}\n"
                                f"total_cache {20 * MB}\nhierarchical_memory_limit {400 * MB}\n",
                 "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
                 "memory.failcnt": "9\n"})
    _write(cpu, {"cpu.stat": "nr_periods 50\nnr_throttled 5\nthrottled_time 2000000000\n",
                 "cpu.cfs_quota_us": "200000\n", "cpu.cfs_period_us": "100000\n",
                 "cpuacct.usage": "3000000000\n", "cpuacct.stat": "user 200\nsystem 100\n"})
    _write(pids, {"pids.current": "4\n", "pids.max": "max\n"})
    _write(blk, {"blkio.throttle.io_service_bytes_recursive":
                 "8:0 Read 1024\n8:0 Write 2048\n8:0 Sync 0\n8:0 Total 3072\nTotal 3072\n",
                 "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n"})
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("".join(
        f"{i} 23 0:{i} / {base / d} rw - cgroup cgroup rw,{opts}\n"
        for i, (d, opts) in enumerate([("memory", "memory"), ("cpu,cpuacct", "cpu,cpuacct"),
                                       ("pids", "pids"), ("blkio", "blkio")], start=40)))
    proc = tmp_path / "cgroup.proc"
    proc.write_text("5:memory:/docker/c1\n4:cpu,cpuacct:/docker/c1\n3:pids:/docker/c1\n"
                    "2:blkio:/docker/c1\n1:name=systemd:/docker/c1\n")
    paths = find_cgroups(str(proc), str(mountinfo))
    assert paths.version == "v1" and paths.v1["cpuacct"] == str(cpu)
    m = ContainerCollector(paths=paths).collect()
    assert value(m, "container_memory_usage_bytes") == 100 * MB
    assert value(m, "container_memory_limit_bytes") == 400 * MB
    assert value(m, "container_memory_usage_ratio") == 0.25
    assert value(m, "container_memory_events_total", event="oom_kill") == 3
    assert value(m, "container_memory_events_total", event="max") == 9
    assert value(m, "container_cpu_usage_seconds_total") == 3.0
    assert value(m, "container_cpu_seconds_total", mode="user") == 200 / os.sysconf("SC_CLK_TCK")
    assert value(m, "container_cpu_throttled_seconds_total") == 2.0
    assert value(m, "container_cpu_limit_cores") == 2.0
    assert value(m, "container_pids_current") == 4
    assert "container_pids_limit" not in names(m)
    assert value(m, "container_io_bytes_total", device="8:0", direction="read") == 1024
    assert value(m, "container_io_operations_total", device="8:0", direction="write") == 2


def test_missing_unreadable_and_max_files_are_left_out(tmp_path: Path) -> None:
    """Missing, unreadable (a directory), malformed and "max" files drop their
    series and nothing else; no limit means no ratio."""
    mount = tmp_path / "cgroup"
    _write(mount, {"memory.current": "1000\n", "memory.max": "max\n", "cpu.stat": "garbage\n",
                   "pids.current": "not a number\n"})
    (mount / "memory.events").mkdir()  # unreadable
    m = ContainerCollector(paths=CgroupPaths(v2=str(mount), v2_mount=str(mount))).collect()
    assert names(m) == {"container_memory_usage_bytes"}
    assert ContainerCollector(paths=CgroupPaths()).collect() == []


def test_a_span_carries_the_memory_pressure_it_ran_under(tmp_path: Path) -> None:
    """ContainerPressure stamps a span with the latest usage, limit and ratio."""
    ContainerCollector(paths=_v2_tree(tmp_path)).collect()

    @llamonitor.monitor_llm("under_pressure", collectors=[ContainerPressure()])
    def work() -> str:
        return "done"

    with llamonitor.testing.capture_spans() as spans:
        work()
    attrs = spans.rows()[0]["custom_attributes"]
    attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
    assert attrs["container.memory.usage_ratio"] == 0.5
    assert attrs["container.memory.limit_bytes"] == 512 * MB
    assert attrs["container.memory.pressure_some_avg10"] == 12.5
