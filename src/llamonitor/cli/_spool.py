"""``llamonitor spool status`` and ``llamonitor spool replay``: the local spool
(events a store could not take, kept on disk) for operators.

Imported by ``llamonitor --help``: the spool, the stores and rich are imported
by the commands when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import dir_option, json_option, no_store

SPOOL_DIR_ENV = "LLMOPS_SPOOL_DIR"
SPOOL_DIR_NAME = ".spool"
"""``llamonitor.schema.config.SPOOL_DIR_NAME`` (a test keeps the two equal)."""
REJECTED_ROWS_SHOWN = 20


def _spool_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--spool-dir",
        "spool_dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar=SPOOL_DIR_ENV,
        show_envvar=True,
        help="The spool's root (default: <--dir>/.spool, as the library's default).",
    )(fn)


def _root(spool_dir: Path | None, directory: Path) -> Path:
    return spool_dir if spool_dir is not None else directory / SPOOL_DIR_NAME


def _time(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def _who(identity: dict[str, Any] | None) -> str:
    if not identity:
        return "?"
    where = identity.get("dsn") or identity.get("output_dir") or ""
    table = f" table {identity['table']}" if identity.get("table") else ""
    return f"{identity.get('backend', '?')} {where}{table}".strip()


def _check_root(root: Path, spool_dir: Path | None, directory: Path) -> None:
    """A spool root that is not there, where it should be: an error with a hint.

    (A store without a spool is fine: nothing was ever spooled there.)
    """
    if root.is_dir():
        return
    if spool_dir is not None:
        raise click.ClickException(
            f"no spool at {str(root)!r}: is --spool-dir (or ${SPOOL_DIR_ENV}) right?"
        )
    if not directory.exists():
        raise no_store(directory)


@click.group()
def spool() -> None:
    """The local spool: events a store could not take, kept until it can.

    The library writes them back by itself once the store is reachable; these
    commands show what is waiting and write it back on demand.
    """


@spool.command()
@_spool_dir_option
@dir_option
@json_option
def status(spool_dir: Path | None, directory: Path, as_json: bool) -> None:
    """What each sink's spool holds: records, events, bytes, times, rejected rows."""
    root = _root(spool_dir, directory)
    _check_root(root, spool_dir, directory)
    from llamonitor.analysis import _format as fmt
    from llamonitor.cli import _render as render
    from llamonitor.transport import spool as _spool

    sinks = [_spool.inspect(d) for d in _spool.sink_dirs(root)] if root.is_dir() else []
    if as_json:
        out = []
        for s in sinks:
            d = s.to_dict()
            d["oldest"], d["newest"] = _time(s.oldest_ns), _time(s.newest_ns)
            out.append(d)
        render_json({"spool_dir": str(root), "sinks": out})
        return
    if not sinks:
        render.emit(
            f"Nothing spooled in {root}: every event reached its store."
            if root.is_dir()
            else f"Nothing spooled: no spool directory in {directory} ({root.name}); "
            "nothing has been kept for a store that was down."
        )
        return
    table = render.new_table(f"spool {root}")
    for col in ("sink", "store", "records", "events", "size", "oldest (UTC)", "newest (UTC)",
                "rejected rows", "corrupt"):
        table.add_column(col, justify="right" if col in ("records", "events", "size") else "left")
    for s in sinks:
        table.add_row(
            Path(s.directory).name,
            _who(s.identity),
            f"{s.records:,}",
            f"{s.events:,}",
            fmt.size(s.bytes),
            fmt.timestamp(_time(s.oldest_ns)),
            fmt.timestamp(_time(s.newest_ns)),
            f"{len(s.rejected_rows):,}",
            f"[red]{s.corrupt_records}[/]" if s.corrupt_records else "0",
        )
    render.emit(table)
    console = render.console()
    for s in sinks:
        if not s.rejected_rows:
            continue
        console.print(
            f"[bold]rejected by the store[/] ({Path(s.directory).name}; "
            "`llamonitor spool replay --rejected` retries them):"
        )
        for r in s.rejected_rows[:REJECTED_ROWS_SHOWN]:
            console.print(
                f"  {r['event_id']}  {r['operation_name']}  [red]{r['error']}[/]",
                soft_wrap=True,
                markup=True,
            )
        if len(s.rejected_rows) > REJECTED_ROWS_SHOWN:
            console.print(f"  ... and {len(s.rejected_rows) - REJECTED_ROWS_SHOWN:,} more (--json)")


def render_json(obj: Any) -> None:
    from llamonitor.cli import _render as render

    click.echo(render.dumps(obj))


@spool.command()
@_spool_dir_option
@dir_option
@click.option("--backend", envvar="LLMOPS_BACKEND", help="The store's backend (as in the config).")
@click.option(
    "--dsn", envvar="LLMOPS_CONNECTION_STRING", help="The database's connection string."
)
@click.option("--table", envvar="LLMOPS_TABLE_NAME", help="The table (default metric_events).")
@click.option(
    "--sink",
    help="Replay this spool subdirectory (as `spool status` lists them) into the store, "
    "instead of the one that belongs to the store.",
)
@click.option("--rejected", is_flag=True, help="Also retry the rows the store rejected.")
@json_option
def replay(
    spool_dir: Path | None,
    directory: Path,
    backend: str | None,
    dsn: str | None,
    table: str | None,
    sink: str | None,
    rejected: bool,
    as_json: bool,
) -> None:
    """Write the spooled events to the store now (exit 1 if it is still down).

    Each record is marked done as soon as the store took it, so an interrupted
    replay can be run again: nothing is lost or written twice (except the one
    batch in flight, which SQL stores drop by event_id). A record the store
    refuses (an error other than being unreachable) is passed by; if the store
    took other records meanwhile and refuses it once more, it is set aside with
    the rejected rows, with the store's error.
    """
    from llamonitor.cli._replay import replay_spool

    root = _root(spool_dir, directory)
    _check_root(root, spool_dir, directory)
    replay_spool(root, directory, backend, dsn, table, sink, rejected, as_json)
