"""Where this process's cgroups are, and readers of cgroup files.

``/proc/self/cgroup`` names the cgroup of each hierarchy (``0::/path`` for
v2, ``4:memory:/path`` for a v1 controller); ``/proc/self/mountinfo`` says
where each hierarchy is mounted and which part of it (its ``root``: inside
a container with its own cgroup namespace, ``/``). A hybrid host has both: v1
controllers and a v2 ``unified`` mount. Every reader returns ``None`` for a
file that is missing, unreadable or malformed: the caller leaves that
metric out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["UNLIMITED", "CgroupPaths", "find_cgroups", "read_flat", "read_int",
           "read_limit", "read_pressure", "read_text"]

UNLIMITED = -1
"""What :func:`read_limit` returns for ``max`` (v2) or a v1 "no limit" value."""

# v1 reports "no limit" as a huge number (LONG_MAX rounded down to a page).
_V1_NO_LIMIT = 1 << 62


@dataclass
class CgroupPaths:
    """The directories of this process's cgroups.

    Attributes:
        v2: the cgroup v2 directory, or ``None``.
        v2_mount: the v2 mount point (the walk up for effective limits stops there).
        v1: v1 controller name (``memory``, ``cpu``, ``cpuacct``, ``pids``,
            ``blkio``) -> its directory.
    """

    v2: str | None = None
    v2_mount: str | None = None
    v1: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """``v2``, ``v1``, ``hybrid`` or ``none``."""
        if self.v2 and self.v1:
            return "hybrid"
        return "v2" if self.v2 else "v1" if self.v1 else "none"


def read_text(path: str) -> str | None:
    """The file's text, or ``None`` (missing, unreadable)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def read_int(path: str) -> int | None:
    """The integer the file holds, or ``None``."""
    text = read_text(path)
    try:
        return None if text is None else int(text.split()[0])
    except (ValueError, IndexError):
        return None


def read_limit(path: str) -> int | None:
    """A limit: its value, :data:`UNLIMITED` for ``max``/-1/no limit, ``None`` if absent."""
    text = read_text(path)
    if text is None:
        return None
    word = text.split()[0] if text.split() else ""
    if word == "max":
        return UNLIMITED
    try:
        value = int(word)
    except ValueError:
        return None
    return UNLIMITED if value < 0 or value >= _V1_NO_LIMIT else value


def read_flat(path: str) -> dict[str, int] | None:
    """A flat keyed file (``key value`` lines: cpu.stat, memory.events,
    memory.stat), or ``None``."""
    text = read_text(path)
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_pressure(path: str) -> dict[str, dict[str, float]] | None:
    """A PSI file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``), or ``None``."""
    text = read_text(path)
    if text is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        values: dict[str, float] = {}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            try:
                values[k] = float(v)
            except ValueError:
                continue
        out[parts[0]] = values
    return out or None


def _mounts(mountinfo: str) -> tuple[tuple[str, str] | None, dict[str, tuple[str, str]]]:
    """(v2 (root, mount point), v1 controller -> (root, mount point))."""
    v2: tuple[str, str] | None = None
    v1: dict[str, tuple[str, str]] = {}
    for line in (read_text(mountinfo) or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            v2 = v2 or (root, point)
        elif tail[0] == "cgroup":
            for opt in tail[2].split(","):
                if opt in ("memory", "cpu", "cpuacct", "pids", "blkio", "io"):
                    v1.setdefault(opt, (root, point))
    return v2, v1


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return (path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def _join(root: str, point: str, cgroup: str) -> str:
    rel = cgroup
    if root != "/" and (cgroup == root or cgroup.startswith(root.rstrip("/") + "/")):
        rel = cgroup[len(root):]
    path = os.path.join(point, rel.lstrip("/"))
    # In a cgroup namespace whose mount is not its root, the path may not
    # exist below the mount: the mount itself is then this process's cgroup.
    return os.path.normpath(path if os.path.isdir(path) else point)


def find_cgroups(proc_cgroup: str = "/proc/self/cgroup",
                 mountinfo: str = "/proc/self/mountinfo") -> CgroupPaths:
    """This process's cgroup directories (see :class:`CgroupPaths`).

    Args:
        proc_cgroup: the ``/proc/<pid>/cgroup`` file to read.
        mountinfo: the ``/proc/<pid>/mountinfo`` file to read.
    """
    v2_mount, v1_mounts = _mounts(mountinfo)
    paths = CgroupPaths()
    for line in (read_text(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, cgroup = parts
        if hid == "0" and controllers == "":
            if v2_mount is not None:
                paths.v2 = _join(v2_mount[0], v2_mount[1], cgroup)
                paths.v2_mount = v2_mount[1]
            continue
        for name in controllers.split(","):
            mount = v1_mounts.get(name)
            if mount is not None:
                paths.v1[name] = _join(mount[0], mount[1], cgroup)
    return paths
