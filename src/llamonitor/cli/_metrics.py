"""``llamonitor metrics``: list the metrics of a store, query one as series, roll up.

Imported by ``llamonitor --help``: the metrics package is imported when a
command runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    SCHEMA_ENV_VARS,
    _use_dsn,
    dir_option,
    dsn_options,
    json_option,
    no_store,
    now,
    parse_time,
    store_errors,
    store_label,
)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from llamonitor.schema._metrics_config import parse_duration

    try:
        seconds = parse_duration(value, param.name or "duration")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return max(1, round(seconds))


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: an ISO time (UTC unless it has an offset) or a "
            "duration ago (30s, 15m, 2h, 1d, 1w)",
            ctx,
            param,
        ) from None


def _labels(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    out: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use key=value", ctx, param)
        out[key.strip()] = val
    return out


def storage_config(directory: Path, dsn: str | None, table: str | None) -> Any:
    """The ``StorageConfig`` of ``--dir`` or ``--dsn`` (the metrics are beside the spans)."""
    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage import _sql

    if dsn and _use_dsn(dsn):
        backend = _sql.backend_for(dsn)
        if backend is None:
            raise click.ClickException(
                f"--dsn: {_sql.mask_dsn(dsn)!r} is not a database URL: use postgresql://..., "
                "mysql://... or sqlite:///path.db"
            )
        schema = (table or "").rpartition(".")[0] or next(
            (os.environ[v] for v in SCHEMA_ENV_VARS if os.environ.get(v)), ""
        )
        return StorageConfig(
            backend=backend, connection_string=SecretStr(dsn), schema_name=schema or None
        )
    if not directory.is_dir():
        raise no_store(directory)
    return StorageConfig(backend="parquet", output_dir=directory)


def _echo_json(obj: Any) -> None:
    from llamonitor.cli import _render as render

    click.echo(render.dumps(obj))


@click.group()
def metrics() -> None:
    """Metric points (llamonitor.metrics instruments, collectors, rollups, rules)."""


@metrics.command("list")
@dir_option
@dsn_options
@click.option("--since", metavar="TIME", callback=_time, help="Points at/after this time.")
@json_option
@store_errors()
def list_command(
    directory: Path, dsn: str | None, table: str | None, since: datetime | None, as_json: bool
) -> None:
    """Every metric of the store: kind, series, points, time range."""
    from llamonitor.cli import _render as render
    from llamonitor.metrics._series import list_metrics

    rows = list_metrics(storage_config(directory, dsn, table), start=since)
    if as_json:
        _echo_json([render.for_json(r) for r in rows])
        return
    if not rows:
        render.emit(f"No metric points in {store_label(directory, dsn)} yet.")
        return
    t = render.new_table(f"metrics in {store_label(directory, dsn)}")
    for col in ("name", "kind", "series", "points", "first", "last", "resolutions", "sources"):
        t.add_column(col, justify="right" if col in ("series", "points") else "left")
    for r in rows:
        t.add_row(
            r["name"],
            r["kind"],
            f"{r['series']:,}",
            f"{r['points']:,}",
            _ts(r["first"]),
            _ts(r["last"]),
            ",".join(str(x) for x in r["resolutions"]),
            ",".join(str(x) for x in r["sources"]),
        )
    render.emit(t)


def _ts(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@metrics.command("query")
@click.argument("name")
@dir_option
@dsn_options
@click.option(
    "--since",
    metavar="TIME",
    callback=_time,
    default="1h",
    show_default=True,
    help="Start: 15m, 2h, 1d (ago) or ISO (UTC).",
)
@click.option("--until", metavar="TIME", callback=_time, help="End (default: now).")
@click.option(
    "--step",
    metavar="DURATION",
    callback=_duration,
    default="1m",
    show_default=True,
    help="Window of each point: 10s, 1m, 5m, 1h.",
)
@click.option(
    "--label",
    "labels",
    metavar="KEY=VALUE",
    multiple=True,
    callback=_labels,
    help="Only series with this label value (repeatable).",
)
@click.option(
    "--by",
    metavar="LABELS",
    help="Combine series by these labels (comma-separated; '' for one series).",
)
@click.option(
    "--field",
    help="What each point is: counters increase|rate|last, gauges "
    "avg|min|max|last, histograms p50|p90|p95|p99|avg|count|sum|min|max|rate.",
)
@click.option(
    "--resolution",
    type=click.Choice(["0", "60", "300", "3600"]),
    help="Read these points (raw or a rollup); default: raw while it covers --since.",
)
@json_option
@store_errors(ValueError)
def query_command(
    name: str,
    directory: Path,
    dsn: str | None,
    table: str | None,
    since: datetime,
    until: datetime | None,
    step: int,
    labels: dict[str, str],
    by: str | None,
    field: str | None,
    resolution: str | None,
    as_json: bool,
) -> None:
    """One metric as series: a value per --step window from --since to --until."""
    from llamonitor.cli import _render as render
    from llamonitor.metrics._series import series

    end = until or now()
    groups = None if by is None else [b.strip() for b in by.split(",") if b.strip()]
    result = series(
        storage_config(directory, dsn, table),
        name,
        since,
        end + timedelta(microseconds=1),
        step,
        labels or None,
        groups,
        field,
        None if resolution is None else int(resolution),
    )
    if as_json:
        _echo_json(result)
        return
    if not result["series"]:
        render.emit(f"No points of {name!r} in {store_label(directory, dsn)} in that range.")
        return
    t = render.new_table(
        f"{name} ({result['kind']}, {result['field']} per {step}s, "
        f"resolution {result['resolution']}s)"
    )
    t.add_column("time (UTC)")
    t.add_column("labels")
    t.add_column(str(result["field"]), justify="right")
    for s in result["series"]:
        lbl = ",".join(f"{k}={v}" for k, v in sorted(s["labels"].items())) or "-"
        for ts, value in s["points"]:
            t.add_row(ts[:19].replace("T", " "), lbl, "" if value is None else f"{value:,.6g}")
    render.emit(t)


@metrics.command("rollup")
@dir_option
@dsn_options
@click.option("--since", metavar="TIME", callback=_time, help="Do not build windows before this.")
@click.option("--no-spans", is_flag=True, help="Only the metric points, not the span series.")
@json_option
@store_errors(ValueError)
def rollup_command(
    directory: Path,
    dsn: str | None,
    table: str | None,
    since: datetime | None,
    no_spans: bool,
    as_json: bool,
) -> None:
    """Build the 60 s / 300 s / 3600 s rollups (and span series) the store lacks."""
    from llamonitor.cli import _render as render
    from llamonitor.metrics._rollup import rollup

    result = rollup(storage_config(directory, dsn, table), since=since, spans=not no_spans)
    out = {"points": result.written, "spans": result.spans, "total": result.total}
    if as_json:
        _echo_json(out)
        return
    render.emit(
        f"rolled up {result.total:,} points: "
        + ", ".join(f"{r}s {n:,}" for r, n in result.written.items())
        + (
            "; spans " + ", ".join(f"{r}s {n:,}" for r, n in result.spans.items())
            if result.spans
            else ""
        )
    )
