"""The ``llamonitor`` command line: read the store back, compact it, run a demo.

Only click is imported with this module (``llamonitor --help`` needs nothing
else); each command imports what it uses when it runs.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    LazyChoice,
    dir_option,
    dsn_options,
    json_option,
    no_store,
    open_store,
    store_errors,
    store_label,
    time_options,
)

DEFAULT_TARGET_ROWS = 1_000_000
"""``compact --target-rows`` (``llamonitor.storage.parquet.DEFAULT_TARGET_ROWS``:
a test keeps the two equal, so that ``--help`` need not import the store)."""


def _groupable() -> tuple[str, ...]:
    from llamonitor.storage._duckdb import GROUPABLE_COLUMNS

    return GROUPABLE_COLUMNS


def _echo_json(obj: Any) -> None:
    from llamonitor.cli import _render as render

    click.echo(render.dumps(obj))


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
@store_errors()
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
    from llamonitor.cli import _render as render

    with open_store(directory, dsn, table) as store:
        rows = store.events(session, trace_id, operation, since, until, limit)
    if as_json:
        _echo_json([render.for_json(r) for r in rows])
    elif not rows:
        render.emit(
            _nothing_found(store_label(directory, dsn), session, trace_id, operation, since, until)
        )
    else:
        render.emit(render.events_table(rows))


def _nothing_found(directory: Path | str, *filters: object) -> str:
    if any(f is not None for f in filters):
        return f"No spans in {directory} match these filters."
    return f"No spans recorded in {directory} yet."


@cli.command()
@click.argument("trace_id")
@dir_option
@dsn_options
@json_option
@store_errors()
def trace(
    trace_id: str, directory: Path, dsn: str | None, table: str | None, as_json: bool
) -> None:
    """The span tree of one trace (TRACE_ID, or a unique start or end of it: the
    events table shows a trace by its last 8 characters)."""
    from llamonitor.cli import _render as render

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
                    f"{trace_id!r} begins or ends several traces: "
                    + ", ".join(candidates[:5])
                    + (", ..." if len(candidates) > 5 else "")
                )
            trace_id = candidates[0]
            spans = store.trace(trace_id)
    if as_json:
        tree = render.strip_tree(render.build_tree(spans))
        _echo_json({"trace_id": trace_id, "span_count": len(spans), "spans": tree})
    else:
        render.emit(render.trace_tree(trace_id, spans))


@cli.command()
@dir_option
@dsn_options
@time_options
@click.option("--session", help="Only this session id.")
@click.option(
    "--by",
    "group_by",
    type=LazyChoice(_groupable),
    default="operation_name",
    show_default=True,
    help="Group by this column.",
)
@json_option
@store_errors()
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
    from llamonitor.cli import _render as render

    with open_store(directory, dsn, table) as store:
        groups = store.stats(since, until, group_by, session)
        total = store.stats(since, until, None, session)
        overview = store.overview(session) if groups else None
    if as_json:
        _echo_json({"group_by": group_by, "groups": groups, "total": total[0] if total else None})
        return
    if not groups:
        render.emit(_nothing_found(store_label(directory, dsn), session, since, until))
        return
    out: list[Any] = [overview_line(overview or {})]
    out.append(render.stats_table(groups, group_by, total[0] if total else None))
    if render.has_llm_figures(groups):
        out.append(render.llm_table(groups, group_by, total[0] if total else None))
    render.emit(*out)


def overview_line(o: dict[str, Any]) -> str:
    """Spans, sessions, traces, failures and the time range, on one line (markup)."""
    from llamonitor.analysis import _format as fmt

    line = (
        f"[bold]{o.get('spans', 0):,}[/] spans · {o.get('sessions', 0):,} sessions · "
        f"{o.get('traces', 0):,} traces · [red]{o.get('errors', 0):,}[/] failed"
    )
    if o.get("first") is not None:
        line += f" · {fmt.timestamp(o['first'])} → {fmt.timestamp(o['last'])} UTC"
    return line


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
    default=DEFAULT_TARGET_ROWS,
    show_default=True,
    help="Files this large are left alone; merged files hold at most this many rows.",
)
@json_option
@store_errors()
def compact(directory: Path, min_files: int, target_rows: int, as_json: bool) -> None:
    """Merge small Parquet files, per partition, without losing a row."""
    if not directory.is_dir():
        raise no_store(directory)
    from llamonitor.analysis import _format as fmt
    from llamonitor.cli import _render as render
    from llamonitor.storage import parquet

    err = render.console(stderr=True)
    with render.progress("compacting", "files", err, as_json) as bar:
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
    table.add_row("size", fmt.size(result.bytes_before), fmt.size(result.bytes_after))
    render.emit(
        table,
        f"merged {result.files_merged:,} files into {result.files_written:,} "
        f"in {result.partitions:,} partition(s)"
        + (f"; finished {result.recovered} interrupted merge(s)" if result.recovered else "")
        + (
            f"; removed {result.temp_files_removed} temporary file(s) of writers that died"
            if result.temp_files_removed
            else ""
        ),
    )
    for path in result.skipped:
        err.print(f"[yellow]skipped unreadable file {path}[/]")


from llamonitor.cli._demo_command import demo as _demo_command  # noqa: E402 - one line each

cli.add_command(_demo_command)

from llamonitor.cli._spool import spool as _spool_group  # noqa: E402

cli.add_command(_spool_group)

from llamonitor.cli._report import report as _report_command  # noqa: E402

cli.add_command(_report_command)

from llamonitor.cli._serve import serve as _serve_command  # noqa: E402

cli.add_command(_serve_command)

from llamonitor.cli._collect import collect as _collect_command  # noqa: E402

cli.add_command(_collect_command)

from llamonitor.cli._metrics import metrics as _metrics_group  # noqa: E402

cli.add_command(_metrics_group)

from llamonitor.cli._retention import retention as _retention_group  # noqa: E402

cli.add_command(_retention_group)
from llamonitor.cli._watch import watch as _watch_command  # noqa: E402

cli.add_command(_watch_command)
from llamonitor.cli._anomalies import anomalies as _anomalies_command  # noqa: E402

cli.add_command(_anomalies_command)
from llamonitor.cli._agents import agents as _agents_command  # noqa: E402

cli.add_command(_agents_command)
from llamonitor.cli._eval import eval_group as _eval_group  # noqa: E402

cli.add_command(_eval_group)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``llamonitor`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="llamonitor")

from llamonitor.cli._ingest import ingest as _ingest_command  # noqa: E402

cli.add_command(_ingest_command)
