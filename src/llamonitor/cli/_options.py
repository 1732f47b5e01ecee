"""Options shared by the commands: the store (directory or database), ``--json``,
times; opening the store; turning its errors into one line.

This module is imported by ``llamonitor --help``: it imports click and the
standard library only; the store's modules (DuckDB, pyarrow, pydantic) are
imported by the functions that open a store, when a command runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from llamonitor.storage._duckdb import DuckDBQuery

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


class LazyChoice(click.Choice[str]):
    """A :class:`click.Choice` whose choices are loaded when first needed (to
    check a value, or for the command's own ``--help``), not at import."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        # click.Choice.__init__ would read the choices now: set its state here.
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        self._choices = tuple(value)


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
    if dsn and _use_dsn(dsn):
        from llamonitor.storage import _sql

        return _sql.mask_dsn(dsn)
    return str(directory)


def no_store(directory: Path) -> click.ClickException:
    """The error for a ``--dir`` where nothing is, with what to do about it."""
    return click.ClickException(
        f"no store at {str(directory)!r}: nothing has been recorded there. Point --dir "
        f"(or {DIR_ENV_VARS[0]}) at your output_dir, or run `llamonitor demo`."
    )


def open_database(dsn: str, table: str | None = None) -> DuckDBQuery:
    """The query side of the span table ``table`` (``[schema.]name``) of a database.

    Raises:
        click.ClickException: not a database URL, or a SQLite file that is not there.
        ConfigurationError: a missing driver or a bad connection string.
    """
    from pydantic import SecretStr

    from llamonitor.schema.config import StorageConfig
    from llamonitor.storage import _sql

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
        raise no_store(directory)
    # Not llamonitor.storage.parquet: its writer's imports (pydantic...) cost
    # more than some of the queries.
    from llamonitor.storage import _parquet_read
    from llamonitor.storage._duckdb import DuckDBQuery, jsonl_relation
    from llamonitor.storage._layout import data_files

    if directory.is_file():
        return DuckDBQuery(lambda _filters: jsonl_relation(directory))
    jsonl = directory / JSONL_FILE_NAME
    if jsonl.is_file() and not data_files(directory):
        return DuckDBQuery(lambda _filters: jsonl_relation(jsonl))
    return _parquet_read.query(directory)


def store_errors(*extra: type[Exception]) -> Callable[[F], F]:
    """Turn a failure of the store (or of a file the command writes) into a
    one-line error and exit code 1.

    Args:
        extra: more exception classes to report that way (built-in ones:
            importing the class must not import the store); DuckDB's errors,
            ``OSError``, a bad setting, a store error and a failed compaction
            always are.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except click.ClickException:
                raise
            except Exception as exc:
                message = _error_line(exc, extra)
                if message is None:
                    raise
                raise click.ClickException(message) from exc

        return wrapper  # type: ignore[return-value]

    return decorate


def _error_line(exc: Exception, extra: Sequence[type[Exception]]) -> str | None:
    """The one-line message for ``exc``, or ``None`` for a bug (let it show)."""
    duckdb = sys.modules.get("duckdb")  # an error of DuckDB's: DuckDB is imported
    if duckdb is not None and isinstance(exc, duckdb.Error):
        return f"cannot read the store: {exc}"
    from llamonitor.schema.config import ConfigurationError
    from llamonitor.storage._compact import CompactionError
    from llamonitor.storage._sql import StoreError

    if isinstance(exc, (OSError, CompactionError, ConfigurationError, StoreError, *extra)):
        return str(exc)
    return None
