"""Replaying a spool directory: its pending records, oldest segment first.

Replay marks each record done (one byte, in place) right after the backend
took it, and deletes a segment once every record in it is done; so a crash
during replay repeats at most the one batch that was being written (SQL
stores drop the repeat by ``event_id``; the Parquet store would keep both).
A record whose checksum does not match (a torn write at the tail of a killed
process's segment, a flipped bit) is skipped and counted in
``corrupt_records``; reading resumes at the next valid record header.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamonitor.transport.spool._format import DONE, HEADER, HEADER_SIZE, Record, decode, walk
from llamonitor.transport.spool._segments import lock, segment_files, segment_kind

if TYPE_CHECKING:
    from llamonitor.transport.spool._spool import Spool


class Cursor:
    """Walks the pending records of a spool directory, oldest segment first.

    Takes each segment's lock (skipping segments a live process holds, counted
    in ``skipped_locked``), hands out its pending records one at a time (but
    those in ``skip``), and deletes the segment once every record in it is
    done. Call :meth:`done` after the backend took a record; :meth:`close` (or
    the end of the walk) releases the locks.
    """

    def __init__(
        self, spool: Spool, kinds: tuple[int, ...], skip: frozenset[tuple[str, int]] = frozenset()
    ) -> None:
        self.spool = spool
        self.kinds = kinds
        self.skip = skip
        self.generation = spool.generation
        self.skipped_locked = 0
        self.skipped = 0  # records left out because they were in ``skip``
        active = {seg.path.name for seg in spool._segments.values()}
        self._files = deque(
            p for p in segment_files(spool.directory, kinds) if p.name not in active
        )
        self._fd = -1
        self._mm: Any = None
        self._path: Path | None = None
        self._records: deque[tuple[int, int, int, int]] = deque()
        self._keep = False
        self._handed: Record | None = None
        spool._cursors.add(self)

    def next(self) -> Record | None:
        """The next pending record, or None when there is none left."""
        if self._handed is not None:
            self._keep = True  # handed out and not done: the segment stays
            self._handed = None
        while True:
            if self._path is None and not self._open_next():
                # Segments another live process holds are its own to replay, or
                # a later pass's (a lock held briefly: a replayer, `spool status`),
                # as are the records skipped: the backlog stays. Ours, still open,
                # need a rotate() first.
                if (
                    self.generation == self.spool.generation
                    and not self.skipped_locked
                    and not self.skipped
                    and not self.spool.active_batch_bytes()
                ):
                    self.spool.backlog = False
                self.close()
                return None
            while self._records:
                offset, kind, rows, length = self._records.popleft()
                assert self._path is not None
                if (self._path.name, offset) in self.skip:
                    self._keep = True
                    self.skipped += 1
                    continue
                body = self._mm[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
                try:
                    table, errors = decode(body)
                except Exception:  # checksummed yet unreadable: count it, keep the file
                    self.spool.count_corrupt(self._path.name, offset)
                    self._keep = True
                    continue
                at = HEADER.unpack_from(self._mm, offset)[7]
                self._handed = Record(
                    kind, rows, at, table, errors, self._path, offset,
                    mine=self.spool.is_ours(self._path.name, offset),
                )  # fmt: skip
                return self._handed
            self._finish_segment()

    def done(self, record: Record) -> None:
        """Mark ``record`` replayed (it is never handed out again)."""
        self.spool._done(self._fd, record)
        if self._handed is record:
            self._handed = None
            if not self._records and self._path is not None:
                # The segment's last record: remove the file now, not at the next
                # call (a shutdown may come first and leave it for the next run).
                self._finish_segment()

    def _open_next(self) -> bool:
        while self._files:
            path = self._files.popleft()
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # replayed and deleted by another process meanwhile
            if not lock(fd):
                os.close(fd)
                self.skipped_locked += 1  # a live process is appending to it
                continue
            size = os.fstat(fd).st_size
            if size == 0:  # created, never written (its writer died): nothing to keep
                self._unlink(path, fd)
                continue
            self._fd, self._path = fd, path
            self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            self._keep = False
            self._records = deque()
            intact = set()
            for offset, hdr in walk(self._mm):
                if hdr is None:
                    self.spool.count_corrupt(path.name, offset)
                    continue
                intact.add(offset)
                kind, state, rows, length, _ = hdr
                if state != DONE:
                    if kind in self.kinds:
                        self._records.append((offset, kind, rows, length))
                    else:
                        self._keep = True
            self.spool._lost_in(path.name, intact)
            return True
        return False

    def _finish_segment(self) -> None:
        path, fd = self._path, self._fd
        self._release_map()
        assert path is not None
        if self._keep:
            os.close(fd)
        else:
            self._unlink(path, fd)
        self._path, self._fd = None, -1

    def _unlink(self, path: Path, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
            path.unlink()
            self.spool._freed(segment_kind(path), size)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def _release_map(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def close(self) -> None:
        """Stop walking: release the segment held (its undone records stay)."""
        if self._path is not None:
            self._release_map()
            os.close(self._fd)
            self._path, self._fd = None, -1
        self._files.clear()
        self._records.clear()
        self._handed = None
        self.spool._cursors.discard(self)

    def forget(self) -> None:
        """In a forked child: close our copies of the parent's descriptor and
        map (the mmap holds a descriptor of its own), keeping the parent's lock."""
        with contextlib.suppress(OSError, ValueError, BufferError):
            self._release_map()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._path, self._fd = None, -1
        self._files.clear()
        self._records.clear()
        self._handed = None
        self.spool._cursors.discard(self)
