"""The local spool: what a sink could not write, kept on disk until it can.

One directory per sink (:func:`sink_dir_name`: the backend's name and a hash of
what identifies its store), holding append-only segment files:

- ``batch-<ns>-<pid>-<rand>.seg``: batches the backend could not take; replayed
  automatically, oldest first, once it takes writes again.
- ``rejected-<ns>-<pid>-<rand>.seg``: rows the database refused for their
  content, each with the database's error; replayed only on request
  (``llamonitor spool replay --rejected``), since they would fail again.
- ``identity.json``: which backend the directory belongs to (for operators).

Every process appends to its own segments (pid and random bits in the name),
created under a temporary name and renamed only once the process holds an
exclusive ``flock`` on them. A replayer takes the same lock (non-blocking)
before it reads a segment, so it never reads a segment a live process is still
appending to, and two replayers never take the same segment. A process killed
with SIGKILL loses its locks with it: its segments are replayable at once.

Record layout (little-endian)::

    0   4  magic b"LMSP"
    4   1  format version (1)
    5   1  kind (1 batch, 2 rejected)
    6   1  state (0 pending, 1 done): rewritten in place, not checksummed
    7   1  reserved (0)
    8   4  rows
    12  4  payload length
    16  8  time spooled, UTC nanoseconds
    24  4  CRC32 of bytes 0-23 (state taken as 0) and of the payload
    28  -  payload: an Arrow IPC stream of the rows (``SCHEMA``); for rejected
           rows the errors are a JSON list in the schema metadata

Durability: a record is one ``write(2)`` on an ``O_APPEND`` descriptor, so once
:meth:`Spool.append` returns it is in the kernel and survives the process being
killed. Segments are fsynced when closed, rotated, and at each ``flush()`` of
the writer; a power loss can lose what was appended since the last of those.

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
import hashlib
import json
import mmap
import os
import re
import secrets
import struct
import time
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process locking
    fcntl = None  # type: ignore[assignment]

MAGIC = b"LMSP"
VERSION = 1
BATCH = 1
REJECTED = 2
KIND_NAMES = {BATCH: "batch", REJECTED: "rejected"}
_PREFIX = {BATCH: "batch-", REJECTED: "rejected-"}
PENDING = 0
DONE = 1
_HEADER = struct.Struct("<4sBBBBIIQI")
HEADER_SIZE = _HEADER.size  # 28
STATE_OFFSET = 6
ERRORS_KEY = b"llamonitor.spool.errors"

DEFAULT_SPOOL_MAX_BYTES = 1024**3
SEGMENT_MAX_BYTES = 64 * 1024**2
"""A segment is closed (fsynced) and a new one started past this size."""

RESCAN_MIN_SECONDS = 1.0
"""Before refusing a record for space, the directory is measured again (other
processes may have replayed and deleted segments) at most this often."""

IDENTITY_FILE = "identity.json"
_SEGMENT = re.compile(r"^(batch|rejected)-(\d+)-(\d+)-([0-9a-f]+)\.seg$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SpoolFull(OSError):
    """The spool has no room for a record within ``spool_max_bytes``."""


# -- naming -------------------------------------------------------------------


def _masked_dsn(dsn: str) -> str:
    """Scheme, user, host, port and database of a DSN: never its password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(dsn)
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return hashlib.sha256(dsn.encode()).hexdigest()[:16]
    at = f"{user}@" if user else ""
    return f"{parts.scheme}://{at}{host}{port}{parts.path}"


def sink_identity(storage: Any) -> dict[str, Any]:
    """What identifies the store a ``StorageConfig`` writes to (no secrets)."""
    backend = storage.backend
    if isinstance(backend, str):
        name = backend
    else:
        cls = backend if isinstance(backend, type) else type(backend)
        name = f"{cls.__module__}:{cls.__qualname__}"
    ident: dict[str, Any] = {"backend": name}
    dsn = storage.connection_string
    if dsn is not None:
        secret = dsn.get_secret_value() if hasattr(dsn, "get_secret_value") else str(dsn)
        ident["dsn"] = _masked_dsn(secret)
        ident["table"] = storage.table_name
        if storage.schema_name:
            ident["schema"] = storage.schema_name
    else:
        ident["output_dir"] = str(Path(storage.output_dir).expanduser().resolve())
    return ident


