"""Options shared by the commands: the store directory, ``--json``, times."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from llamonitor.storage import parquet
from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DIR = "./monitoring_data"
DIR_ENV_VARS = ("LLMOPS_STORAGE__OUTPUT_DIR", "LLMOPS_OUTPUT_DIR")
JSONL_FILE_NAME = "events.jsonl"

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes",
          "h": "hours", "d": "days", "w": "weeks"}


def now() -> datetime:
    """The current UTC time (a function, so tests can monkeypatch it)."""
    return datetime.now(timezone.utc)


def parse_time(value: str) -> datetime:
    """``15m``, ``2h``, ``1d``, ``1w`` (ago) or an ISO time (naive = UTC).

    Raises:
        ValueError: neither form.
    """
    m = _RELATIVE.match(value)
    if m:
        amount, unit = float(m.group(1)), _UNITS[m.group(2).lower()]
        return now() - timedelta(**{unit: amount})
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _time_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: use an ISO time (2024-05-01T12:00, UTC unless it "
            "has an offset) or a duration ago (30s, 15m, 2h, 1d, 1w)",
            ctx,
            param,
        ) from None


def dir_option(fn: F) -> F:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path, file_okay=True, dir_okay=True),
        envvar=list(DIR_ENV_VARS),
        default=DEFAULT_DIR,
        show_default=True,
        show_envvar=True,
        help="The store: the Parquet output_dir (or a JSON Lines file / directory).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON on stdout (nothing else)."
    )(fn)


def time_options(fn: F) -> F:
    fn = click.option(
        "--until",
        metavar="TIME",
        callback=_time_callback,
        help="Spans started before this time.",
    )(fn)
    return click.option(
        "--since",
        metavar="TIME",
        callback=_time_callback,
        help="Spans started at/after this time: 15m, 2h, 1d (ago) or ISO (UTC).",
    )(fn)


def open_store(directory: Path) -> DuckDBQuery:
    """The query side of the store at ``directory``.

    Raises:
        click.ClickException: nothing is there.
    """
    if not directory.exists():
        raise click.ClickException(
            f"no store at {str(directory)!r}: nothing has been recorded there. Point --dir "
            f"(or {DIR_ENV_VARS[0]}) at your output_dir, or run `llamonitor demo`."
        )
    if directory.is_file():
        return DuckDBQuery(lambda _filters: jsonl_relation(directory))
    jsonl = directory / JSONL_FILE_NAME
    if jsonl.is_file() and not parquet.data_files(directory):
        return DuckDBQuery(lambda _filters: jsonl_relation(jsonl))
    return parquet.query(directory)
