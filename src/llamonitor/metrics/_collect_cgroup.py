"""The ``container`` collector: this process's cgroup (v2, v1 or both) —
memory usage, limit and events, pressure, CPU usage and throttling, the CPU
limit, pids, and block I/O — and :class:`ContainerPressure`, the span
collector that stamps each span with the latest memory reading.

Limits that are ``max`` (v2) or "no limit" (v1) are left out rather than
stored as a huge number, so ``container_memory_usage_ratio`` exists only
under a real limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from llamonitor.metrics._cgroup_fs import (
    UNLIMITED,
    CgroupPaths,
    find_cgroups,
    read_flat,
    read_int,
    read_limit,
    read_pressure,
    read_text,
)
from llamonitor.metrics._collect_base import Metric, MetricCollector

__all__ = ["CONTAINER_GROUPS", "ContainerCollector", "ContainerPressure", "latest_reading"]

CONTAINER_GROUPS: dict[str, str] = {
    "memory": "usage, limit (effective), high, peak, anon/file, ratio, events (oom, oom_kill...)",
    "pressure": "PSI stall ratios and totals of memory, cpu and io",
    "cpu": "usage and user/system seconds, periods, throttled periods and seconds, limit in cores",
    "pids": "current and limit",
    "io": "bytes and operations read/written per device",
}
"""The metric groups (``metrics:``) this collector knows; the seed's
``container_stats`` means all of them and ``container_events`` the memory events."""

_ALIASES = {"container_stats": tuple(CONTAINER_GROUPS), "container_events": ("memory",)}

# The reading spans are stamped with (replaced whole, never mutated: no lock).
_LATEST: dict[str, float] = {}


def _set_latest(reading: dict[str, float]) -> None:
    global _LATEST
    _LATEST = reading


def latest_reading() -> dict[str, float]:
    """The latest container memory reading (``container.memory.usage_bytes``,
    ``.limit_bytes``, ``.usage_ratio``, ``.pressure_some_avg10``, ``container.read_at``);
    empty before the first collection."""
    return _LATEST


def _pressure_metrics(resource: str, path: str, out: list[Metric]) -> dict[str, dict[str, float]]:
    psi = read_pressure(path)
    if not psi:
        return {}
    for kind, values in psi.items():
        for window in ("avg10", "avg60", "avg300"):
            if window in values:
                out.append(Metric.gauge(f"container_{resource}_pressure_stall_ratio",
                                        values[window] / 100.0,
                                        {"kind": kind, "window": window[3:] + "s"}, unit="ratio"))
        if "total" in values:
            out.append(Metric.counter(f"container_{resource}_pressure_stall_seconds_total",
                                      values["total"] / 1e6, {"kind": kind}, unit="seconds"))
    return psi


class ContainerCollector(MetricCollector):
    """This process's cgroup, read from the cgroup filesystem.

    Args:
        metrics: the groups to collect (keys of :data:`CONTAINER_GROUPS`, or
            the seed's ``container_stats``/``container_events``; default: all).
        paths: the cgroup directories (default: found from
            ``/proc/self/cgroup`` and ``/proc/self/mountinfo``, again after a fork).

    Raises:
        ValueError: an unknown group.
    """

    name: ClassVar[str] = "container"
    default_interval_seconds: ClassVar[float] = 15.0

    def __init__(self, metrics: Sequence[str] | None = None, *,
                 paths: CgroupPaths | None = None) -> None:
        groups: set[str] = set()
        for m in (tuple(CONTAINER_GROUPS) if metrics is None else metrics):
            if m in _ALIASES:
                groups.update(_ALIASES[m])
            elif m in CONTAINER_GROUPS:
                groups.add(m)
            else:
                raise ValueError(f"unknown container metric group {m!r}; choose from "
                                 f"{sorted(CONTAINER_GROUPS) + sorted(_ALIASES)}")
        self.groups = frozenset(groups)
        self._fixed = paths
        self._paths = paths
        self._pid = os.getpid()

    @property
    def paths(self) -> CgroupPaths:
        """The cgroup directories read (found again in a forked child)."""
        if self._fixed is not None:
            return self._fixed
        if self._paths is None or self._pid != os.getpid():
            self._paths = find_cgroups()
            self._pid = os.getpid()
        return self._paths

    def get_metadata(self) -> dict[str, Any]:
        p = self.paths
        return {"name": self.name, "version": "1.0", "groups": sorted(self.groups),
                "cgroup": p.version, "v2": p.v2, "v1": dict(p.v1)}

    # -- helpers ---------------------------------------------------------
    def _v2(self, name: str) -> str | None:
        d = self.paths.v2
        if d is None:
            return None
        path = os.path.join(d, name)
        return path if os.path.exists(path) else None

    def _v1(self, controller: str, name: str) -> str | None:
        d = self.paths.v1.get(controller)
        if d is None:
            return None
        path = os.path.join(d, name)
        return path if os.path.exists(path) else None

    def _v2_dirs(self) -> list[str]:
        """This v2 cgroup's directory and its parents' up to the mount."""
        d, top = self.paths.v2, self.paths.v2_mount
        dirs: list[str] = []
        while d is not None:
            dirs.append(d)
            parent = os.path.dirname(d)
            if top is None or d == top or not d.startswith(top) or parent == d:
                break
            d = parent
        return dirs

    def _v2_effective_limit(self, name: str) -> int | None:
        """The lowest ``name`` limit from this cgroup up to the mount (a parent's binds too):
        ``None`` if no level has the file, :data:`UNLIMITED` if none sets a limit."""
        found: int | None = None
        for d in self._v2_dirs():
            value = read_limit(os.path.join(d, name))
            if value is not None and value != UNLIMITED:
                found = value if found in (None, UNLIMITED) else min(found, value)
            elif value is not None and found is None:
                found = UNLIMITED
        return found

    def _v2_cpu_limit(self) -> float | None:
        """The lowest ``cpu.max`` quota/period (cores) up to the mount, or ``None``."""
        cores: float | None = None
        for d in self._v2_dirs():
            parts = (read_text(os.path.join(d, "cpu.max")) or "").split()
            if len(parts) == 2 and parts[0] != "max":
                quota, period = _int(parts[0]), _int(parts[1])
                if quota and period:
                    cores = quota / period if cores is None else min(cores, quota / period)
        return cores

    # -- collection ------------------------------------------------------
    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        g = self.groups
        if "memory" in g:
            self._memory(out)
        if "pressure" in g:
            psi = {}
            for resource in ("memory", "cpu", "io"):
                path = self._v2(f"{resource}.pressure")
                if path:
                    got = _pressure_metrics(resource, path, out)
                    if resource == "memory":
                        psi = got
            if "some" in psi and "avg10" in psi["some"] and _LATEST:
                _set_latest({**_LATEST,
                             "container.memory.pressure_some_avg10": psi["some"]["avg10"]})
        if "cpu" in g:
            self._cpu(out)
        if "pids" in g:
            self._pids(out)
        if "io" in g:
            self._io(out)
        return out

    def _memory(self, out: list[Metric]) -> None:
        usage = limit = None
        path = self._v2("memory.current")
        if path:  # v2
            usage = read_int(path)
            limit = self._v2_effective_limit("memory.max")
            high = self._v2_effective_limit("memory.high")
            if high is not None and high != UNLIMITED:
                out.append(Metric.gauge("container_memory_high_bytes", high, unit="bytes"))
            peak = read_int(self._v2("memory.peak") or "")
            stat = read_flat(self._v2("memory.stat") or "") or {}
            anon, file = stat.get("anon"), stat.get("file")
            events = read_flat(self._v2("memory.events") or "") or {}
        elif self._v1("memory", "memory.usage_in_bytes"):
            usage = read_int(self._v1("memory", "memory.usage_in_bytes") or "")
            stat = read_flat(self._v1("memory", "memory.stat") or "") or {}
            limit = read_limit(self._v1("memory", "memory.limit_in_bytes") or "")
            hier = stat.get("hierarchical_memory_limit")  # the effective limit
            if hier is not None and hier < (1 << 62):
                limit = hier if limit in (None, UNLIMITED) else min(limit, hier)
            peak = read_int(self._v1("memory", "memory.max_usage_in_bytes") or "")
            anon = stat.get("total_rss", stat.get("rss"))
            file = stat.get("total_cache", stat.get("cache"))
            events = {}
            oom = read_flat(self._v1("memory", "memory.oom_control") or "") or {}
            if "oom_kill" in oom:
                events["oom_kill"] = oom["oom_kill"]
            failcnt = read_int(self._v1("memory", "memory.failcnt") or "")
            if failcnt is not None:
                events["max"] = failcnt  # times usage hit the limit
        else:
            return
        if usage is None:
            return
        out.append(Metric.gauge("container_memory_usage_bytes", usage, unit="bytes"))
        for metric, v in (("container_memory_peak_bytes", peak),
                          ("container_memory_anon_bytes", anon),
                          ("container_memory_file_bytes", file)):
            if v is not None:
                out.append(Metric.gauge(metric, v, unit="bytes"))
        latest: dict[str, float] = {"container.memory.usage_bytes": float(usage),
                                    "container.read_at": time.time()}
        if limit is not None and limit != UNLIMITED and limit > 0:
            out.append(Metric.gauge("container_memory_limit_bytes", limit, unit="bytes"))
            ratio = usage / limit
            out.append(Metric.gauge("container_memory_usage_ratio", ratio, unit="ratio"))
            latest["container.memory.limit_bytes"] = float(limit)
            latest["container.memory.usage_ratio"] = ratio
        for event in ("low", "high", "max", "oom", "oom_kill", "oom_group_kill"):
            if event in events:
                out.append(Metric.counter("container_memory_events_total", events[event],
                                          {"event": event}))
        old = _LATEST.get("container.memory.pressure_some_avg10")
        if old is not None:
            latest["container.memory.pressure_some_avg10"] = old
        _set_latest(latest)

    def _cpu(self, out: list[Metric]) -> None:
        stat = read_flat(self._v2("cpu.stat") or "")
        if stat and "usage_usec" in stat:  # v2
            out.append(Metric.counter("container_cpu_usage_seconds_total",
                                      stat["usage_usec"] / 1e6, unit="seconds"))
            for mode in ("user", "system"):
                if f"{mode}_usec" in stat:
                    out.append(Metric.counter("container_cpu_seconds_total",
                                              stat[f"{mode}_usec"] / 1e6, {"mode": mode},
                                              unit="seconds"))
            throttled_s = stat["throttled_usec"] / 1e6 if "throttled_usec" in stat else None
            limit_cores = self._v2_cpu_limit()
        else:  # v1: cpuacct for usage, cpu for CFS throttling and quota
            stat = read_flat(self._v1("cpu", "cpu.stat") or "") or {}
            usage_ns = read_int(self._v1("cpuacct", "cpuacct.usage") or "")
            if usage_ns is not None:
                out.append(Metric.counter("container_cpu_usage_seconds_total", usage_ns / 1e9,
                                          unit="seconds"))
            ticks = read_flat(self._v1("cpuacct", "cpuacct.stat") or "") or {}
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            for mode in ("user", "system"):
                if mode in ticks:
                    out.append(Metric.counter("container_cpu_seconds_total", ticks[mode] / hz,
                                              {"mode": mode}, unit="seconds"))
            throttled_s = stat["throttled_time"] / 1e9 if "throttled_time" in stat else None
            quota = read_int(self._v1("cpu", "cpu.cfs_quota_us") or "")
            period = read_int(self._v1("cpu", "cpu.cfs_period_us") or "")
            limit_cores = quota / period if quota and quota > 0 and period else None
        if "nr_periods" in stat:
            out.append(Metric.counter("container_cpu_periods_total", stat["nr_periods"]))
        if "nr_throttled" in stat:
            out.append(Metric.counter("container_cpu_throttled_periods_total",
                                      stat["nr_throttled"]))
        if throttled_s is not None:
            out.append(Metric.counter("container_cpu_throttled_seconds_total", throttled_s,
                                      unit="seconds"))
        if limit_cores is not None:
            out.append(Metric.gauge("container_cpu_limit_cores", limit_cores, unit="cores"))

    def _pids(self, out: list[Metric]) -> None:
        current = self._v2("pids.current") or self._v1("pids", "pids.current")
        value = read_int(current or "")
        if value is not None:
            out.append(Metric.gauge("container_pids_current", value))
        if self.paths.v2 is not None and current == self._v2("pids.current"):
            limit = self._v2_effective_limit("pids.max")
        else:
            limit = read_limit(self._v1("pids", "pids.max") or "")
        if limit is not None and limit != UNLIMITED:
            out.append(Metric.gauge("container_pids_limit", limit))

    def _io(self, out: list[Metric]) -> None:
        path = self._v2("io.stat")
        if path:
            for line in (read_text(path) or "").splitlines():
                parts = line.split()
                if not parts:
                    continue
                kv = dict(p.partition("=")[::2] for p in parts[1:])
                dev = {"device": parts[0]}
                for key, metric, direction in (("rbytes", "bytes", "read"),
                                               ("wbytes", "bytes", "write"),
                                               ("rios", "operations", "read"),
                                               ("wios", "operations", "write")):
                    v = _int(kv.get(key, ""))
                    if v is not None:
                        out.append(Metric.counter(f"container_io_{metric}_total", v,
                                                  {**dev, "direction": direction}))
            return
        for fname, metric in (("blkio.throttle.io_service_bytes", "bytes"),
                              ("blkio.throttle.io_serviced", "operations")):
            p = (self._v1("blkio", fname + "_recursive") or self._v1("blkio", fname))
            for line in (read_text(p or "") or "").splitlines():
                parts = line.split()
                if len(parts) != 3 or parts[1] not in ("Read", "Write"):
                    continue
                v = _int(parts[2])
                if v is not None:
                    out.append(Metric.counter(f"container_io_{metric}_total", v,
                                              {"device": parts[0],
                                               "direction": parts[1].lower()}))


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class ContainerPressure:
    """A span collector (``@monitor_llm(collectors=[ContainerPressure()])``):
    stamps each span's ``custom_attributes`` with the latest container memory
    reading — ``container.memory.usage_bytes``, ``container.memory.limit_bytes``,
    ``container.memory.usage_ratio``, ``container.memory.pressure_some_avg10``
    and ``container.read_at`` (when it was read) — so a span can be related to
    the memory pressure it ran under. It reads what the ``container``
    collector last read (no I/O on the application thread); until then it adds
    nothing."""

    metric_type = "container_pressure"

    def collect(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                context: Any) -> dict[str, Any] | None:
        latest = _LATEST
        return {"custom_attributes": latest} if latest else None