def sink_dir_name(storage: Any) -> str:
    """The spool subdirectory of a ``StorageConfig``: stable across processes
    and restarts, different for different stores (``postgres-3f9a1c0b2d``)."""
    ident = sink_identity(storage)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    slug = _UNSAFE.sub("_", ident["backend"].rsplit(":", 1)[-1]).strip("_")[:40] or "backend"
    return f"{slug.lower()}-{digest}"


def segment_files(directory: Path, kinds: tuple[int, ...] = (BATCH, REJECTED)) -> list[Path]:
    """The segments of a sink directory of the given kinds, oldest first."""
    wanted = {KIND_NAMES[k] for k in kinds}
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # absent, under a file, unreadable: nothing we can replay
        return []
    for entry in entries:
        m = _SEGMENT.match(entry.name)
        if m and m.group(1) in wanted:
            found.append((int(m.group(2)), entry.name))
    return [directory / name for _, name in sorted(found)]


def directory_bytes(directory: Path) -> int:
    """Bytes held by the segments of a sink directory."""
    total = 0
    for path in segment_files(directory):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


# -- encoding -----------------------------------------------------------------


def _ipc_options() -> Any:
    codec = "zstd" if pa.Codec.is_available("zstd") else None
    return pa.ipc.IpcWriteOptions(compression=codec)


def encode(table: pa.Table, kind: int, errors: list[str] | None = None) -> bytes:
    """One record (header and payload) holding ``table``."""
    if errors is not None:
        meta = dict(table.schema.metadata or {})
        meta[ERRORS_KEY] = json.dumps(errors).encode()
        table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_ipc_options()) as ipc:
        ipc.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    head = _HEADER.pack(MAGIC, VERSION, kind, PENDING, 0, table.num_rows, len(payload),
                        time.time_ns(), 0)
    crc = zlib.crc32(payload, zlib.crc32(head[:24]))
    return head[:24] + struct.pack("<I", crc) + payload


