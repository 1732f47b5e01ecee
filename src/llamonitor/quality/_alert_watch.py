"""The watcher: evaluates a rule file over a store every interval and delivers
the notifications; and the periodic tasks ``llamonitor watch`` and ``serve`` run.

::

    watcher = Watcher(load_rules("alerts.toml"), store="./monitoring_data")
    watcher.start()              # the notifiers' threads
    watcher.evaluate()           # one evaluation (the watch loop calls it every interval)
    watcher.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from llamonitor.quality._alert_eval import Evaluator, Observation, Query
from llamonitor.quality._alert_notify import Deliverer, post, redact
from llamonitor.quality._alert_rules import Notifier, RuleSet
from llamonitor.quality._alert_state import StateStore, group_label
from llamonitor.storage._duckdb import DuckDBQuery, Filters, parquet_relation

logger = logging.getLogger("llamonitor.alerts")

STATE_FILE_NAME = ".alerts-state.json"
FIGURES_PER_RULE = 50
"""Groups per rule whose last figures ``snapshot`` lists (for the UI)."""


def parquet_query(directory: str | os.PathLike[str]) -> DuckDBQuery:
    """The Parquet store at ``directory``, listing only the day partitions a
    query's ``since`` reaches (an evaluation of the last minutes opens today's
    files, not the store's)."""
    from llamonitor.storage._layout import data_files

    root = Path(directory)

    def source(f: Filters) -> Any:
        files = data_files(root)
        if f.since is not None:
            first = f.since.astimezone(timezone.utc).date()  # partitions: a span's UTC day
            files = [p for p in files if _day_at_least(p, root, first)]
        return parquet_relation(files)

    query = DuckDBQuery(source)
    # Each evaluation opens the same files again: keep their footers.
    query._con.execute("SET parquet_metadata_cache = true")
    return query


def _day_at_least(path: Path, root: Path, first: date) -> bool:
    part = path.parent.name if path.parent != root else ""
    try:
        return date.fromisoformat(part) >= first
    except ValueError:
        return True  # not a day partition (session=..., the root): always read


def default_state_path(directory: Path | None, dsn: str | None) -> Path:
    """Where the state lives: in the Parquet directory, next to a SQLite file or a
    JSON Lines file, else in the working directory."""
    if dsn is None and directory is not None:
        return directory / STATE_FILE_NAME if directory.is_dir() or not directory.exists() \
            else directory.with_name(directory.name + STATE_FILE_NAME)
    if dsn is not None and dsn.startswith("sqlite"):
        from llamonitor.storage.sqlite import database_path

        db = database_path(dsn)
        return db.with_name(db.name + STATE_FILE_NAME)
    return Path(STATE_FILE_NAME)


