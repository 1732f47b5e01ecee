"""One MySQL/MariaDB span table as the store sees it: the connection
parameters and names, read from a ``StorageConfig`` (TLS included), and how a
driver error is classified (rows' content, a table gone, a connection lost,
worth retrying or not).
"""

from __future__ import annotations

import ssl as _ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from llamonitor.schema.config import ConfigurationError, StorageConfig
from llamonitor.storage import _sql
from llamonitor.storage._sql import Secrets, StoreError, describe

SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
"""Strict (bad values raise), and without ANSI_QUOTES / NO_BACKSLASH_ESCAPES,
which the statements' quoting relies on."""

# sql_notes = 0: no "already exists" notes (aiomysql turns them into Python warnings).
_INIT = f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}', sql_notes = 0"
_CONTENT_CODES = frozenset(
    {1048, 1062, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1451, 1452, 1690, 3140, 3819, 4025}
)
_MISSING_CODES = frozenset({1054, 1146})
# Too many connections, shutdown, lock wait timeout, deadlock, connection
# killed, client-side connection errors (cannot connect, gone away, lost).
_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055})
# The connection is gone: shutdown, killed, cannot connect, gone away, lost.
_CONNECTION_CODES = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2055})


def q(name: str) -> str:
    """``name`` quoted as a MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def ssl_context(value: Any) -> Any:
    """The ``ssl`` of aiomysql's connect from ``options["ssl"]``."""
    if value is None or value is False or isinstance(value, _ssl.SSLContext):
        return value or None
    if value is True:
        return _ssl.create_default_context()
    if isinstance(value, dict):
        unknown = set(value) - {"ca", "cert", "key", "check_hostname", "verify"}
        if unknown:
            raise ConfigurationError(
                "storage.options", f"ssl: unknown key(s) {', '.join(sorted(unknown))}"
            )
        ctx = _ssl.create_default_context(cafile=value.get("ca"))
        if value.get("cert"):
            ctx.load_cert_chain(value["cert"], value.get("key"))
        ctx.check_hostname = bool(value.get("check_hostname", True))
        if not value.get("verify", True):
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
        return ctx
    raise ConfigurationError("storage.options", "ssl: an SSLContext, True or a dict")


class Target:
    """Connection parameters, names and error handling of one span table.

    ``connect_timeout`` and ``command_timeout`` (seconds) apply unless the
    connection string or ``options`` set them.
    """

    def __init__(
        self, config: StorageConfig, *, connect_timeout: float, command_timeout: float | None
    ) -> None:
        dsn = _sql.connection_string(config, "mysql")
        self.aiomysql = _sql.require_driver("aiomysql", "mysql", "mysql")
        self.pymysql = _sql.require_driver("pymysql", "mysql", "mysql")
        self.secrets = Secrets(dsn)
        bad = ConfigurationError(
            "storage.connection_string",
            f"{self.secrets.masked!r} is not mysql://user:password@host:port/database",
        )
        try:
            parts = urlsplit(dsn)
            port = parts.port or 3306
            params = dict(parse_qsl(parts.query))
        except ValueError:
            raise bad from None
        database = unquote(parts.path.lstrip("/")) or None
        self.schema = (
            _sql.check_identifier("storage.schema_name", config.schema_name)
            if config.schema_name
            else None
        )
        if not database and not self.schema:
            raise ConfigurationError(
                "storage.connection_string",
                f"{self.secrets.masked!r} names no database: mysql://user:password@host:3306/"
                "<database> (or set storage.schema_name)",
            )
        unknown = set(params) - {"unix_socket", "connect_timeout"}
        if unknown:
            raise ConfigurationError(
                "storage.connection_string",
                f"unsupported parameter(s) {', '.join(sorted(unknown))}; TLS and the rest go "
                "in storage.options",
            )
        options = dict(config.options)
        extra = set(options) - {"ssl", "connect_timeout", "command_timeout", "pool_recycle"}
        if extra:
            raise ConfigurationError(
                "storage.options",
                f"unknown option(s) {', '.join(sorted(extra))} for the mysql backend; it takes "
                "ssl, connect_timeout, command_timeout, pool_recycle",
            )
        self.pool_recycle = int(options.pop("pool_recycle", 3600))
        command = options.get("command_timeout", command_timeout)
        if command is not None and (
            isinstance(command, bool) or not isinstance(command, (int, float)) or command <= 0
        ):
            raise ConfigurationError(
                "storage.options", f"command_timeout: {command!r} is not a number of seconds > 0"
            )
        self.command_timeout: float | None = None if command is None else float(command)
        timeout = options.get("connect_timeout", params.get("connect_timeout"))
        self.connect_kwargs: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": port,
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else "",
            "db": database,
            "unix_socket": params.get("unix_socket"),
            "charset": "utf8mb4",
            "init_command": _INIT,
            "connect_timeout": float(timeout) if timeout is not None else connect_timeout,
            "ssl": ssl_context(options.get("ssl")),
        }
        self.table = _sql.check_identifier("storage.table_name", config.table_name)
        self.qualified = (f"{q(self.schema)}." if self.schema else "") + q(self.table)
        self.columns: set[str] = set()  # the table's, as the last setup saw them
        self.label = f"table {(self.schema + '.') if self.schema else ''}{self.table}"

    def qualify(self, name: str) -> str:
        return (f"{q(self.schema)}." if self.schema else "") + q(name)

    def kind(self, exc: BaseException) -> str:
        err = self.pymysql.err
        code = exc.args[0] if isinstance(exc, err.MySQLError) and exc.args else None
        if code in _MISSING_CODES:
            return "missing"
        if code in _CONTENT_CODES or isinstance(exc, (err.DataError, err.IntegrityError)):
            return "content"
        return "other"

    def connection_failed(self, exc: BaseException) -> bool:
        """Did the connection fail (timed out, lost, refused), rather than a
        statement on a working one?"""
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return (
            _sql.network_error(exc)
            or code in _CONNECTION_CODES
            or isinstance(exc, self.pymysql.err.InterfaceError)
        )

    def error(self, doing: str, exc: BaseException) -> StoreError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        transient = _sql.network_error(exc) or code in _TRANSIENT_CODES or code in _MISSING_CODES
        return StoreError(
            self.secrets.scrub(
                f"mysql {self.secrets.masked} {self.label}: {doing}: {describe(exc)}"
            ),
            sqlstate=str(code) if code is not None else None,
            transient=transient,
        )
