"""``llamonitor retention``: show the policy and what it would remove; apply it.

Imported by ``llamonitor --help``: the metrics package is imported when a
command runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    parse_time,
    store_errors,
)
from llamonitor.cli._watch import WATCH_TASKS


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: an ISO time (UTC unless it has an offset)", ctx, param
        ) from None


def _policy(spans_days: str | None, points: str | None) -> Any:
    """``LLMOPS_RETENTION__*`` with the command's overrides on top."""
    from pydantic import ValidationError

    from llamonitor.metrics._retention import retention_from_env
    from llamonitor.schema._retention_config import RetentionConfig

    base = retention_from_env().model_dump()
    if spans_days is not None:
        base["spans_days"] = spans_days
    if points is not None:
        items = []
        for part in points.split(","):
            res, sep, keep = part.partition("=")
            if not sep:
                raise click.BadParameter(
                    f"{part!r}: use resolution=retention, e.g. raw=1d,1m=7d,5m=30d,1h=365d",
                    param_hint="--points",
                )
            items.append({"resolution": res.strip(), "retention": keep.strip()})
        base["points"] = items
    try:
        return RetentionConfig.model_validate(base)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "retention"
        raise click.BadParameter(f"{where}: {err.get('msg')}") from None


def _storage(directory: Path, dsn: str | None, table: str | None) -> Any:
    from llamonitor.cli._metrics import storage_config
    from llamonitor.cli._options import _use_dsn

    if not (dsn and _use_dsn(dsn)) and directory.is_file():  # a JSONL store
        from llamonitor.schema.config import StorageConfig

        return StorageConfig(
            backend="jsonl", output_dir=directory.parent, options={"file_name": directory.name}
        )
    storage = storage_config(directory, dsn, table)
    name = (table or "").rpartition(".")[2]
    if name and storage.backend != "parquet":
        storage = storage.model_copy(update={"table_name": name})
    return storage


def _keep(seconds: float | None) -> str:
    if seconds is None:
        return "forever"
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


_RES = {None: "", 0: "raw", 60: "1 min", 300: "5 min", 3600: "1 h"}


def _render(report: Any, title: str) -> None:
    from llamonitor.analysis import _format as fmt
    from llamonitor.cli import _render as render

    t = render.new_table(title)
    for col in ("table", "resolution", "kept", "cutoff (UTC)", "rows", "files", "size"):
        t.add_column(col, justify="right" if col in ("rows", "files", "size") else "left")
    for c in report.cutoffs:
        tally = report.tallies.get(c.key)
        if tally is None:
            continue
        files = f"{tally.files_removed:,} removed, {tally.files_rewritten:,} rewritten"
        if tally.partitions_dropped:
            files = f"{tally.partitions_dropped:,} partition(s) dropped"
        elif tally.bytes_estimated:
            files = ""
        size = ("~" if tally.bytes_estimated else "") + fmt.size(tally.bytes)
        t.add_row(
            c.table,
            _RES.get(c.resolution, str(c.resolution)),
            _keep(c.retention_seconds),
            c.before.strftime("%Y-%m-%d %H:%M:%S"),
            f"{tally.rows:,}",
            files,
            size,
        )
    out: list[Any] = [t]
    if report.kept_forever:
        out.append("kept forever: " + ", ".join(report.kept_forever))
    if report.rollups_written:
        built = {k: v for k, v in report.rollups_written.items() if v}
        out.append(
            ("rollups it would build first: " if report.dry_run else "rollups built first: ")
            + (", ".join(f"{k} {v:,}" for k, v in built.items()) if built else "none needed")
        )
    for tally in report.tallies.values():
        out.extend(f"[yellow]{n}[/]" for n in tally.notes)
    render.emit(*out)


def _emit_json(report: Any) -> None:
    from llamonitor.cli import _render as render

    click.echo(render.dumps(report.to_dict()))


_POINTS_HELP = "Points' policy: resolution=retention,... (raw=1d,1m=7d,5m=30d,1h=365d)."


@click.group()
def retention() -> None:
    """Retention and downsampling of spans and metric points (docs/retention.md).

    The policy is LLMOPS_RETENTION__* (spans kept forever, points raw 1 d,
    1 min 7 d, 5 min 30 d, 1 h 365 d by default); --spans-days and --points
    override it. A ClickHouse store is refused: drop a month's partition there
    (docs/clickhouse.md).
    """


def _common(fn: Any) -> Any:
    fn = click.option("--points", metavar="POLICY", help=_POINTS_HELP)(fn)
    fn = click.option(
        "--spans-days", metavar="DAYS", help="Keep spans this many days ('forever': keep all)."
    )(fn)
    fn = click.option(
        "--now", metavar="TIME", callback=_time, help="Count the policy from this time (ISO)."
    )(fn)
    return json_option(dsn_options(dir_option(fn)))


@retention.command("show")
@_common
@store_errors()
def show(
    directory: Path,
    dsn: str | None,
    table: str | None,
    now: datetime | None,
    spans_days: str | None,
    points: str | None,
    as_json: bool,
) -> None:
    """The policy, and what applying it now would remove (changes nothing)."""
    from llamonitor.metrics._retention import show_retention

    report = show_retention(_storage(directory, dsn, table), _policy(spans_days, points), now=now)
    if as_json:
        _emit_json(report)
    else:
        _render(report, f"retention of {report.store} (would remove)")


@retention.command("apply")
@_common
@click.option("--dry-run", is_flag=True, help="Only count what would go; change nothing.")
@store_errors()
def apply(
    directory: Path,
    dsn: str | None,
    table: str | None,
    now: datetime | None,
    spans_days: str | None,
    points: str | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Build the rollups, then remove what is past the policy."""
    from llamonitor.metrics._retention import apply_retention

    report = apply_retention(
        _storage(directory, dsn, table), _policy(spans_days, points), now=now, dry_run=dry_run
    )
    if as_json:
        _emit_json(report)
    else:
        verb = "would remove" if dry_run else f"removed in {report.seconds:.1f} s"
        _render(report, f"retention of {report.store} ({verb})")


def watch_task(context: Any) -> Any:
    """``llamonitor watch``'s retention (a ``PeriodicTask``) when
    ``LLMOPS_RETENTION__BACKGROUND`` is on, over the store it watches; ``None``
    when off.

    Raises:
        ConfigurationError: a bad retention setting, or one the store cannot
            apply, naming it (``watch`` stops before it starts).
    """
    from llamonitor.metrics._retention import apply_retention, check_store, retention_from_env

    config = retention_from_env()
    if not config.background:
        return None
    storage = _storage(context.directory, context.dsn, context.table)
    check_store(storage, config)
    from llamonitor.quality._alert_watch import PeriodicTask

    def run() -> None:
        report = apply_retention(storage, config)
        if report.rows:
            click.echo(f"retention removed {report.rows:,} row(s) in {report.seconds:.1f} s",
                       err=True)

    return PeriodicTask("retention", config.interval_seconds, run)


WATCH_TASKS.append(watch_task)
