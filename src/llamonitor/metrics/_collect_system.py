"""The ``system`` collector: CPU, memory, disk I/O, network, open files and
threads of this process and of the host (psutil: the ``[metrics]`` extra)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from llamonitor.metrics._collect_base import Metric, MetricCollector

__all__ = ["SYSTEM_GROUPS", "SystemCollector"]

SYSTEM_GROUPS: dict[str, str] = {
    "cpu_usage": "CPU seconds by mode, host CPU utilization, load average",
    "memory_usage": "process RSS/VMS, host memory total/available/used, swap",
    "disk_io": "process and host bytes/operations read and written",
    "network_io": "host bytes/packets sent and received, errors, drops",
    "open_files": "process open file descriptors and regular files, host open fds",
    "threads": "process threads and context switches, host threads",
}
"""The metric groups of seed 003's ``metrics:`` list this collector knows."""

_EXTRA_HINT = "pip install 'llamonitor[metrics]'"


def _psutil() -> Any:
    try:
        import psutil
    except ImportError as exc:  # the extra is missing
        raise ImportError(
            f"the system metrics collector needs psutil: {_EXTRA_HINT}"
        ) from exc
    return psutil


def _read_first(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return None


class SystemCollector(MetricCollector):
    """CPU, memory, disk I/O, network, open files and threads.

    Args:
        metrics: the groups to collect (keys of :data:`SYSTEM_GROUPS`;
            default: all).
        process: collect this process's figures (``process_*``).
        host: collect the host's figures (``system_*``).

    Raises:
        ImportError: psutil is not installed (names the extra).
        ValueError: an unknown group.
    """

    name: ClassVar[str] = "system"
    default_interval_seconds: ClassVar[float] = 15.0

    def __init__(self, metrics: Sequence[str] | None = None, *, process: bool = True,
                 host: bool = True) -> None:
        self._psutil = _psutil()
        unknown = [m for m in metrics or () if m not in SYSTEM_GROUPS]
        if unknown:
            raise ValueError(f"unknown system metric group(s) {unknown}; "
                             f"choose from {sorted(SYSTEM_GROUPS)}")
        self.groups = frozenset(SYSTEM_GROUPS if metrics is None else metrics)
        self.process = process
        self.host = host
        self._proc: Any = None
        self._pid = -1
        self._open_files_ok = True
        self._proc_io_ok = True

    def _process(self) -> Any:
        pid = os.getpid()
        if self._proc is None or pid != self._pid:  # a forked child measures itself
            self._proc = self._psutil.Process(pid)
            self._pid = pid
        return self._proc

    def get_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "version": "1.0", "groups": sorted(self.groups),
                "process": self.process, "host": self.host,
                "psutil": getattr(self._psutil, "__version__", "")}

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        if self.process:
            p = self._process()
            with p.oneshot():
                self._collect_process(p, out)
        if self.host:
            self._collect_host(out)
        return out

    def _collect_process(self, p: Any, out: list[Metric]) -> None:
        g = self.groups
        if "cpu_usage" in g:
            t = p.cpu_times()
            for mode in ("user", "system"):
                out.append(Metric.counter("process_cpu_seconds_total", getattr(t, mode),
                                          {"mode": mode}, unit="seconds"))
        if "memory_usage" in g:
            m = p.memory_info()
            out.append(Metric.gauge("process_memory_rss_bytes", m.rss, unit="bytes"))
            out.append(Metric.gauge("process_memory_vms_bytes", m.vms, unit="bytes"))
        if "disk_io" in g and self._proc_io_ok:
            try:
                io = p.io_counters()
            except (AttributeError, self._psutil.AccessDenied, OSError):
                self._proc_io_ok = False  # not on this platform / not allowed
            else:
                for direction in ("read", "write"):
                    out.append(Metric.counter("process_io_bytes_total",
                                              getattr(io, f"{direction}_bytes"),
                                              {"direction": direction}, unit="bytes"))
                    out.append(Metric.counter("process_io_operations_total",
                                              getattr(io, f"{direction}_count"),
                                              {"direction": direction}))
        if "open_files" in g:
            if hasattr(p, "num_fds"):
                out.append(Metric.gauge("process_open_fds", p.num_fds()))
            if self._open_files_ok:
                try:
                    out.append(Metric.gauge("process_open_files", len(p.open_files())))
                except (self._psutil.AccessDenied, OSError):
                    self._open_files_ok = False
        if "threads" in g:
            out.append(Metric.gauge("process_threads", p.num_threads()))
            cs = p.num_ctx_switches()
            for kind in ("voluntary", "involuntary"):
                out.append(Metric.counter("process_context_switches_total",
                                          getattr(cs, kind), {"kind": kind}))

    def _collect_host(self, out: list[Metric]) -> None:
        ps = self._psutil
        g = self.groups
        if "cpu_usage" in g:
            t = ps.cpu_times()
            for mode in ("user", "system", "idle", "iowait", "steal"):
                if hasattr(t, mode):
                    out.append(Metric.counter("system_cpu_seconds_total", getattr(t, mode),
                                              {"mode": mode}, unit="seconds"))
            out.append(Metric.gauge("system_cpu_count", ps.cpu_count() or 0))
            # Utilization since the previous call (the first call's is since boot).
            out.append(Metric.gauge("system_cpu_utilization_ratio",
                                    ps.cpu_percent(interval=None) / 100.0, unit="ratio"))
            try:
                load1 = os.getloadavg()[0]
            except OSError:
                pass
            else:
                out.append(Metric.gauge("system_load_average_1m", load1))
        if "memory_usage" in g:
            vm = ps.virtual_memory()
            for f in ("total", "available", "used"):
                out.append(Metric.gauge(f"system_memory_{f}_bytes", getattr(vm, f), unit="bytes"))
            sw = ps.swap_memory()
            out.append(Metric.gauge("system_swap_used_bytes", sw.used, unit="bytes"))
        if "disk_io" in g:
            d = ps.disk_io_counters()
            if d is not None:
                for direction in ("read", "write"):
                    out.append(Metric.counter("system_disk_io_bytes_total",
                                              getattr(d, f"{direction}_bytes"),
                                              {"direction": direction}, unit="bytes"))
                    out.append(Metric.counter("system_disk_io_operations_total",
                                              getattr(d, f"{direction}_count"),
                                              {"direction": direction}))
        if "network_io" in g:
            n = ps.net_io_counters()
            if n is not None:
                for direction, b, pk, err, drop in (
                    ("receive", n.bytes_recv, n.packets_recv, n.errin, n.dropin),
                    ("transmit", n.bytes_sent, n.packets_sent, n.errout, n.dropout),
                ):
                    lab = {"direction": direction}
                    out.append(Metric.counter("system_network_bytes_total", b, lab,
                                              unit="bytes"))
                    out.append(Metric.counter("system_network_packets_total", pk, lab))
                    out.append(Metric.counter("system_network_errors_total", err, lab))
                    out.append(Metric.counter("system_network_drops_total", drop, lab))
        if "open_files" in g:
            # /proc/sys/fs/file-nr: allocated, unused (always 0 since 2.6), max.
            text = _read_first("/proc/sys/fs/file-nr")
            if text:
                fields = text.split()
                out.append(Metric.gauge("system_open_fds", int(fields[0])))
                out.append(Metric.gauge("system_max_fds", int(fields[2])))
        if "threads" in g:
            # /proc/loadavg's 4th field: runnable/total scheduling entities (threads).
            text = _read_first("/proc/loadavg")
            if text:
                out.append(Metric.gauge("system_threads", int(text.split()[3].split("/")[1])))
