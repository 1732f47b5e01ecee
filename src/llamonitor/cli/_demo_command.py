"""``llamonitor demo``: run the simulated workflow of :mod:`._demo`, then show
what was recorded (imported by ``llamonitor --help``: click only, until it runs)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import dir_option, json_option, store_errors

FIRST_SESSION = "alice-1"
"""The first session of a demo run into a store without one (see :mod:`._demo`)."""


def _before(directory: Path) -> tuple[int, bool]:
    """Spans already in the store at ``directory``, and whether an earlier demo
    run's sessions are among them."""
    from llamonitor.storage import parquet

    if not directory.is_dir() or not parquet.data_files(directory):
        return 0, False
    with parquet.query(directory) as store:
        return store.count(), bool(store.events(session_id=FIRST_SESSION, limit=1))


@click.command()
@dir_option
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulation.")
@json_option
@store_errors()
def demo(directory: Path, seed: int, as_json: bool) -> None:
    """Record a simulated multi-agent workflow and show it (no API keys).

    Into a store that already holds spans, the demo's are added (it says so);
    the sessions of the first demo run in a store are alice-1, alice-2, bob-1...
    """
    from llamonitor.cli import _render as render
    from llamonitor.cli._demo import run_demo
    from llamonitor.storage import parquet

    err = render.console(stderr=True)
    spans_before, earlier_demo = _before(directory)
    if spans_before and not as_json:
        render.emit(
            f"[yellow]note: {directory} already holds {spans_before:,} spans; the demo's are "
            "added to them"
            + (" (its sessions end with this run's id: an earlier demo's are there)"
               if earlier_demo else "")
            + ". Use --dir for a store of its own.[/]",
            stderr=True,
        )
    spinner = err.status("running the simulated agents...", spinner="dots")
    with spinner if err.is_terminal and not as_json else contextlib.nullcontext():
        run = run_demo(directory, seed, first_run=not earlier_demo)
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
        click.echo(
            render.dumps(
                {
                    "output_dir": str(directory),
                    "run_id": run.run_id,
                    "seconds": round(run.seconds, 3),
                    "flushed": run.flushed,
                    "spans_before": spans_before,
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
        )
        return
    if not run.flushed:
        err.print("[yellow]warning: not every span was written before the timeout[/]")
    out: list[Any] = [
        f"[bold green]Recorded {overview['spans']:,} spans[/] in {run.seconds:.2f} s "
        f"→ {directory}  ({overview['sessions']} sessions, {overview['traces']} traces, "
        f"[red]{overview['errors']} failed spans[/], {images} image and {streams} stream spans)"
        + (f"; the store now holds {spans_before + overview['spans']:,}" if spans_before else ""),
        render.stats_table(groups, "operation_name", total[0] if total else None),
    ]
    if by_model:
        out.append(render.llm_table(by_model, "model", total[0] if total else None))
    if example:
        out.append(render.trace_tree(example, spans))
    where = "" if directory == Path("monitoring_data") else f" --dir {directory}"
    out.append(
        f"\nNext: [bold]llamonitor events{where} --session {run.sessions[0]}[/], "
        f"[bold]llamonitor trace{where} {render.short_id(example)}[/], "
        f"[bold]llamonitor report{where}[/]"
    )
    render.emit(*out)


def _example_trace(rows: list[dict[str, Any]], refused: list[str]) -> str | None:
    """The richest trace: the most spans, with a failed tool call and images if any."""
    score: dict[str, tuple[int, int, int]] = {}
    for r in rows:
        if r["trace_id"] in refused:
            continue
        errs, imgs, n = score.get(r["trace_id"], (0, 0, 0))
        score[r["trace_id"]] = (errs | bool(r["error"]), imgs | bool(r["image_count"]), n + 1)
    return max(score, key=lambda t: (score[t], t)) if score else None
