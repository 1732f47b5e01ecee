"""The local spool: what a sink could not write, kept on disk until it can.

``_spool`` (the directory of one sink: appending, limits, this process's
records), ``_segments`` (segment files, their names and locks), ``_format``
(the record layout), ``_cursor`` (replaying records, oldest first), ``_names``
(which directory belongs to which store), ``_status`` (what a spool holds, for
``llamonitor spool status``), ``_outage`` (a store that is down, backoff,
suspect records) and ``_spooling`` (the spool side of a sink). See
``docs/spool.md``.
"""

from llamonitor.transport.spool._cursor import Cursor
from llamonitor.transport.spool._format import BATCH, HEADER_SIZE, KIND_NAMES, REJECTED, Record
from llamonitor.transport.spool._names import describe_dsn, sink_dir_name, sink_identity
from llamonitor.transport.spool._outage import is_transient
from llamonitor.transport.spool._segments import directory_bytes, segment_files
from llamonitor.transport.spool._spool import (
    DEFAULT_REJECTED_MAX_BYTES,
    DEFAULT_SPOOL_MAX_BYTES,
    Spool,
    SpoolFull,
)
from llamonitor.transport.spool._spooling import SpoolingSink, error_text
from llamonitor.transport.spool._status import SinkSpoolStatus, inspect, sink_dirs

__all__ = [
    "BATCH",
    "DEFAULT_REJECTED_MAX_BYTES",
    "DEFAULT_SPOOL_MAX_BYTES",
    "HEADER_SIZE",
    "KIND_NAMES",
    "REJECTED",
    "Cursor",
    "Record",
    "SinkSpoolStatus",
    "Spool",
    "SpoolFull",
    "SpoolingSink",
    "describe_dsn",
    "directory_bytes",
    "error_text",
    "inspect",
    "is_transient",
    "segment_files",
    "sink_dir_name",
    "sink_dirs",
    "sink_identity",
]
