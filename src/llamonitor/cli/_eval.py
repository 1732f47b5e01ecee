"""``llamonitor eval run EVALUATOR --since 1d``: score stored spans.

EVALUATOR is a built-in (``valid_json``, ``regex:PATTERN``, ``length:MAX``,
``latency:2s``, ``cost:0.01``, ``refusal``), a function of yours
(``module:function``, called with each span as a dict) or ``judge`` (an LLM
grades each answer: ``--model``, ``--base-url``, ``--api``). The scores go
to the store the spans are in; a run again over the same spans replaces them.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from llamonitor.cli._options import (
    dir_option,
    dsn_options,
    json_option,
    now,
    parse_time,
    store_errors,
    store_label,
)


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: a duration ago (30m, 2h, 1d, 1w) or an ISO time",
            ctx,
            param,
        ) from None


@click.group("eval")
def eval_group() -> None:
    """Evaluators: score stored spans (built-in checks, your functions, an LLM judge)."""


def _judge(model: str | None, base_url: str | None, api: str, key_env: str,
           criteria: str | None) -> Any:
    from llamonitor.quality._judge import DEFAULT_CRITERIA, LLMJudge

    if not model:
        raise click.BadParameter("the judge needs --model", param_hint="--model")
    key = os.environ.get(key_env) or ("unused" if base_url else None)
    if key is None:
        raise click.BadParameter(f"set {key_env} (or give --base-url)", param_hint="--api-key-env")
    try:
        if api == "anthropic":
            import anthropic

            client: Any = anthropic.Anthropic(api_key=key, base_url=base_url)
        else:
            import openai

            client = openai.OpenAI(api_key=key, base_url=base_url)
    except ImportError as exc:
        raise click.ClickException(
            f"the judge's client is missing: pip install {api} ({exc})"
        ) from None
    return LLMJudge(client, model, criteria or DEFAULT_CRITERIA)


@eval_group.command("run")
@click.argument("evaluator")
@click.option("--since", metavar="TIME", default="1d", show_default=True, callback=_time,
              help="Spans started at/after this time: 15m, 2h, 1d (ago) or ISO (UTC).")
@click.option("--until", metavar="TIME", callback=_time, help="Spans started before this time.")
@click.option("--operation", metavar="NAME", help="Only this operation (a glob: llm.*).")
@click.option("--name", "score_name", metavar="NAME", help="The scores' name.")
@click.option("--dry-run", is_flag=True, help="Evaluate, write nothing.")
@click.option("--model", help="judge: the judge model.")
@click.option("--base-url", metavar="URL", help="judge: an OpenAI/Anthropic-compatible server.")
@click.option("--api", type=click.Choice(["openai", "anthropic"]), default="openai",
              show_default=True, help="judge: the API the server speaks.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="judge: the environment variable holding the API key.")
@click.option("--criteria", help="judge: what a good answer is.")
@dir_option
@dsn_options
@json_option
@store_errors()
def run(
    evaluator: str,
    since: datetime,
    until: datetime | None,
    operation: str | None,
    score_name: str | None,
    dry_run: bool,
    model: str | None,
    base_url: str | None,
    api: str,
    api_key_env: str,
    criteria: str | None,
    directory: Path,
    dsn: str | None,
    table: str | None,
    as_json: bool,
) -> None:
    """Score the spans of a time range with EVALUATOR and write the scores."""
    from llamonitor.cli import _render as render
    from llamonitor.cli._metrics import storage_config
    from llamonitor.cli._options import open_store
    from llamonitor.quality._evaluators import evaluator_by_name, run_evaluator
    from llamonitor.storage._scores import write_scores

    if evaluator == "judge":
        chosen = _judge(model, base_url, api, api_key_env, criteria).evaluator(
            score_name or "judge"
        )
    else:
        if sys.path[:1] != [""] and "" not in sys.path:
            sys.path.insert(0, "")  # module:function from the current directory, as python -m
        try:
            chosen = evaluator_by_name(evaluator, score_name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="EVALUATOR") from None
    storage = storage_config(directory, dsn, table)
    query = open_store(directory, dsn, table)
    try:
        spans = query.events(since=since, until=until, operation=operation, limit=None)
    finally:
        query.close()
    result = run_evaluator(
        chosen, spans, None if dry_run else (lambda t: write_scores(storage, t)), now()
    )
    out = result.as_dict()
    if as_json:
        click.echo(render.dumps(out))
        return
    mean = "" if out["mean"] is None else f", mean {out['mean']:.3f}"
    verb = "would write" if dry_run else "wrote"
    render.emit(
        f"{chosen.name} ({evaluator}) over {out['spans']:,} spans of {store_label(directory, dsn)} "
        f"since {since:%Y-%m-%d %H:%M}: {verb} {out['scored'] if dry_run else out['written']:,} "
        f"scores{mean}; {out['skipped']:,} skipped, {out['errors']:,} errors"
    )
    if out["first_error"]:
        render.emit(f"first error: {out['first_error']}")



@eval_group.command("report")
@click.option("--by", type=click.Choice(["model", "operation", "agent", "prompt_hash"]),
              default="model", show_default=True, help="Group the scores by this.")
@click.option("--since", metavar="TIME", default="7d", show_default=True, callback=_time,
              help="Scores given at/after this time.")
@dir_option
@dsn_options
@json_option
@store_errors()
def report(
    by: str, since: datetime, directory: Path, dsn: str | None, table: str | None, as_json: bool
) -> None:
    """Score distributions by model, operation, agent or prompt hash, and the daily trend."""
    from llamonitor.analysis._scores import score_report
    from llamonitor.cli import _render as render
    from llamonitor.cli._metrics import storage_config
    from llamonitor.cli._options import open_store

    query = open_store(directory, dsn, table)
    try:
        out = score_report(storage_config(directory, dsn, table), query, by=by, since=since)
    finally:
        query.close()
    if as_json:
        click.echo(render.dumps(render.for_json(out)))
        return
    if not out["groups"]:
        render.emit(f"No scores in {store_label(directory, dsn)} since {since:%Y-%m-%d}.")
        return
    t = render.new_table(f"scores by {by} in {store_label(directory, dsn)}")
    for col in ("score", by, "scores", "mean", "median", "min", "max", "top label"):
        t.add_column(col, justify="left" if col in ("score", by, "top label") else "right")

    def num(v: Any) -> str:
        return "" if v is None else f"{v:.3f}"

    for g in out["groups"]:
        t.add_row(g["name"], str(g["key"] or "—"), f"{g['scores']:,}", num(g["mean"]),
                  num(g["median"]), num(g["min"]), num(g["max"]), str(g["top_label"] or ""))
    render.emit(t)
