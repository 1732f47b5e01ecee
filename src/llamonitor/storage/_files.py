"""Files that appear whole or not at all, and what writers that died left behind.

Every file of the Parquet store (data, compaction journals) is written under a
hidden temporary name (``.<name>.<random>.tmp``), fsynced and renamed into
place (prometheus_client's ``write_to_textfile``). While a writer works on a
temporary file it holds an exclusive ``flock`` on it, released by the kernel
when the writer exits, however it exits: a temporary file that nobody holds
locked belongs to a writer that died mid-write (a SIGKILL, an OOM kill, a
power cut) and is removed by :func:`remove_stale_temp_files`, soon after the
next start of a writer in that directory (on a thread of its own, so a large
store does not delay the start) and by ``llamonitor compact``. A file another
live process is still writing is never touched.

On a filesystem that cannot ``flock`` (some NFS and FUSE mounts: ``ENOLCK``,
``EOPNOTSUPP``), files are written unlocked, and only temporary files older
than ``STALE_TEMP_UNLOCKABLE_AGE_SECONDS`` are taken for stale there.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; stale files are recognised by age alone
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("llamonitor.storage")

TEMP_SUFFIX = ".tmp"

STALE_TEMP_MIN_AGE_SECONDS = 2.0
"""An unlocked temporary file younger than this is left alone: its writer may
have created it an instant ago and not yet taken its lock."""

STALE_TEMP_UNLOCKABLE_AGE_SECONDS = 24 * 3600.0
"""Where files cannot be locked (no ``fcntl``, or a filesystem without
``flock``), only temporary files this old are taken for stale."""

_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
"""``flock`` errors that mean the filesystem has no locks (not that one is held)."""


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (best effort: not every OS can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def temp_name(path: Path, tag: str = "") -> Path:
    """A hidden, unique temporary name beside ``path``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{tag}{TEMP_SUFFIX}")


@contextmanager
def locked_temp(tmp: Path) -> Iterator[BinaryIO]:
    """Create ``tmp`` (it must not exist) and hold it locked while the block runs.

    The caller writes the file and renames it into place inside the block (the
    lock belongs to the open file, so it follows the rename). If the block
    raises, ``tmp`` is removed.
    """
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    f = os.fdopen(fd, "wb")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    raise
                # No locks on this filesystem: write unlocked (see the module doc).
        yield f
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    f.close()


def sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` to a locked hidden temporary file, fsync, rename to ``path``:
    ``path`` is then either absent or complete."""
    tmp = temp_name(path)
    with locked_temp(tmp) as f:
        write(f)
        sync(f)
        os.replace(tmp, path)
    fsync_dir(path.parent)


def _unused(path: Path) -> bool | None:
    """Nobody holds ``path`` locked (so its writer is gone); False if someone does
    or we are unsure; None if the file cannot be locked at all."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return None if exc.errno in _NO_LOCKS else False  # else: a live writer holds it
    finally:
        os.close(fd)  # also releases our lock
    return True


def remove_stale_temp_files(root: Path, now: float | None = None) -> int:
    """Remove the temporary files that writers which died left under ``root``.

    Hidden directories (the spool) are not entered: they manage their own files.
    Returns how many files were removed.
    """
    now = time.time() if now is None else now
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                continue
            path = Path(dirpath) / name
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue  # renamed or removed meanwhile
            if age < STALE_TEMP_MIN_AGE_SECONDS:
                continue
            unused = _unused(path)
            if unused is None:  # no locks here: age alone tells
                unused = age >= STALE_TEMP_UNLOCKABLE_AGE_SECONDS
            if unused:
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
    if removed:
        logger.info(
            "llamonitor: removed %d temporary file(s) that writers which died left in %s",
            removed,
            root,
        )
    return removed


def sweep_in_background(root: Path) -> threading.Thread:
    """:func:`remove_stale_temp_files` on a daemon thread (a writer's start)."""

    def sweep() -> None:
        try:
            remove_stale_temp_files(root)
        except Exception as exc:  # a directory that vanished, say
            logger.debug("llamonitor: stale temporary files not removed: %r", exc)

    thread = threading.Thread(target=sweep, name="llamonitor-sweep", daemon=True)
    thread.start()
    return thread
