"""``llamonitor watch --rules FILE``: evaluate alert rules over any store, every interval.

It runs a list of periodic tasks: the alert rules' evaluation, and whatever
:data:`WATCH_TASKS` adds (another part of llamonitor, such as retention,
appends a factory there: it is called with the :class:`WatchContext` and
returns a ``PeriodicTask`` or ``None``).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import dir_option, dsn_options, store_errors, store_label


@dataclass(frozen=True)
class WatchContext:
    """What a periodic task of ``watch`` may need: the store it watches."""

    directory: Path
    dsn: str | None
    table: str | None
    query: Any
    """The store's query side (a ``DuckDBQuery``)."""


WATCH_TASKS: list[Callable[[WatchContext], Any]] = []
"""Factories of more periodic tasks for ``llamonitor watch`` (``PeriodicTask`` or ``None``)."""


def _log_to_stderr() -> None:
    log = logging.getLogger("llamonitor.alerts")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


@click.command()
@click.option(
    "--rules", "rules_path", required=True, metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The alert rules: a .toml, .yaml or .yml file (see docs/alerts.md).",
)
@dir_option
@dsn_options
@click.option(
    "--state", "state_path", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="The alert state file (default: settings.state, else .alerts-state.json next to "
    "the store).",
)
@click.option("--interval", type=click.FloatRange(min=0.05), default=None, metavar="SECONDS",
              help="Evaluate this often (default: the file's settings.interval, 15 s).")
@click.option("--once", is_flag=True,
              help="Evaluate once, deliver the notifications (or give up after 30 s), exit.")
@store_errors(ImportError)
def watch(
    rules_path: Path,
    directory: Path,
    dsn: str | None,
    table: str | None,
    state_path: Path | None,
    interval: float | None,
    once: bool,
) -> None:
    """Evaluate alert rules over the store and send their notifications.

    Firing and resolved notifications go to the rule file's notifiers
    (webhooks, Slack, the log); the state survives a restart.
    """
    from llamonitor.cli._options import _use_dsn, open_store
    from llamonitor.quality._alert_rules import load_rules
    from llamonitor.quality._alert_watch import (
        PeriodicTask,
        Watcher,
        default_state_path,
        parquet_query,
        run_periodic,
    )

    rules = load_rules(rules_path)
    use_dsn = bool(dsn) and _use_dsn(dsn)
    query = open_store(directory, dsn, table) if use_dsn or directory.is_file() \
        else parquet_query(directory)
    if state_path is None and rules.settings.state is None:
        state_path = default_state_path(None if use_dsn else directory, dsn if use_dsn else None)
    _log_to_stderr()
    watcher = Watcher(rules, query, state_path).start()
    every = interval if interval is not None else rules.settings.interval
    tasks = [PeriodicTask("alerts", every, watcher.evaluate)]
    context = WatchContext(directory, dsn if use_dsn else None, table, query)
    for factory in WATCH_TASKS:
        task = factory(context)
        if task is not None:
            tasks.append(task)
    click.echo(
        f"llamonitor watching {store_label(directory, dsn)}: {len(rules.rules)} rule(s) every "
        f"{every:g} s, state in {watcher.state.path}", err=True,
    )
    import asyncio  # only when the command runs (--help stays light)

    try:
        asyncio.run(_run(tasks, once, run_periodic))
        if once:
            _drain(watcher, 30.0)
    finally:
        watcher.close()
        query.close()


async def _run(tasks: list[Any], once: bool, run_periodic: Any) -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    await run_periodic(tasks, stop, once=once)


def _drain(watcher: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while watcher.state.data.outbox and time.monotonic() < deadline:
        time.sleep(0.05)