def conform(table: pa.Table) -> pa.Table:
    """``table`` in the current ``SCHEMA``: a record spooled by an older version
    gets the new columns as nulls; columns no longer known are left out."""
    if table.schema.equals(SCHEMA, check_metadata=False):
        return table.replace_schema_metadata(SCHEMA.metadata)
    n = table.num_rows
    names = set(table.column_names)
    arrays = []
    for f in SCHEMA:
        if f.name in names:
            col = table.column(f.name)
            arrays.append(col if col.type == f.type else col.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _decode(payload: bytes) -> tuple[pa.Table, list[str] | None]:
    table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    meta = table.schema.metadata or {}
    errors = json.loads(meta[ERRORS_KEY]) if ERRORS_KEY in meta else None
    return conform(table), errors


@dataclass
class Record:
    """One spooled record, as a replayer sees it."""

    kind: int
    rows: int
    spooled_at_ns: int
    table: pa.Table
    errors: list[str] | None
    segment: Path
    offset: int
    mine: bool = False  # appended by this ``Spool`` object (this process)

    @property
    def key(self) -> tuple[str, int]:
        return (self.segment.name, self.offset)


def _parse(mm: Any, offset: int) -> tuple[int, int, int, int, int] | None:
    """The header at ``offset`` if it and its payload are intact:
    ``(kind, state, rows, length, spooled_at_ns)``."""
    end = len(mm)
    if offset + HEADER_SIZE > end:
        return None
    magic, version, kind, state, _, rows, length, at, crc = _HEADER.unpack_from(mm, offset)
    if magic != MAGIC or version != VERSION or kind not in KIND_NAMES:
        return None
    if offset + HEADER_SIZE + length > end:
        return None
    head = bytearray(mm[offset : offset + 24])
    head[STATE_OFFSET] = 0
    body = mm[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
    if zlib.crc32(body, zlib.crc32(bytes(head))) != crc:
        return None
    return kind, state, rows, length, at


def _walk(mm: Any) -> Iterator[tuple[int, tuple[int, int, int, int, int] | None]]:
    """``(offset, header)`` of each record; ``(offset, None)`` for a corrupt
    stretch (reading resumes at the next intact record, if any)."""
    offset, end = 0, len(mm)
    while offset < end:
        hdr = _parse(mm, offset)
        if hdr is not None:
            yield offset, hdr
            offset += HEADER_SIZE + hdr[3]
            continue
        yield offset, None
        nxt = offset
        while True:
            nxt = mm.find(MAGIC, nxt + 1)
            if nxt < 0 or _parse(mm, nxt) is not None:
                break
        if nxt < 0:
            return
        offset = nxt


def _lock(fd: int, exclusive: bool = True) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


# -- the writer side ----------------------------------------------------------


_OPEN_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's segment descriptors (and so its flock locks) were inherited:
    # close our copies, without unlocking (that would unlock the parent's), so
    # the parent can replay its own segments once it closes them.
    for spool in list(_OPEN_SPOOLS):
        spool.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Segment:
    """An open segment this process appends to (locked while open)."""

    def __init__(self, directory: Path, kind: int) -> None:
        name = f"{_PREFIX[kind]}{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.seg"
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _lock(fd)
            os.replace(tmp, directory / name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
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

    def sync(self) -> None:
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)  # releases the lock


class Spool:
    """The spool directory of one sink.

    Used from one thread at a time (the sink's, or the CLI's); the counters
    may be read from any thread.

    Args:
        directory: the sink's directory (created on the first append).
        max_bytes: the most the directory's segments may hold.
        identity: written to ``identity.json`` when the directory is created.
    """

    def __init__(
        self, directory: Path, max_bytes: int, identity: dict[str, Any] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.identity = identity
        self.full = False
        self.corrupt_records = 0
        self._corrupt_seen: set[tuple[str, int]] = set()  # counted once each
        self._segments: dict[int, _Segment] = {}
        self._mine: set[str] = set()
        self._bytes: int | None = None
        self._measured_at = -1e18
        self._pid = os.getpid()
        self.generation = 0  # appends so far
        # Something may be waiting to be replayed (we appended, or a segment
        # was there at start): a hint, refreshed by a replay pass.
        self.backlog = bool(segment_files(self.directory, (BATCH,)))
        _OPEN_SPOOLS.add(self)

    # -- appending ------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes of the directory's segments, as last known."""
        return self._bytes if self._bytes is not None else 0

    def measure(self) -> int:
        self._bytes = directory_bytes(self.directory)
        self._measured_at = time.monotonic()
        if self.full and self._bytes < self.max_bytes:
            self.full = False
        return self._bytes

    def append(self, table: pa.Table, kind: int = BATCH, errors: list[str] | None = None) -> int:
        """Add a record; returns its size in bytes.

        Raises:
            SpoolFull: it does not fit within ``max_bytes`` (nothing written).
            OSError: the directory cannot be written (nothing written).
        """
        data = encode(table, kind, errors)
        if self._bytes is None or (
            self._bytes + len(data) > self.max_bytes
            and time.monotonic() - self._measured_at >= RESCAN_MIN_SECONDS
        ):
            self.measure()
        if self.bytes + len(data) > self.max_bytes:
            self.full = True
            raise SpoolFull(
                f"the spool {self.directory} is full: {self.bytes:,} bytes held, "
                f"a record of {len(data):,} would pass spool_max_bytes={self.max_bytes:,}"
            )
        seg = self._segments.get(kind)
        if seg is not None and seg.size + len(data) > SEGMENT_MAX_BYTES and seg.size:
            self._close(kind)
            seg = None
        if seg is None:
            self._make_dir()
            seg = self._segments[kind] = _Segment(self.directory, kind)
            self._mine.add(seg.path.name)
        seg.append(data)
        self._bytes = self.bytes + len(data)
        self.full = False
        self.generation += 1
        if kind == BATCH:
            self.backlog = True
        return len(data)

    def _make_dir(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.identity is not None:
            tmp = self.directory / f".{IDENTITY_FILE}.{secrets.token_hex(4)}.tmp"
            tmp.write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.directory / IDENTITY_FILE)

    def sync(self) -> None:
        """fsync what was appended (power-loss durability)."""
        for seg in self._segments.values():
            seg.sync()

    def active_batch_bytes(self) -> int:
        """Bytes in the batch segment this object is appending to (not replayable
        until :meth:`rotate` closes it)."""
        seg = self._segments.get(BATCH)
        return seg.size if seg is not None else 0

    def rotate(self) -> None:
        """Close the batch segment being appended to, so a replay can take it."""
        self._close(BATCH)

    def _close(self, kind: int) -> None:
        seg = self._segments.pop(kind, None)
        if seg is not None:
            seg.close()

    def close(self) -> None:
        """Close (and fsync) the open segments."""
        errors = []
        for kind in list(self._segments):
            try:
                self._close(kind)
            except OSError as exc:
                errors.append(exc)
        _OPEN_SPOOLS.discard(self)
        if errors:
            raise errors[0]

    def forget(self) -> None:
        """In a forked child: drop the parent's descriptors without unlocking."""
        if self._pid == os.getpid():
            return
        for seg in self._segments.values():
            with contextlib.suppress(OSError):
                os.close(seg.fd)
        self._segments.clear()

    # -- replaying --------------------------------------------------------

    def count_corrupt(self, segment: str, offset: int) -> None:
        if (segment, offset) not in self._corrupt_seen:
            self._corrupt_seen.add((segment, offset))
            self.corrupt_records += 1

    def cursor(self, kinds: tuple[int, ...] = (BATCH,)) -> Cursor:
        """Records to replay, oldest first (see :class:`Cursor`)."""
        return Cursor(self, kinds)


class Cursor:
    """Walks the pending records of a spool directory, oldest segment first.

    Takes each segment's lock (skipping segments a live process holds), hands
    out its pending records one at a time, and deletes the segment once every
    record in it is done. Call :meth:`done` after the backend took a record;
    :meth:`close` (or the end of the walk) releases the locks.
    """

    def __init__(self, spool: Spool, kinds: tuple[int, ...]) -> None:
        self.spool = spool
        self.kinds = kinds
        self.generation = spool.generation
        self.skipped_locked = 0
        active = {seg.path.name for seg in spool._segments.values()}
        self._files = [p for p in segment_files(spool.directory, kinds) if p.name not in active]
        self._fd = -1
        self._mm: Any = None
        self._path: Path | None = None
        self._records: list[tuple[int, int, int, int]] = []
        self._keep = False
        self._handed: Record | None = None
        self._corrupt_here = 0

    def next(self) -> Record | None:
        """The next pending record, or None when there is none left."""
        if self._handed is not None:
            self._keep = True  # handed out and not done: the segment stays
            self._handed = None
        while True:
            if self._path is None and not self._open_next():
                # Segments another live process holds are its own to replay (or a
                # later rescan's); ours, still open, need a rotate() first.
                if self.generation == self.spool.generation and not (
                    self.spool.active_batch_bytes()
                ):
                    self.spool.backlog = False
                return None
            while self._records:
                offset, kind, rows, length = self._records.pop(0)
                assert self._path is not None
                body = self._mm[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
                try:
                    table, errors = _decode(body)
                except Exception:  # checksummed yet unreadable: count it, keep the file
                    self.spool.count_corrupt(self._path.name, offset)
                    self._keep = True
                    continue
                at = _HEADER.unpack_from(self._mm, offset)[7]
                self._handed = Record(
                    kind, rows, at, table, errors, self._path, offset,
                    mine=self._path.name in self.spool._mine,
                )
                return self._handed
            self._finish_segment()

    def done(self, record: Record) -> None:
        """Mark ``record`` replayed (it is never handed out again)."""
        os.pwrite(self._fd, bytes([DONE]), record.offset + STATE_OFFSET)
        if self._handed is record:
            self._handed = None

    def _open_next(self) -> bool:
        while self._files:
            path = self._files.pop(0)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # replayed and deleted by another process meanwhile
            if not _lock(fd):
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
            self._records = []
            for offset, hdr in _walk(self._mm):
                if hdr is None:
                    self.spool.count_corrupt(path.name, offset)
                    continue
                kind, state, rows, length, _ = hdr
                if state != DONE:
                    if kind in self.kinds:
                        self._records.append((offset, kind, rows, length))
                    else:
                        self._keep = True
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
            if self.spool._bytes is not None:
                self.spool._bytes = max(0, self.spool._bytes - size)
            if self.spool.full and self.spool.bytes < self.spool.max_bytes:
                self.spool.full = False
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
        self._records = []
        self._handed = None


# -- inspection (``llamonitor spool status``) --------------------------------


@dataclass
class SegmentInfo:
    path: str
    kind: str
    bytes: int
    active: bool  # a live process is appending to it
    records: int = 0
    events: int = 0
    done_records: int = 0
    corrupt_records: int = 0
    incomplete_tail: bool = False


@dataclass
class SinkSpoolStatus:
    """What one sink directory holds."""

    directory: str
    identity: dict[str, Any] | None
    segments: list[SegmentInfo] = field(default_factory=list)
    records: int = 0
    events: int = 0
    bytes: int = 0
    oldest_ns: int | None = None
    newest_ns: int | None = None
    rejected_records: int = 0
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    corrupt_records: int = 0
    done_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def inspect(directory: Path) -> SinkSpoolStatus:
    """Read every segment of a sink directory (without taking or changing anything)."""
    status = SinkSpoolStatus(str(directory), _read_identity(directory))
    for path in segment_files(directory):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            active = not _lock(fd, exclusive=False)
            size = os.fstat(fd).st_size
            info = SegmentInfo(str(path), path.name.split("-", 1)[0], size, active)
            status.bytes += size
            if size:
                with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
                    _inspect_segment(mm, info, status)
        finally:
            os.close(fd)
        status.segments.append(info)
    return status


def _inspect_segment(mm: Any, info: SegmentInfo, status: SinkSpoolStatus) -> None:
    records = list(_walk(mm))
    for i, (offset, hdr) in enumerate(records):
        if hdr is None:
            if info.active and i == len(records) - 1:
                info.incomplete_tail = True  # probably being appended right now
            else:
                info.corrupt_records += 1
            continue
        kind, state, rows, length, at = hdr
        if state == DONE:
            info.done_records += 1
            continue
        info.records += 1
        info.events += rows
        status.oldest_ns = at if status.oldest_ns is None else min(status.oldest_ns, at)
        status.newest_ns = at if status.newest_ns is None else max(status.newest_ns, at)
        if kind == REJECTED:
            status.rejected_records += 1
            body = mm[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
            try:
                table, errors = _decode(body)
            except Exception:
                info.corrupt_records += 1
                continue
            ids = table.column("event_id").to_pylist()
            ops = table.column("operation_name").to_pylist()
            for j, event_id in enumerate(ids):
                status.rejected_rows.append(
                    {
                        "event_id": event_id,
                        "operation_name": ops[j],
                        "error": errors[j] if errors and j < len(errors) else None,
                        "spooled_at_ns": at,
                    }
                )
        else:
            status.records += 1
            status.events += rows
    status.corrupt_records += info.corrupt_records
    status.done_records += info.done_records


def _read_identity(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sink_dirs(root: Path) -> list[Path]:
    """The sink directories under a spool root."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
