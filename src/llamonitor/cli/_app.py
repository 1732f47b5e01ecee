"""The ``llamonitor`` command line: read the store back, compact it, run a demo."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llamonitor.cli import _render as render
from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    open_store,
    store_label,
    time_options,
)
from llamonitor.schema.config import ConfigurationError
from llamonitor.storage import StoreError, parquet
from llamonitor.storage._duckdb import GROUPABLE_COLUMNS

F = TypeVar("F", bound=Callable[..., Any])


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _echo_json(obj: Any) -> None:
    click.echo(render.dumps(obj))


def _store_errors(fn: F) -> F:
    """Turn failures reading the store into a one-line error and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except duckdb.Error as exc:
            raise click.ClickException(f"cannot read the store: {exc}") from exc
        except (OSError, parquet.CompactionError, ConfigurationError, StoreError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamonitor")
def cli() -> None:
    """Read back, summarize and compact what llamonitor recorded.

    The store is the Parquet output_dir (--dir, default ./monitoring_data or
    $LLMOPS_STORAGE__OUTPUT_DIR). Try `llamonitor demo` first.
    """


@cli.command()
@dir_option
@dsn_options
@click.option("--session", help="Only this session id.")
@click.option("--trace", "trace_id", help="Only this trace id.")
@click.option("--operation", help="Only this operation name (globs like 'tool.*' work).")
@time_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many."
)
@json_option
@_store_errors
def events(
    directory: Path,
    dsn: str | None,
    table: str | None,
    session: str | None,
    trace_id: str | None,
    operation: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """The latest spans, newest first."""
    with open_store(directory, dsn, table) as store:
        rows = store.events(session, trace_id, operation, since, until, limit)
    if as_json:
        _echo_json([render.for_json(r) for r in rows])
    elif not rows:
        _out().print(
            _nothing_found(store_label(directory, dsn), session, trace_id, operation, since, until)
        )
    else:
        _out().print(render.events_table(rows))


def _nothing_found(directory: Path | str, *filters: object) -> str:
    if any(f is not None for f in filters):
        return f"No spans in {directory} match these filters."
    return f"No spans recorded in {directory} yet."


@cli.command()
@click.argument("trace_id")
@dir_option
@dsn_options
@json_option
@_store_errors
def trace(
    trace_id: str, directory: Path, dsn: str | None, table: str | None, as_json: bool
) -> None:
    """The span tree of one trace (TRACE_ID or a unique prefix of it)."""
    with open_store(directory, dsn, table) as store:
        spans = store.trace(trace_id)
        if not spans:
            candidates = store.find_trace_ids(trace_id, limit=6)
            if not candidates:
                raise click.ClickException(
                    f"trace {trace_id!r} not found in {store_label(directory, dsn)}"
                )
            if len(candidates) > 1:
                raise click.ClickException(
                    f"{trace_id!r} is the start of several traces: "
                    + ", ".join(candidates[:5])
                    + (", ..." if len(candidates) > 5 else "")
                )
            trace_id = candidates[0]
            spans = store.trace(trace_id)
    if as_json:
        tree = render.strip_tree(render.build_tree(spans))
        _echo_json({"trace_id": trace_id, "span_count": len(spans), "spans": tree})
    else:
        _out().print(render.trace_tree(trace_id, spans))


@cli.command()
@dir_option
@dsn_options
@time_options
@click.option("--session", help="Only this session id.")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(GROUPABLE_COLUMNS),
    default="operation_name",
    show_default=True,
    help="Group by this column.",
)
@json_option
@_store_errors
def stats(
    directory: Path,
    dsn: str | None,
    table: str | None,
    since: datetime | None,
    until: datetime | None,
    session: str | None,
    group_by: str,
    as_json: bool,
) -> None:
    """Counts, error rate and duration percentiles per operation (or --by column);
    tokens and cost too where spans have them (--by model, --by provider...)."""
    with open_store(directory, dsn, table) as store:
        groups = store.stats(since, until, group_by, session)
        total = store.stats(since, until, None, session)
        overview = store.overview(session) if groups else None
    if as_json:
        _echo_json({"group_by": group_by, "groups": groups, "total": total[0] if total else None})
        return
    console = _out()
    if not groups:
        console.print(_nothing_found(store_label(directory, dsn), session, since, until))
        return
    print_overview(console, overview or {})
    console.print(render.stats_table(groups, group_by, total[0] if total else None))
    if render.has_llm_figures(groups):
        console.print(render.llm_table(groups, group_by, total[0] if total else None))


def print_overview(console: Console, o: dict[str, Any]) -> None:
    line = (
        f"[bold]{o.get('spans', 0):,}[/] spans · {o.get('sessions', 0):,} sessions · "
        f"{o.get('traces', 0):,} traces · [red]{o.get('errors', 0):,}[/] failed"
    )
    if o.get("first") is not None:
        line += (
            f" · {render.timestamp(o['first'])} → {render.timestamp(o['last'])} UTC"
        )
    console.print(line)


