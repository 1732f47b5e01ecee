"""Scores in the ClickHouse store: the ``llamonitor_scores`` table, in the
database of the span table's connection string.

- Columns: those of :data:`~llamonitor.schema._scores.SCORE_SCHEMA`, typed as
  the span table's are (:func:`~llamonitor.storage._clickhouse_ddl.clickhouse_type`):
  ``timestamp`` is ``DateTime('UTC')`` seconds plus ``timestamp_us`` (the
  microseconds; 18.16 has no ``DateTime64``).
- Engine: ``ReplacingMergeTree(version) ORDER BY score_id``, one partition
  (a score written again in a later month must meet its first copy to
  replace it). ``version`` is the score's time in microseconds, so a score
  written again keeps the row with the later ``timestamp``, as the upsert of
  the other SQL stores does; reads say ``FINAL`` (and ``read_scores`` keeps
  the latest row per ``score_id`` on top), so a copy not merged away yet is
  never counted twice.
- Migration: at the first write of a process the table is created if missing,
  and the columns of ``SCORE_SCHEMA`` it lacks (a table of an older
  llamonitor) are added, nullable. ``CREATE TABLE IF NOT EXISTS``, and an
  ``ADD COLUMN`` that failed because another process added the column first
  counting as done, make two processes doing it at once harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.schema._scores import SCORE_SCHEMA, empty_scores
from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _clickhouse_ddl
from llamonitor.storage._clickhouse_ddl import MICROS_SUFFIX, clickhouse_type, q
from llamonitor.storage._sql import StoreError

SCORES_TABLE = "llamonitor_scores"
VERSION_COLUMN = "version"
"""The ``ReplacingMergeTree`` version: the score's time in microseconds."""

_TS = "timestamp"
_TS_US = _TS + MICROS_SUFFIX
_created: set[str] = set()
_lock = threading.Lock()


class ScoresRefused(ValueError):
    """The database refused the scores for their content (not worth retrying)."""


def _target(storage: StorageConfig) -> Any:
    from llamonitor.storage.clickhouse import _Target

    t = _Target(storage)
    t.qualified = f"{q(t.database)}.{q(SCORES_TABLE)}"
    t.label = f"table {t.database}.{SCORES_TABLE}"
    return t


def _column_defs() -> list[str]:
    defs: list[str] = []
    for f in SCORE_SCHEMA:
        if f.name == _TS:
            defs += [f"{q(_TS)} DateTime('UTC')", f"{q(_TS_US)} UInt32"]
        else:
            defs.append(f"{q(f.name)} {clickhouse_type(f)}")
    defs.append(f"{q(VERSION_COLUMN)} UInt64")
    return defs


def _create(execute: Callable[..., Any], t: Any) -> None:
    execute(
        f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(_column_defs())}) "
        f"ENGINE = ReplacingMergeTree({q(VERSION_COLUMN)}) ORDER BY {q('score_id')}"
    )
    have = _clickhouse_ddl.columns(execute, t.database, SCORES_TABLE)
    for f in SCORE_SCHEMA:
        if f.name not in have and f.name != _TS:
            typed = clickhouse_type(f.with_nullable(True))
            _clickhouse_ddl._add_column(  # 18.16 has no IF NOT EXISTS: a race is no failure
                execute, t.database, SCORES_TABLE, f.name,
                f"ALTER TABLE {t.qualified} ADD COLUMN {q(f.name)} {typed}",
            )


def _split(column: pa.ChunkedArray) -> tuple[Any, Any]:
    """UTC seconds and the microseconds within each second, as numpy arrays."""
    us = np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
    return us // 1_000_000, us % 1_000_000


def write(storage: StorageConfig, scores: pa.Table) -> None:
    """Insert ``scores`` (conformed) as one columnar ``INSERT``.

    Raises:
        StoreError: the database failed (``transient`` says whether to retry).
        ScoresRefused: the database refused the rows' content.
        ConfigurationError: a bad connection string or a missing driver.
    """
    t = _target(storage)
    seconds, micros = _split(scores.column(_TS))
    if (seconds < 0).any() or (seconds > 2**32 - 1).any():
        raise ScoresRefused(
            f"clickhouse {t.label}: a score's timestamp is outside 1970..2106 "
            "(what a ClickHouse DateTime holds)"
        )
    names: list[str] = []
    columns: list[Any] = []
    for f in SCORE_SCHEMA:
        if f.name == _TS:
            names += [_TS, _TS_US]
            columns += [seconds.tolist(), micros.tolist()]  # the driver takes epoch seconds
        else:
            names.append(f.name)
            columns.append(scores.column(f.name).to_pylist())
    names.append(VERSION_COLUMN)
    columns.append((seconds * 1_000_000 + micros).tolist())
    sql = f"INSERT INTO {t.qualified} ({', '.join(q(n) for n in names)}) VALUES"
    key = t.secrets.masked + t.qualified
    client: Any = None
    try:
        client = t.client()
        with _lock:
            first = key not in _created
        if first:
            _create(client.execute, t)
            with _lock:
                _created.add(key)
        client.execute(sql, columns, columnar=True, types_check=True)
    except (ConfigurationError, StoreError):
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ScoresRefused(t.secrets.scrub(f"clickhouse {t.label}: {exc}")) from None
    except Exception as exc:
        if t.kind(exc) == "missing":
            with _lock:
                _created.discard(key)
        raise t.error("write scores", exc) from None
    finally:
        if client is not None:
            client.disconnect()


def fetch(storage: StorageConfig, since: datetime | None = None) -> pa.Table:
    """The scores given at or after ``since`` (all without), one row per
    ``score_id`` (``FINAL``), a table of :data:`SCORE_SCHEMA` (empty when the
    table does not exist yet).

    Raises:
        StoreError: the database failed.
    """
    t = _target(storage)
    cols = [n for n in SCORE_SCHEMA.names if n != _TS]
    stamp = f"toInt64(toUInt32({q(_TS)})) * 1000000 + {q(_TS_US)}"
    sql = f"SELECT {stamp}, {', '.join(q(n) for n in cols)} FROM {t.qualified} FINAL"
    params: dict[str, Any] = {}
    if since is not None:
        aware = since if since.tzinfo is not None else since.replace(tzinfo=timezone.utc)
        sql += f" WHERE {q(_TS)} >= toDateTime(%(since)s, 'UTC')"
        params["since"] = int(aware.timestamp())  # whole seconds: the exact cut is DuckDB's
    client: Any = None
    try:
        client = t.client()
        rows = client.execute(sql, params, columnar=True)
    except Exception as exc:
        if t.kind(exc) == "missing":
            return empty_scores()
        raise t.error("read scores", exc) from None
    finally:
        if client is not None:
            client.disconnect()
    if not rows:
        return empty_scores()
    micros_since_epoch, *rest = rows
    arrays = [pa.array(list(micros_since_epoch), pa.int64()).cast(SCORE_SCHEMA.field(_TS).type)]
    arrays += [
        pa.array(list(values), SCORE_SCHEMA.field(name).type)
        for name, values in zip(cols, rest, strict=True)
    ]
    return pa.Table.from_arrays(arrays, names=[_TS, *cols]).select(SCORE_SCHEMA.names).cast(
        SCORE_SCHEMA
    )
