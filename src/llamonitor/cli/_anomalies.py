"""``llamonitor anomalies``: spikes, dips, level shifts and drifts of the signals.

Imported by ``llamonitor --help``: the analysis is imported when the command runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    now,
    open_store,
    parse_time,
    store_errors,
)

BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "1d": 86_400}
DIMENSIONS = ("model", "operation", "agent", "provider", "project", "operation_type", "none")


def _since(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command()
@dir_option
@dsn_options
@click.option(
    "--since", default="7d", show_default=True, callback=_since, metavar="TIME",
    help="Judge the buckets from this time: 15m, 2h, 1d (ago) or ISO (UTC); the history "
    "before it is the baseline.",
)
@click.option(
    "--bucket", type=click.Choice(list(BUCKETS)), default="1h", show_default=True,
    help="Width of a time bucket.",
)
@click.option(
    "--by", "group_by", type=click.Choice(DIMENSIONS), multiple=True,
    help="Group by this dimension (repeat for several; 'none': all spans as one). "
    "Default: model.",
)
@click.option(
    "--signal", "signals", multiple=True,
    type=click.Choice(["cost", "tokens", "latency_p95", "error_rate", "volume"]),
    help="Only this signal (repeat for several). Default: all.",
)
@json_option
@store_errors(ValueError)
def anomalies(
    directory: Path,
    dsn: str | None,
    table: str | None,
    since: datetime,
    bucket: str,
    group_by: tuple[str, ...],
    signals: tuple[str, ...],
    as_json: bool,
) -> None:
    """Anomalies of cost, tokens, p95 latency, error rate and volume per bucket and group.

    Each line gives what was expected, what was seen and how far out (robust
    sigmas). The bucket in progress is not judged.
    """
    from llamonitor.analysis.anomalies import SIGNALS, detect_anomalies
    from llamonitor.cli import _render as render

    dims = ("model",) if not group_by else tuple(d for d in group_by if d != "none")
    with open_store(directory, dsn, table) as store:
        found = detect_anomalies(
            store, since=since, bucket_seconds=BUCKETS[bucket], signals=signals or SIGNALS,
            group_by=dims, now=now(),
        )
    if as_json:
        click.echo(render.dumps([a.to_dict() for a in found]))
        return
    if not found:
        click.echo(f"No anomaly since {since:%Y-%m-%d %H:%M} UTC ({bucket} buckets).")
        return
    for a in found:
        click.echo(a.describe())
