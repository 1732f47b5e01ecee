"""The segment files of a sink directory: names, listing, sizes, locks, and
the segment this process appends to.

A sink directory holds append-only segments and one file naming its store:

- ``batch-<ns>-<pid>-<rand>.seg``: batches the backend could not take; replayed
  automatically, oldest first, once it takes writes again.
- ``rejected-<ns>-<pid>-<rand>.seg``: rows the database refused for their
  content, each with the database's error; replayed only on request
  (``llamonitor spool replay --rejected``), since they would fail again.
- ``identity.json``: which backend the directory belongs to (for operators).

Segments and ``identity.json`` are created ``0o600`` (they may hold captured
prompts), the sink directory ``0o700``. Every process appends to its own
segments (pid and random bits in the name), created under a temporary name and
renamed only once the process holds an exclusive ``flock`` on them; the
directory is fsynced after each rename. A replayer takes the same lock
(non-blocking) before it reads a segment, so it never reads a segment a live
process is still appending to, and two replayers never take the same segment.
A process killed with SIGKILL loses its locks with it: its segments are
replayable at once, and a temporary segment it left (killed between creating
and renaming it) is recovered or removed by the next ``Spool`` there.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

from llamonitor.transport.spool._format import BATCH, KIND_NAMES, REJECTED

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process locking
    fcntl = None  # type: ignore[assignment]

PREFIX = {BATCH: "batch-", REJECTED: "rejected-"}
IDENTITY_FILE = "identity.json"
SEGMENT_NAME = re.compile(r"^(batch|rejected)-(\d+)-(\d+)-([0-9a-f]+)\.seg$")
SEGMENT_TMP_NAME = re.compile(r"^\.((?:batch|rejected)-\d+-\d+-[0-9a-f]+\.seg)\.tmp$")
IDENTITY_TMP_NAME = re.compile(r"^\.identity\.json\.[0-9a-f]+\.tmp$")


def segment_files(directory: Path, kinds: tuple[int, ...] = (BATCH, REJECTED)) -> list[Path]:
    """The segments of a sink directory of the given kinds, oldest first."""
    wanted = {KIND_NAMES[k] for k in kinds}
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # absent, under a file, unreadable: nothing we can replay
        return []
    for entry in entries:
        m = SEGMENT_NAME.match(entry.name)
        if m and m.group(1) in wanted:
            found.append((int(m.group(2)), entry.name))
    return [directory / name for _, name in sorted(found)]


def segment_kind(path: Path) -> int:
    return BATCH if path.name.startswith(PREFIX[BATCH]) else REJECTED


def bytes_by_kind(directory: Path) -> dict[int, int]:
    """Bytes held by the segments of a sink directory, per kind."""
    total = {BATCH: 0, REJECTED: 0}
    for path in segment_files(directory):
        with contextlib.suppress(OSError):
            total[segment_kind(path)] += path.stat().st_size
    return total


def directory_bytes(directory: Path) -> int:
    """Bytes held by the segments of a sink directory."""
    return sum(bytes_by_kind(directory).values())


def lock(fd: int, exclusive: bool = True) -> bool:
    """Take a ``flock`` without waiting; False if someone else holds one."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def unlock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


def fsync_dir(directory: Path) -> None:
    """Make a file created or renamed in ``directory`` survive a power loss
    (best effort: some file systems cannot fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Segment:
    """An open segment this process appends to (locked while open)."""

    def __init__(self, directory: Path, kind: int) -> None:
        name = f"{PREFIX[kind]}{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.seg"
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            lock(fd)
            os.replace(tmp, directory / name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(directory)
        self.kind = kind
        self.path = directory / name
        self.fd = fd
        self.size = 0
        self.dirty = False

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except BaseException:
            # A partial record (disk full) would read as corrupt: take it back.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)
        self.dirty = True

    def linked(self) -> bool:
        """False once the file was deleted (what it holds is gone with it)."""
        return os.fstat(self.fd).st_nlink > 0

    def sync(self) -> None:
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)  # releases the lock
