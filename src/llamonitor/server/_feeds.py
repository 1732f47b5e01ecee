"""The live tail's feeds: where the hub's spans come from.

- :class:`TapFeed`: the in-process tap (``llamonitor._taps``). The
  primary sink hands it each table right after writing it; the feed queues the
  table (the sink's thread only appends to a deque) and publishes it from its
  own thread. Only when the server serves the store of this process's writer.
- :class:`ParquetPoller`: other processes writing the same Parquet store.
  Every ``poll_interval_seconds`` it lists the store's files (``data_files``)
  and reads the new ones only. A file written by compaction holds rows seen
  already (in the files it merged): they are deduplicated by event id, and
  rows that ended before the poller started, or more than
  ``COMPACTED_SLACK_SECONDS`` before the previous poll, are not read at all
  (they were in the store when the client came, or the hub may have
  forgotten their ids).
- :class:`SqlPoller`: other processes writing the same SQL store. Every poll
  reads the spans that *started* in the last ``SQL_LOOKBACK_SECONDS`` (the
  store applies this filter itself) and *ended* after the previous poll minus
  ``SQL_SLACK_SECONDS``; the hub drops the ones it has sent. The limits: a
  span longer than ``SQL_LOOKBACK_SECONDS`` (it started before the window),
  or written more than ``SQL_SLACK_SECONDS`` after it ended (a writer's spool
  replayed after an outage), is not shown live; it is in the store.

A poller runs only while a client is connected. When it (re)starts it takes
the store as it is as seen: a client gets new spans only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import duckdb

from llamonitor.server._deps import ServerState
from llamonitor.server._live import Hub
from llamonitor.server._store import ServerStore
from llamonitor.storage._duckdb import DuckDBQuery, Filters
from llamonitor.storage._layout import data_files
from llamonitor.storage._relations import parquet_relation

__all__ = ["ParquetPoller", "SqlPoller", "TapFeed", "start_feeds"]

logger = logging.getLogger("llamonitor.server")

TAP_QUEUE_TABLES = 256
"""Tables the tap holds for its thread; past it the oldest is dropped (counted)."""
COMPACTED_SLACK_SECONDS = 60.0
SQL_LOOKBACK_SECONDS = 300.0
SQL_SLACK_SECONDS = 15.0
IDLE_WAIT_SECONDS = 1.0
"""A poller with no client checks for a stop this often."""


class Feed(Protocol):
    def stop(self) -> None: ...


def _end_ms_sql() -> str:
    return 'epoch_ms("timestamp") + coalesce(duration_ms, 0)'


def _columns(hub: Hub) -> str:
    return ", ".join(f'"{c}"' for c in hub.columns())


class TapFeed:
    """The spans this process's writer writes, at once."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.dropped_tables = 0
        self._tables: deque[Any] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llamonitor-live-tap", daemon=True)

    def __call__(self, table: Any) -> None:
        """The tap (on the sink's thread): queue the table and return."""
        if not self.hub.has_clients.is_set():
            return
        with self._cv:
            if len(self._tables) >= TAP_QUEUE_TABLES:
                self._tables.popleft()
                self.dropped_tables += 1
            self._tables.append(table)
            self._cv.notify()

    def start(self) -> TapFeed:
        from llamonitor import _taps

        self._thread.start()
        _taps.add_tap(self)
        return self

    def stop(self) -> None:
        from llamonitor import _taps

        _taps.remove_tap(self)
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._tables and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                table = self._tables.popleft()
            try:
                self.hub.publish_table(table)
            except Exception:  # pragma: no cover - a bug: log it, keep the feed
                logger.exception("llamonitor: the live tap could not publish a batch")


