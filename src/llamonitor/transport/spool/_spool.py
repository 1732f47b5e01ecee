"""The spool directory of one sink: appending records within its limits,
and which of them this process spooled.

Durability: a record is one ``write(2)`` on an ``O_APPEND`` descriptor, so once
:meth:`Spool.append` returns it is in the kernel and survives the process being
killed. Segments are fsynced when closed, rotated, and at each ``flush()`` of
the writer; a power loss can lose what was appended since the last of those.
A segment deleted while being appended to (``rm -rf`` of the spool) is noticed
after the next append or fsync (its link count is 0): the record is written
again to a new segment, and what the deleted one held is reported lost
(:meth:`Spool.take_lost`).

The segment files and their locking are in ``_segments``, the record layout in
``_format``, replay in ``_cursor``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pyarrow as pa

from llamonitor.transport.spool._cursor import Cursor
from llamonitor.transport.spool._format import (
    BATCH,
    DONE,
    HEADER_SIZE,
    MAGIC,
    REJECTED,
    STATE_OFFSET,
    Record,
    encode,
)
from llamonitor.transport.spool._segments import (
    IDENTITY_FILE,
    IDENTITY_TMP_NAME,
    SEGMENT_TMP_NAME,
    Segment,
    bytes_by_kind,
    fsync_dir,
    lock,
    segment_files,
)

DEFAULT_SPOOL_MAX_BYTES = 1024**3
DEFAULT_REJECTED_MAX_BYTES = 64 * 1024**2
SEGMENT_MAX_BYTES = 64 * 1024**2
"""A segment is closed (fsynced) and a new one started past this size."""

RESCAN_MIN_SECONDS = 1.0
"""Before refusing a record for space, the directory is measured again (other
processes may have replayed and deleted segments) at most this often."""

LEFTOVER_MIN_AGE_SECONDS = 60.0
"""A temporary file (``.batch-*.seg.tmp``, ``.identity.json.*.tmp``) this old,
and unlocked, was left by a writer that died: it is recovered or removed."""


class SpoolFull(OSError):
    """The spool has no room for a record of ``kind`` within its limit."""

    def __init__(self, message: str, kind: int = BATCH) -> None:
        super().__init__(message)
        self.kind = kind


# -- after fork -----------------------------------------------------------------


_OPEN_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's segment descriptors and the replay cursors' (and so their
    # flock locks) were inherited: close our copies, without unlocking (that
    # would unlock the parent's), so the parent keeps replaying its segments.
    for spool in list(_OPEN_SPOOLS):
        spool.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Spool:
    """The spool directory of one sink.

    Appending and replaying happen on one thread at a time (the sink's, or
    the CLI's); :meth:`reconcile` and the counters may be used from any
    thread (``lock`` guards what they share).

    Args:
        directory: the sink's directory (created on the first append).
        max_bytes: the most the directory's batch segments may hold.
        identity: written to ``identity.json`` when the directory is created.
        rejected_max_bytes: the most its rejected rows may hold (a limit of
            their own, so rows nobody replays cannot fill ``max_bytes``).
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        identity: dict[str, Any] | None = None,
        rejected_max_bytes: int = DEFAULT_REJECTED_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.rejected_max_bytes = rejected_max_bytes
        self.identity = identity
        self.full = False  # the last batch record did not fit
        self.rejected_full = False
        self.corrupt_records = 0
        self.lock = threading.RLock()
        self._corrupt_seen: set[tuple[str, int]] = set()  # counted once each
        self._segments: dict[int, Segment] = {}
        # This process's records not replayed yet: segment -> offset -> (kind, rows).
        self._ours: dict[str, dict[int, tuple[int, int]]] = {}
        self._lost = {BATCH: 0, REJECTED: 0}
        self._cursors: set[Cursor] = set()
        self._bytes: dict[int, int] | None = None
        self._measured_at = -1e18
        self._pid = os.getpid()
        self.generation = 0  # appends so far
        self.tidy()
        # Something may be waiting to be replayed (we appended, or a segment
        # was there at start): a hint, refreshed by a replay pass.
        self.backlog = bool(segment_files(self.directory, (BATCH,)))
        _OPEN_SPOOLS.add(self)

    # -- sizes ----------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes of the directory's segments (both kinds), as last known."""
        return sum(self._bytes.values()) if self._bytes is not None else 0

    @property
    def rejected_bytes(self) -> int:
        return self._bytes[REJECTED] if self._bytes is not None else 0

    def measure(self) -> int:
        """Measure the directory again; returns its bytes."""
        sizes = bytes_by_kind(self.directory)
        with self.lock:
            self._bytes = sizes
            self._measured_at = time.monotonic()
            if self.full and sizes[BATCH] < self.max_bytes:
                self.full = False
            if self.rejected_full and sizes[REJECTED] < self.rejected_max_bytes:
                self.rejected_full = False
        return self.bytes

    def _freed(self, kind: int, size: int) -> None:
        with self.lock:
            if self._bytes is not None:
                self._bytes[kind] = max(0, self._bytes[kind] - size)
                if kind == BATCH and self.full and self._bytes[BATCH] < self.max_bytes:
                    self.full = False

    # -- appending ------------------------------------------------------

    def append(
        self,
        table: pa.Table,
        kind: int = BATCH,
        errors: list[str] | None = None,
        ours: bool = True,
    ) -> int:
        """Add a record; returns its size in bytes. ``ours``: counted as this
        process's (see :meth:`reconcile`); False for rows another process spooled.

        Raises:
            SpoolFull: it does not fit within its limit (nothing written).
            OSError: the directory cannot be written (nothing written).
        """
        data = encode(table, kind, errors)
        limit, setting = (
            (self.max_bytes, "spool_max_bytes")
            if kind == BATCH
            else (self.rejected_max_bytes, "spool_rejected_max_bytes")
        )
        with self.lock:
            held = self._bytes[kind] if self._bytes is not None else 0
            if self._bytes is None or (
                held + len(data) > limit
                and time.monotonic() - self._measured_at >= RESCAN_MIN_SECONDS
            ):
                self.measure()
                assert self._bytes is not None
                held = self._bytes[kind]
            if held + len(data) > limit:
                what = "batches" if kind == BATCH else "rejected rows"
                if kind == BATCH:
                    self.full = True
                else:
                    self.rejected_full = True
                raise SpoolFull(
                    f"the spool {self.directory} is full: its {what} hold {held:,} bytes, "
                    f"a record of {len(data):,} would pass {setting}={limit:,}",
                    kind,
                )
            seg, offset = self._write(kind, data)
            if ours:
                self._ours.setdefault(seg.path.name, {})[offset] = (kind, table.num_rows)
            assert self._bytes is not None
            self._bytes[kind] += len(data)
            if kind == BATCH:
                self.full = False
                self.backlog = True
            self.generation += 1
        return len(data)

    def _write(self, kind: int, data: builtins.bytes) -> tuple[Segment, int]:
        seg = self._segments.get(kind)
        if seg is not None and seg.size + len(data) > SEGMENT_MAX_BYTES and seg.size:
            self._close(kind)
            seg = None
        for _ in range(2):
            if seg is None:
                self._make_dir()
                seg = self._segments[kind] = Segment(self.directory, kind)
            offset = seg.size
            seg.append(data)
            if seg.linked():
                return seg, offset
            # Deleted under us (an rm -rf of the spool, a cleaner): what it held
            # is gone; this record goes to a new segment.
            self._drop_deleted(kind)
            seg = None
        raise FileNotFoundError(f"the spool {self.directory} keeps being deleted")

    def _drop_deleted(self, kind: int) -> None:
        seg = self._segments.pop(kind)
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        lost = self._ours.pop(seg.path.name, {})
        for k, rows in lost.values():
            self._lost[k] += rows
        self._freed(kind, seg.size)

    def take_lost(self) -> dict[int, int]:
        """This process's spooled rows (per kind) found gone since the last call:
        in a segment deleted while open, or corrupted on disk."""
        with self.lock:
            lost, self._lost = self._lost, {BATCH: 0, REJECTED: 0}
        return lost

    def _make_dir(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fsync_dir(self.directory.parent)
        if self.identity is not None:
            tmp = self.directory / f".{IDENTITY_FILE}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.identity, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.directory / IDENTITY_FILE)
            fsync_dir(self.directory)

    def sync(self) -> None:
        """fsync what was appended (power-loss durability)."""
        with self.lock:
            for kind, seg in list(self._segments.items()):
                seg.sync()
                if not seg.linked():
                    self._drop_deleted(kind)

    def active_batch_bytes(self) -> int:
        """Bytes in the batch segment this object is appending to (not replayable
        until :meth:`rotate` closes it)."""
        seg = self._segments.get(BATCH)
        return seg.size if seg is not None else 0

    def rotate(self) -> None:
        """Close the batch segment being appended to, so a replay can take it."""
        with self.lock:
            self._close(BATCH)

    def _close(self, kind: int) -> None:
        seg = self._segments.pop(kind, None)
        if seg is not None:
            seg.close()

    def close(self) -> None:
        """Close (and fsync) the open segments and cursors."""
        errors = []
        for cursor in list(self._cursors):
            cursor.close()
        with self.lock:
            for kind in list(self._segments):
                try:
                    self._close(kind)
                except OSError as exc:
                    errors.append(exc)
        _OPEN_SPOOLS.discard(self)
        if errors:
            raise errors[0]

    def forget(self) -> None:
        """In a forked child: drop the parent's descriptors (segments and
        cursors) without unlocking."""
        if self._pid == os.getpid():
            return
        for seg in self._segments.values():
            with contextlib.suppress(OSError):
                os.close(seg.fd)
        self._segments.clear()
        for cursor in list(self._cursors):
            cursor.forget()
        self._ours.clear()  # the parent's to count
        self.lock = threading.RLock()  # a parent thread may have held it at fork()

    def tidy(self) -> int:
        """Recover or remove what writers that died left (temporary files
        older than ``LEFTOVER_MIN_AGE_SECONDS`` nobody holds); returns how many."""
        try:
            entries = [e for e in os.scandir(self.directory) if e.name.endswith(".tmp")]
        except OSError:
            return 0
        now, done = time.time(), 0
        for entry in entries:
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime < LEFTOVER_MIN_AGE_SECONDS:
                    continue
                if IDENTITY_TMP_NAME.match(entry.name):
                    os.unlink(entry.path)
                    done += 1
                    continue
                m = SEGMENT_TMP_NAME.match(entry.name)
                if m is None:
                    continue
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    if not lock(fd):
                        continue  # its writer is alive
                    if os.fstat(fd).st_size:
                        os.replace(entry.path, self.directory / m.group(1))
                    else:
                        os.unlink(entry.path)
                    done += 1
                finally:
                    os.close(fd)
        if done:
            fsync_dir(self.directory)
        return done

    # -- this process's records ---------------------------------------------

    def is_ours(self, segment: str, offset: int) -> bool:
        return offset in self._ours.get(segment, ())

    def reconcile(self) -> dict[int, int]:
        """Look on disk at this process's records in closed segments: the rows
        (per kind) another process or ``llamonitor spool replay`` took since
        the last call (marked done, or the segment gone)."""
        gone = {BATCH: 0, REJECTED: 0}
        with self.lock:
            active = {seg.path.name for seg in self._segments.values()}
            for name in [n for n in self._ours if n not in active]:
                records = self._ours[name]
                try:
                    fd = os.open(self.directory / name, os.O_RDONLY)
                except OSError:
                    fd = -1
                try:
                    for offset, (kind, rows) in list(records.items()):
                        head = os.pread(fd, HEADER_SIZE, offset) if fd >= 0 else b""
                        if len(head) < HEADER_SIZE or head[:4] != MAGIC or (
                            head[STATE_OFFSET] == DONE
                        ):
                            gone[kind] += rows
                            del records[offset]
                finally:
                    if fd >= 0:
                        os.close(fd)
                if not records:
                    del self._ours[name]
        return gone

    def _done(self, fd: int, record: Record) -> None:
        """Mark ``record`` done on disk and stop counting it as ours (at once,
        so :meth:`reconcile` never takes our own replay for another's)."""
        with self.lock:
            try:
                os.pwrite(fd, bytes([DONE]), record.offset + STATE_OFFSET)
            finally:
                # Counted as written already: if the mark failed, a later replay of
                # it is a repeat, not ours to count again.
                self._untrack(record.segment.name, record.offset)

    def _untrack(self, segment: str, offset: int) -> tuple[int, int] | None:
        records = self._ours.get(segment)
        if records is None:
            return None
        found = records.pop(offset, None)
        if not records:
            del self._ours[segment]
        return found

    def _lost_in(self, segment: str, intact: set[int]) -> None:
        """Our records of ``segment`` not among its ``intact`` offsets are lost
        (corrupted on disk)."""
        with self.lock:
            for offset in list(self._ours.get(segment, ())):
                if offset not in intact:
                    found = self._untrack(segment, offset)
                    if found is not None:
                        self._lost[found[0]] += found[1]

    # -- replaying --------------------------------------------------------

    def count_corrupt(self, segment: str, offset: int) -> None:
        if (segment, offset) not in self._corrupt_seen:
            self._corrupt_seen.add((segment, offset))
            self.corrupt_records += 1

    def cursor(
        self, kinds: tuple[int, ...] = (BATCH,), skip: frozenset[tuple[str, int]] = frozenset()
    ) -> Cursor:
        """Records to replay, oldest first, but for the keys in ``skip`` (see
        :class:`Cursor`)."""
        return Cursor(self, kinds, skip)