@cli.command()
@dir_option
@click.option(
    "--min-files",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Merge a run of small files only if it has at least this many.",
)
@click.option(
    "--target-rows",
    type=click.IntRange(min=1),
    default=parquet.DEFAULT_TARGET_ROWS,
    show_default=True,
    help="Files this large are left alone; merged files hold at most this many rows.",
)
@json_option
@_store_errors
def compact(directory: Path, min_files: int, target_rows: int, as_json: bool) -> None:
    """Merge small Parquet files, per partition, without losing a row."""
    if not directory.is_dir():
        raise click.ClickException(f"no store at {str(directory)!r}")
    err = _err()
    with Progress(
        TextColumn("compacting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
    ) as bar:
        task = bar.add_task("compact", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = parquet.compact(
            directory, min_files=min_files, target_rows=target_rows, progress=progress
        )
    if as_json:
        _echo_json(result.to_dict())
        return
    table = render.new_table(f"compacted {directory}")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("files", f"{result.files_before:,}", f"{result.files_after:,}")
    table.add_row("rows", f"{result.rows_before:,}", f"{result.rows_after:,}")
    table.add_row("size", render.size(result.bytes_before), render.size(result.bytes_after))
    console = _out()
    console.print(table)
    console.print(
        f"merged {result.files_merged:,} files into {result.files_written:,} "
        f"in {result.partitions:,} partition(s)"
        + (f"; finished {result.recovered} interrupted merge(s)" if result.recovered else "")
        + (
            f"; removed {result.temp_files_removed} temporary file(s) of writers that died"
            if result.temp_files_removed
            else ""
        )
    )
    for path in result.skipped:
        err.print(f"[yellow]skipped unreadable file {path}[/]")


@cli.command()
@dir_option
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulation.")
@json_option
@_store_errors
def demo(directory: Path, seed: int, as_json: bool) -> None:
    """Record a simulated multi-agent workflow and show it (no API keys)."""
    from llamonitor.cli._demo import run_demo

    err = _err()
    spinner = err.status("running the simulated agents...", spinner="dots")
    with spinner if err.is_terminal and not as_json else contextlib.nullcontext():
        run = run_demo(directory, seed)
    with parquet.query(directory) as store:
        overview = store.overview(run.sessions)
        groups = store.stats(group_by="operation_name", session_id=run.sessions)
        total = store.stats(group_by=None, session_id=run.sessions)
        by_model = [
            g for g in store.stats(group_by="model", session_id=run.sessions) if g["model"]
        ]
        rows = store.events(session_id=run.sessions, limit=None)
        example = _example_trace(rows, run.failed_traces)
        spans = store.trace(example) if example else []
    images = sum(1 for r in rows if r["image_count"])
    streams = sum(1 for r in rows if r["stream_item_count"] is not None)
    if as_json:
        _echo_json(
            {
                "output_dir": str(directory),
                "run_id": run.run_id,
                "seconds": round(run.seconds, 3),
                "flushed": run.flushed,
                **overview,
                "image_spans": images,
                "stream_spans": streams,
                "session_ids": run.sessions,
                "trace_ids": sorted(run.traces),
                "example_trace_id": example,
                "stats": groups,
                "by_model": by_model,
                "total": total[0] if total else None,
            }
        )
        return
    console = _out()
    console.print(
        f"[bold green]Recorded {overview['spans']:,} spans[/] in {run.seconds:.2f} s "
        f"→ {directory}  ({overview['sessions']} sessions, {overview['traces']} traces, "
        f"[red]{overview['errors']} failed spans[/], {images} image and {streams} stream spans)"
    )
    if not run.flushed:
        err.print("[yellow]warning: not every span was written before the timeout[/]")
    console.print(render.stats_table(groups, "operation_name", total[0] if total else None))
    if by_model:
        console.print(render.llm_table(by_model, "model", total[0] if total else None))
    if example:
        console.print(render.trace_tree(example, spans))
    console.print(
        f"\nNext: [bold]llamonitor events --dir {directory} --session {run.sessions[0]}[/], "
        f"[bold]llamonitor trace --dir {directory} {str(example)[:12]}[/], "
        f"[bold]llamonitor stats --dir {directory} --by provider[/]"
    )


def _example_trace(rows: list[dict[str, Any]], refused: list[str]) -> str | None:
    """The richest trace: the most spans, with a failed tool call and images if any."""
    score: dict[str, tuple[int, int, int]] = {}
    for r in rows:
        if r["trace_id"] in refused:
            continue
        errs, imgs, n = score.get(r["trace_id"], (0, 0, 0))
        score[r["trace_id"]] = (errs | bool(r["error"]), imgs | bool(r["image_count"]), n + 1)
    return max(score, key=lambda t: (score[t], t)) if score else None


from llamonitor.cli._spool import spool as _spool_group  # noqa: E402 - one line per group

cli.add_command(_spool_group)

from llamonitor.cli._report import report as _report_command  # noqa: E402

cli.add_command(_report_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``llamonitor`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="llamonitor")