class _Poller:
    """A thread that polls the store while a client is connected."""

    name = "poller"

    def __init__(self, hub: Hub, interval: float) -> None:
        self.hub = hub
        self.interval = interval
        self.polls = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"llamonitor-live-{self.name}", daemon=True
        )

    def start(self) -> _Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.hub.has_clients.set()  # wake a poller waiting for a client
        self._thread.join(5.0)

    def _run(self) -> None:
        active = False
        while not self._stop.is_set():
            if self.hub.client_count() == 0:
                active = False
                self.hub.has_clients.wait(IDLE_WAIT_SECONDS)
                continue
            try:
                if not active:
                    self.prime()
                    active = True
                elif self._stop.wait(self.interval):
                    return
                else:
                    self.poll()
                    self.polls += 1
            except Exception as exc:
                self.errors += 1
                if self.errors == 1:
                    logger.warning(
                        "llamonitor: the live %s failed (it keeps polling; further "
                        "failures are counted): %r", self.name, exc,
                    )
                if self._stop.wait(self.interval):
                    return

    def prime(self) -> None:
        """Take the store as it is as seen."""
        raise NotImplementedError

    def poll(self) -> None:
        raise NotImplementedError


class ParquetPoller(_Poller):
    """New files of a Parquet store (see the module's docstring)."""

    name = "parquet-poller"

    def __init__(self, hub: Hub, interval: float, directory: Path) -> None:
        super().__init__(hub, interval)
        self.directory = directory
        self._files: list[Path] = []
        self._query = DuckDBQuery(lambda _filters: parquet_relation(self._files))
        self._seen: set[Path] = set()
        self._primed = self._last = 0.0

    def stop(self) -> None:
        super().stop()
        if not self._thread.is_alive():
            self._query.close()

    def prime(self) -> None:
        self._primed = time.time()
        self._seen = set(data_files(self.directory))
        self._last = self._primed

    def poll(self) -> None:
        started = time.time()
        files = data_files(self.directory)
        new = [f for f in files if f not in self._seen]
        self._seen = set(files)
        fresh = [f for f in new if "_compacted_" not in f.name]
        merged = [f for f in new if "_compacted_" in f.name]
        if fresh:
            self._read(fresh, "")
        if merged:
            horizon = max(self._primed, self._last - COMPACTED_SLACK_SECONDS) * 1000.0
            self._read(merged, f"WHERE {_end_ms_sql()} >= {horizon:.3f}")
        self._last = started

    def _read(self, files: list[Path], where: str) -> None:
        sql = f"SELECT {_columns(self.hub)} FROM {{rel}} {where}"
        for _attempt in range(3):
            self._files = files
            try:
                table = self._query.run(sql)
            except duckdb.IOException:
                # A file merged away by compaction since it was listed: its rows
                # are in the merged file, read at the next poll.
                files = [f for f in files if f.exists()]
                if not files:
                    return
                continue
            self.hub.publish_table(table)
            return


class SqlPoller(_Poller):
    """Recent spans of a SQL store (see the module's docstring)."""

    name = "sql-poller"

    def __init__(self, hub: Hub, interval: float, store: ServerStore) -> None:
        super().__init__(hub, interval)
        self.store = store
        self._last = 0.0

    def _recent(self, now: float, ended_after: float) -> Any:
        since = datetime.fromtimestamp(now, timezone.utc) - timedelta(seconds=SQL_LOOKBACK_SECONDS)
        sql = (
            f'SELECT {_columns(self.hub)} FROM {{rel}} WHERE "timestamp" >= ? '
            f"AND {_end_ms_sql()} >= ?"
        )
        return self.store.run(sql, [since, ended_after * 1000.0], Filters(since=since))

    def prime(self) -> None:
        now = time.time()
        table = self._recent(now, now - SQL_SLACK_SECONDS)
        if table is not None:
            self.hub.mark_seen(str(e) for e in table.column("event_id").to_pylist())
        self._last = now

    def poll(self) -> None:
        now = time.time()
        self.hub.publish_table(self._recent(now, self._last - SQL_SLACK_SECONDS))
        self._last = now


def start_feeds(hub: Hub, s: ServerState) -> list[Feed]:
    """The feeds of the app's store: the tap when the server is in the
    writer's process and serves its store (``extras["live_tap"]``), and the
    store's poller (none for a JSON Lines file)."""
    feeds: list[Feed] = []
    if s.extras.get("live_tap"):
        feeds.append(TapFeed(hub).start())
    info = s.store.info
    interval = s.config.poll_interval_seconds
    if info.kind == "parquet" and info.directory is not None:
        feeds.append(ParquetPoller(hub, interval, info.directory).start())
    elif info.kind in ("postgres", "mysql", "sqlite"):
        feeds.append(SqlPoller(hub, interval, s.store).start())
    return feeds
