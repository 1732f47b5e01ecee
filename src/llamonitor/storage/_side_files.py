"""The rows kept beside the spans (metric points, scores) in the file stores,
and which stores hold them.

Parquet (``parquet``, and the file store ``jsonl``): files under
``<output_dir>/<directory>/YYYY-MM-DD/<prefix>_*.parquet`` (the UTC day of
each row's ``timestamp``), written atomically like the span files (hidden
temporary name, fsync, rename; see ``_files``), with names unique across
processes; the span reader never lists these directories. The SQL stores
keep them in a table of their own (``_sql_side``), as ClickHouse does
(``_clickhouse_side``).
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage._files import sweep_in_background

FILE_STORES = frozenset({"parquet", "jsonl"})
SQL_STORES = frozenset({"sqlite", "postgres", "mysql"})
CLICKHOUSE = "clickhouse"
"""Holds them in tables of its own too (``_clickhouse_side``), not through ``_sql_side``."""
_ALIASES = {"postgresql": "postgres", "mariadb": "mysql"}

_seq = itertools.count()
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def store_kind(storage: StorageConfig, what: str) -> str:
    """``parquet``, the SQL backend's name or ``clickhouse`` for ``storage``.

    Raises:
        ConfigurationError: a backend that cannot hold ``what`` (``memory``,
            a custom class), naming ``storage.backend``.
    """
    backend = storage.backend
    if isinstance(backend, str):
        backend = _ALIASES.get(backend, backend)
        if backend in FILE_STORES:
            return "parquet"
        if backend in SQL_STORES or backend == CLICKHOUSE:
            return backend
    raise ConfigurationError(
        "storage.backend",
        f"{what} are stored by the parquet, jsonl, sqlite, postgres, mysql and clickhouse "
        f"backends, not {backend!r}",
    )


def _utc(value: datetime) -> datetime:
    return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).astimezone(
        timezone.utc
    )


def day_files(root: Path, start: datetime | None = None, end: datetime | None = None) -> list[Path]:
    """The complete files under ``root``, of the UTC days ``[start, end)`` touches."""
    if not root.is_dir():
        return []
    lo = _utc(start).strftime("%Y-%m-%d") if start is not None else None
    hi = _utc(end).strftime("%Y-%m-%d") if end is not None else None
    found: list[Path] = []
    for day in sorted(os.listdir(root)):
        if day.startswith(".") or (lo is not None and day < lo) or (hi is not None and day > hi):
            continue
        directory = root / day
        if directory.is_dir():
            found.extend(
                directory / n
                for n in sorted(os.listdir(directory))
                if n.endswith(".parquet") and not n.startswith(".")
            )
    return found


def file_name(prefix: str) -> str:
    """A new file's name: the time, the pid, a sequence and a random tail."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"{prefix}_{now}_{os.getpid()}_{next(_seq):06d}_{secrets.token_hex(3)}.parquet"


def write_by_day(
    root: Path, table: pa.Table, prefix: str, write_file: Callable[[pa.Table, Path], None]
) -> None:
    """``write_file(part, path)`` once per UTC day of ``table``'s ``timestamp``,
    into ``root/YYYY-MM-DD/``; the first write of a process under ``root``
    sweeps the temporary files a dead writer left there."""
    import pyarrow.compute as pc

    days = pc.strftime(table.column("timestamp"), format="%Y-%m-%d", locale="C")
    unique = pc.unique(days).to_pylist()
    for day in unique:
        part = table.filter(pc.equal(days, day)) if len(unique) > 1 else table
        directory = root / str(day)
        directory.mkdir(parents=True, exist_ok=True)
        with _swept_lock:
            first = root not in _swept
            _swept.add(root)
        if first:
            sweep_in_background(root)
        write_file(part, directory / file_name(prefix))