class Watcher:
    """Evaluates ``rules`` over ``query`` and notifies.

    Args:
        rules: the rule set (``load_rules``).
        query: the store's query side, or a Parquet directory.
        state_path: the state file (default: ``rules.settings.state``, else
            next to the store; ``None`` for a directory given as ``query``:
            ``.alerts-state.json`` in it).
        send: how a notification is sent (tests; default :func:`post`).
        clock: the current time in seconds (tests).
    """

    def __init__(
        self,
        rules: RuleSet,
        query: Query | str | os.PathLike[str],
        state_path: str | os.PathLike[str] | None = None,
        send: Callable[[Notifier, dict[str, Any]], None] = post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self._owned: DuckDBQuery | None = None
        if isinstance(query, (str, os.PathLike)):
            directory = Path(query)
            self._owned = parquet_query(directory)
            self.query: Query = self._owned
            if state_path is None and rules.settings.state is None:
                state_path = default_state_path(directory, None)
        else:
            self.query = query
        if state_path is None and rules.settings.state is not None:
            state_path = rules.settings.state
        self.state = StateStore(None if state_path is None else Path(state_path))
        self.evaluator = Evaluator(self.query, rules.settings.late)
        self.clock = clock
        self.deliverers = [Deliverer(n, self.state, send, clock) for n in rules.notifiers]
        self.errors: dict[str, str] = {}
        self.latest: dict[str, list[Observation]] = {}
        """Each rule's figures at its last evaluation (every group, ok ones too)."""
        self.evaluations = 0
        self._started = False

    def start(self) -> Watcher:
        if not self._started:
            self._started = True
            for d in self.deliverers:
                d.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the notifiers (what they had not delivered stays in the state file)."""
        deadline = time.monotonic() + timeout
        if self._started:
            for d in self.deliverers:
                d.stop(max(0.0, deadline - time.monotonic()))
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Evaluate every rule once; returns the notifications made (queued for
        delivery). A rule that fails is logged and skipped (its error in :attr:`errors`)."""
        at = now if now is not None else datetime.fromtimestamp(self.clock(), timezone.utc)
        t = at.timestamp()
        names = [n.name for n in self.rules.notifiers]
        made: list[dict[str, Any]] = []
        with self.state.lock:
            before = self.state.signature()
        for rule in self.rules.rules:
            try:
                observations = self.evaluator.evaluate(rule, at)
            except Exception as exc:  # a store that fails now may answer at the next interval
                message = f"{type(exc).__name__}: {exc}"
                if self.errors.get(rule.name) != message:
                    logger.error("alerts: rule %r failed: %s", rule.name, message)
                self.errors[rule.name] = message
                self.evaluator.forget(rule.name)
                continue
            self.errors.pop(rule.name, None)
            self.latest[rule.name] = observations
            targets = names if rule.notify is None else list(rule.notify)
            made += self.state.apply(rule, observations, t, targets)
        self.state.data.evaluated_at = t
        self.state.save_if_changed(before)
        self.evaluations += 1
        return made

    def snapshot(self) -> dict[str, Any]:
        """For ``GET /api/alerts``: the rules, current alerts, history, errors."""
        out = self.state.snapshot()
        notifiers = {n.name: n for n in self.rules.notifiers}
        for d in out["pending_notifications"]:  # a state file written before redact()
            if d["last_error"]:
                d["last_error"] = redact(d["last_error"], notifiers.get(d["notifier"]))
        out["rules"] = [
            {"name": r.name, "kind": r.kind, "severity": r.severity,
             **({"metric": r.metric, "comparison": r.comparison, "threshold": r.threshold,
                 "window_seconds": r.window, "for_seconds": r.for_seconds}
                if r.kind == "threshold" else {"signal": r.signal, "bucket_seconds": r.bucket}),
             "group_by": list(r.group_by), "error": self.errors.get(r.name),
             "description": r.description, "filters": r.filters(),
             "groups": self._figures(r.name)}
            for r in self.rules.rules
        ]
        out["notifiers"] = [
            {"name": d.notifier.name, "type": d.notifier.type, "sent": d.sent,
             "failures": d.failures, "last_error": d.last_error,
             "last_error_at": _iso(d.last_error_at)}
            for d in self.deliverers
        ]
        return out

    def _figures(self, rule: str) -> list[dict[str, Any]]:
        """The rule's last figures, the groups that hold first (at most
        :data:`FIGURES_PER_RULE`)."""
        obs = sorted(self.latest.get(rule, ()), key=lambda o: (not o.holds, o.group))
        return [
            {"group": dict(o.group), "group_label": group_label(o.group), "value": o.value,
             "count": o.count, "holds": o.holds, "detail": o.detail}
            for o in obs[:FIGURES_PER_RULE]
        ]


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


# -- periodic tasks ---------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicTask:
    """Work ``llamonitor watch`` (and ``serve``) runs every ``interval_seconds``:
    ``run`` is a plain function, run on a worker thread so that it never blocks
    the loop; an exception is logged and the task runs again at its next time."""

    name: str
    interval_seconds: float
    run: Callable[[], Any]


async def run_periodic(tasks: Sequence[PeriodicTask], stop: asyncio.Event,
                       once: bool = False) -> None:
    """Run each task at once, then every interval, until ``stop`` is set."""

    async def loop(task: PeriodicTask) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(task.run)
            except Exception:
                logger.exception("llamonitor: periodic task %r failed", task.name)
            if once:
                return
            left = task.interval_seconds - (time.monotonic() - started)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, left))
            except asyncio.TimeoutError:
                pass

    runs: list[Awaitable[None]] = [loop(t) for t in tasks]
    await asyncio.gather(*runs)
