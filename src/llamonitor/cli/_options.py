"""Options shared by the commands: the store (directory or database), ``--json``, times."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from pydantic import SecretStr

from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _sql, parquet
from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DIR = "./monitoring_data"
DIR_ENV_VARS = ("LLMOPS_STORAGE__OUTPUT_DIR", "LLMOPS_OUTPUT_DIR")
JSONL_FILE_NAME = "events.jsonl"
DSN_ENV_VAR = "LLMOPS_CONNECTION_STRING"
TABLE_ENV_VARS = ("LLMOPS_TABLE_NAME", "LLMOPS_STORAGE__TABLE_NAME")
SCHEMA_ENV_VARS = ("LLMOPS_SCHEMA_NAME", "LLMOPS_STORAGE__SCHEMA_NAME")
DEFAULT_TABLE = "metric_events"

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


def dsn_options(fn: F) -> F:
    """``--dsn`` (a database instead of ``--dir``) and ``--table``."""
    fn = click.option(
        "--table",
        metavar="[SCHEMA.]TABLE",
        envvar=list(TABLE_ENV_VARS),
        show_envvar=True,
        help=f"The span table of the --dsn database (default {DEFAULT_TABLE}).",
    )(fn)
    return click.option(
        "--dsn",
        metavar="URL",
        envvar=DSN_ENV_VAR,
        show_envvar=True,
        help="Read a database instead of --dir: postgresql://..., mysql://..., "
        "sqlite:///path.db (shown with its password masked).",
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


def _use_dsn(dsn: str | None) -> bool:
    """Whether to read ``dsn``: given, and not only from the environment while
    ``--dir`` was given on the command line."""
    if not dsn:
        return False
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    return not (
        ctx.get_parameter_source("dsn") is ParameterSource.ENVIRONMENT
        and ctx.get_parameter_source("directory") is ParameterSource.COMMANDLINE
    )


def store_label(directory: Path, dsn: str | None = None) -> str:
    """How messages name the store: the directory, or the masked connection string."""
    return _sql.mask_dsn(dsn) if dsn and _use_dsn(dsn) else str(directory)


def open_database(dsn: str, table: str | None = None) -> DuckDBQuery:
    """The query side of the span table ``table`` (``[schema.]name``) of a database.

    Raises:
        click.ClickException: not a database URL, or a SQLite file that is not there.
        ConfigurationError: a missing driver or a bad connection string.
    """
    backend = _sql.backend_for(dsn)
    if backend is None:
        raise click.ClickException(
            f"--dsn: {_sql.mask_dsn(dsn)!r} is not a database URL: use postgresql://..., "
            "mysql://... or sqlite:///path.db"
        )
    schema, _, name = (table or DEFAULT_TABLE).rpartition(".")
    schema = schema or next((os.environ[v] for v in SCHEMA_ENV_VARS if os.environ.get(v)), "")
    config = StorageConfig(
        backend=backend,
        connection_string=SecretStr(dsn),
        table_name=name,
        schema_name=schema or None,
    )
    module = importlib.import_module(f"llamonitor.storage.{backend}")
    if backend == "sqlite" and not module.database_path(dsn).is_file():
        raise click.ClickException(
            f"no store at {str(module.database_path(dsn))!r}: nothing has been recorded there"
        )
    query: DuckDBQuery = module.query(config)
    return query


def open_store(directory: Path, dsn: str | None = None, table: str | None = None) -> DuckDBQuery:
    """The query side of the store: the database ``dsn`` if given (see
    :func:`open_database`), else the files at ``directory``.

    Raises:
        click.ClickException: nothing is there.
    """
    if dsn and _use_dsn(dsn):
        return open_database(dsn, table)
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
