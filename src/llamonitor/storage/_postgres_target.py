"""One PostgreSQL span table as the store sees it: its settings and names,
read from a ``StorageConfig``, and how a driver error is classified (rows'
content, a table gone, a connection lost, worth retrying or not).
"""

from __future__ import annotations

import inspect
from typing import Any

from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _sql, _sql_ddl
from llamonitor.storage._sql import Secrets, StoreError, describe

_FIXED_OPTIONS = ("dsn", "loop", "connection_class", "record_class", "database", "host")
_SERVER_SETTINGS = {"application_name": "llamonitor"}
# SQLSTATEs: undefined table / column / schema mean the table was dropped or
# altered under us: set it up again before the next attempt.
_MISSING = ("42P01", "42703", "3F000")
# Connection lost, out of resources (connections, disk), shutting down, a
# serialization failure or deadlock: worth retrying, and not a setting.
_TRANSIENT_CLASSES = ("08", "53", "57", "40")

TS = "timestamp"
"""The time column (the partition key, and sent in PostgreSQL's binary form)."""


def q(name: str) -> str:
    """``name`` quoted as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class Target:
    """Names and statements of one span table, from a ``StorageConfig``."""

    def __init__(self, config: StorageConfig) -> None:
        dsn = _sql.connection_string(config, "postgres")
        self.secrets = Secrets(dsn, [config.options.get("password")])
        # asyncpg takes postgresql:// or postgres:// only (not SQLAlchemy's +driver).
        self.dsn = "postgresql" + dsn[dsn.index("://") :]
        self.asyncpg = _sql.require_driver("asyncpg", "postgres", "postgres")
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        self.schema = (
            _sql.check_identifier("storage.schema_name", config.schema_name)
            if config.schema_name
            else None
        )
        self.qualified = (f"{q(self.schema)}." if self.schema else "") + q(self.table)
        self.columns: set[str] = set()  # the table's, as the last setup saw them
        self.label = f"table {(self.schema + '.') if self.schema else ''}{self.table}"
        options = dict(config.options)
        partition = options.pop("partition", None)
        if partition not in (None, "monthly"):
            raise ConfigurationError(
                "storage.options", f"partition: {partition!r} is not supported; use 'monthly'"
            )
        self.partitioned = partition == "monthly"
        allowed = set(inspect.signature(self.asyncpg.connect).parameters) - set(_FIXED_OPTIONS)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(unknown)} for the postgres backend; "
                f"it takes 'partition' and asyncpg.connect's: {', '.join(sorted(allowed))}",
            )
        settings = {**_SERVER_SETTINGS, **dict(options.pop("server_settings", None) or {})}
        self.connect_kwargs: dict[str, Any] = {**options, "server_settings": settings}

    def name(self, suffix: str) -> str:
        return _sql.derived_name(self.table, suffix)

    def qualify(self, name: str) -> str:
        return (f"{q(self.schema)}." if self.schema else "") + q(name)

    def meta(self) -> str:
        return self.qualify(_sql_ddl.META_TABLE)

    def kind(self, exc: BaseException) -> str:
        """``content``, ``missing`` (table/column gone) or ``other``."""
        pg = self.asyncpg
        if isinstance(exc, pg.PostgresError):
            state = str(getattr(exc, "sqlstate", "") or "")
            if state in _MISSING:
                return "missing"
            if state[:2] in ("22", "23") or state == "54000":
                return "content"
            return "other"
        if isinstance(exc, pg.exceptions._base.DataError):
            return "content"  # a value the client could not encode
        return "other"

    def connection_failed(self, exc: BaseException) -> bool:
        """Did the connection fail (timed out, lost, closed by the server),
        rather than a statement on a working one?"""
        state = str(getattr(exc, "sqlstate", "") or "")
        if isinstance(exc, self.asyncpg.PostgresError):
            return state[:2] == "08" or state in ("57P01", "57P02", "57P03")
        return not isinstance(exc, self.asyncpg.exceptions._base.DataError)

    def error(self, doing: str, exc: BaseException) -> StoreError:
        state = str(getattr(exc, "sqlstate", "") or "")
        pg = self.asyncpg
        transient = (
            _sql.network_error(exc)
            or state[:2] in _TRANSIENT_CLASSES
            or state in ("55P03", *_MISSING)
            or isinstance(exc, pg.ConnectionDoesNotExistError)
            or (isinstance(exc, pg.InterfaceError) and "closed" in str(exc))
        )
        return StoreError(
            self.secrets.scrub(
                f"postgres {self.secrets.masked} {self.label}: {doing}: {describe(exc)}"
            ),
            sqlstate=state or None,
            transient=transient,
        )
