"""What a spool holds, read without taking or changing anything
(``llamonitor spool status``)."""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamonitor.transport.spool._format import DONE, HEADER_SIZE, REJECTED, decode, walk
from llamonitor.transport.spool._segments import IDENTITY_FILE, lock, segment_files, unlock


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
        return asdict(self)


def inspect(directory: Path) -> SinkSpoolStatus:
    """Read every segment of a sink directory (without taking or changing anything)."""
    status = SinkSpoolStatus(str(directory), read_identity(directory))
    for path in segment_files(directory):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            # Only a glance at the lock (is a live process appending?): held
            # while reading, it would make a sink skip the segment meanwhile.
            active = not lock(fd, exclusive=False)
            if not active:
                unlock(fd)
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
    records = list(walk(mm))
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
                table, errors = decode(body)
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


def read_identity(directory: Path) -> dict[str, Any] | None:
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
