"""``llamonitor report``: where the money and the time go, and what to do about it.

Imported by ``llamonitor --help``: the analysis, DuckDB and rich are imported
when the command runs.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    open_store,
    store_errors,
    store_label,
    time_options,
)


@click.command()
@dir_option
@dsn_options
@time_options
@click.option("--project", help="Only this project_name.")
@click.option("--session", help="Only this session id (a session report).")
@click.option("--trace", "trace_id", help="Only this trace id.")
@click.option(
    "--bucket",
    type=click.Choice(["auto", "minute", "hour", "day"]),
    default="auto",
    show_default=True,
    help="Time bucket of the trends (auto: from the time span of the data).",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True,
    help="Rows per table (sessions, traces, groups).",
)
@json_option
@click.option(
    "--csv", "csv_path", metavar="PATH",
    help="Also write the report as CSV (one long table: section,table,key,metric,value); "
    "'-' for stdout.",
)
@click.option(
    "--html", "html_path", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML report with charts (opens offline).",
)
@store_errors(ValueError, ImportError)
def report(
    directory: Path,
    dsn: str | None,
    table: str | None,
    since: datetime | None,
    until: datetime | None,
    project: str | None,
    session: str | None,
    trace_id: str | None,
    bucket: str,
    top: int,
    as_json: bool,
    csv_path: str | None,
    html_path: Path | None,
) -> None:
    """Cost, latency, tokens, quality, trends and suggestions for a scope.

    The scope is every span, or those of a time range (--since/--until), a
    project, a session or a trace. Terminal tables by default; --json,
    --csv and --html for the rest.
    """
    from llamonitor.analysis import _prices, analyze, render_html, session_report, write_csv
    from llamonitor.cli import _render as render
    from llamonitor.cli import _report_view as view

    scope: dict[str, Any] = dict(
        since=since, until=until, project=project, trace=trace_id, top=top,
        bucket=None if bucket == "auto" else bucket,
    )
    # The command line's own process: the cheaper-model prices may be remembered
    # in the user's cache directory (a library call does so only when asked).
    scope["scores"] = _score_storage(directory, dsn, table)
    with open_store(directory, dsn, table) as store, _prices.remembered():
        result = (
            session_report(store, session, **scope) if session else analyze(store, **scope)
        )
    err = render.console(stderr=True)
    if html_path is not None:
        title = f"llamonitor report · session {session}" if session else "llamonitor report"
        html_path.write_text(render_html(result, title=title), encoding="utf-8")
        err.print(f"wrote HTML report to {html_path}")
    if csv_path == "-":
        write_csv(result, sys.stdout)
        return
    if csv_path is not None:
        write_csv(result, csv_path)
        err.print(f"wrote CSV report to {csv_path}")
    if as_json:
        click.echo(render.dumps(result.to_dict()))
        return
    if result.empty:
        where = store_label(directory, dsn)
        filtered = any(v is not None for v in (since, until, project, session, trace_id))
        render.emit(
            f"No spans in {where} match these filters."
            if filtered
            else f"No spans recorded in {where} yet: nothing to report. "
            "Run your application (or `llamonitor demo`) first."
        )
        return
    if html_path is not None or csv_path is not None:
        render.emit(view.overview(result))
        return
    render.emit(view.overview(result), *view.sections(result, top))


def _score_storage(directory: Path, dsn: str | None, table: str | None) -> Any:
    """Where the store's scores are (``None``: a store that holds none, a JSONL file)."""
    from llamonitor.cli._metrics import storage_config
    from llamonitor.schema.config import ConfigurationError
    from llamonitor.storage._scores import store_kind

    try:
        storage = storage_config(directory, dsn, table)
    except click.ClickException:
        return None  # open_store says what is wrong with the store
    try:
        store_kind(storage)
    except ConfigurationError:
        return None  # a store that holds no scores: a report without them
    return storage
