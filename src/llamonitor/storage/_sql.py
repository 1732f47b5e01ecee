"""Connection strings, names, secrets and errors: what every SQL store
(PostgreSQL, MySQL/MariaDB, SQLite) shares before it touches a table.

- Connection strings: the scheme picks the backend, a missing driver names
  the extra that installs it.
- Names: table and schema names checked to be quotable in every dialect;
  derived names (indexes, partitions) kept under the identifier limit.
- Secrets: :func:`mask_dsn` is how every message shows a connection string
  (the stores' and the CLI's), and every text that leaves a store (errors,
  logs, reprs) is scrubbed of the password. (The spool's directory identity
  is another thing: a stable, allow-listed form, in ``transport``.)
- Errors: :class:`StoreError` (the transport retries it) and what counts as
  a network failure.

The rest is in sibling modules: the table definition and migration
(``_sql_ddl``), the dialects' column types (``_sql_types``), the write path and
row isolation (``_sql_write``), the query side (``_sql_query``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib
import re
import socket
from collections.abc import Iterable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from llamonitor.schema.config import DSN_SCHEMES, ConfigurationError, StorageConfig

SCHEMES = DSN_SCHEMES
"""Connection string scheme (before any ``+driver``) -> backend name (one map,
shared with ``MonitorConfig.for_production``)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_IDENTIFIER = 63  # PostgreSQL's limit; MySQL allows 64


def scheme_of(dsn: str) -> str:
    """``postgresql`` for ``postgresql+asyncpg://...``."""
    return dsn.split(":", 1)[0].split("+", 1)[0].strip().lower()


def backend_for(dsn: str) -> str | None:
    """The backend name a connection string's scheme selects, or ``None``."""
    return SCHEMES.get(scheme_of(dsn))


def require_driver(module: str, backend: str, extra: str | None) -> ModuleType:
    """Import a database driver, or say which extra installs it.

    Raises:
        ConfigurationError: naming ``storage.backend``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"pip install 'llamonitor[{extra}]'" if extra else "a Python built with it"
        raise ConfigurationError(
            "storage.backend", f"the {backend} backend needs the {module} driver: {hint}"
        ) from None


def connection_string(config: StorageConfig, backend: str) -> str:
    """The configured connection string, checked to be one for ``backend``.

    Raises:
        ConfigurationError: missing, or of another scheme (naming
            ``storage.connection_string``; the message shows it masked).
    """
    secret = config.connection_string
    dsn = secret.get_secret_value().strip() if secret is not None else ""
    if not dsn:
        raise ConfigurationError(
            "storage.connection_string",
            f"the {backend} backend needs a connection string "
            f"(or set LLMOPS_CONNECTION_STRING), e.g. {EXAMPLES[backend]}",
        )
    if "://" not in dsn or backend_for(dsn) != backend:
        raise ConfigurationError(
            "storage.connection_string",
            f"{mask_dsn(dsn)!r} is not a {backend} connection string; expected {EXAMPLES[backend]}",
        )
    _check_ports(dsn)
    return dsn


def _check_ports(dsn: str) -> None:
    """Every ``host:port`` of the URL (several for a failover list) has a port in 1-65535.

    Raises:
        ConfigurationError: naming ``storage.connection_string`` (masked).
    """
    # After the last "@", as mask_dsn reads it: a password's unescaped "/" is
    # not the end of the host list (nor a piece of it shown as the "port").
    # An "@" in the query string (application_name=svc@worker) is not one.
    rest = dsn.split("://", 1)[1]
    head = rest.split("?", 1)[0]
    netloc = (head if "@" in head else rest).rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    for host in netloc.split(","):
        port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError(
                "storage.connection_string",
                f"{mask_dsn(dsn)!r}: port {port!r} is not a port number (1-65535)",
            )


EXAMPLES = {
    "postgres": "postgresql://user:password@host:5432/database",
    "mysql": "mysql://user:password@host:3306/database",
    "sqlite": "sqlite:///path/to/monitoring.db",
    "clickhouse": "clickhouse://user:password@host:9000/database",
}


def check_identifier(setting: str, name: str) -> str:
    """A table or schema name we can quote in every dialect.

    Raises:
        ConfigurationError: not letters, digits and ``_`` (not starting with a
            digit), or longer than 63 characters.
    """
    if not _IDENTIFIER.match(name) or len(name) > MAX_IDENTIFIER:
        raise ConfigurationError(
            setting,
            f"{name!r} is not a usable name: use letters, digits and '_' (not first), "
            f"at most {MAX_IDENTIFIER} characters",
        )
    return name


def derived_name(base: str, suffix: str, limit: int = MAX_IDENTIFIER) -> str:
    """``base_suffix``, shortened with a hash when over ``limit`` characters."""
    name = f"{base}_{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{base[: limit - len(suffix) - 10]}_{digest}_{suffix}"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for an advisory lock on ``name``."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


# -- secrets ----------------------------------------------------------------

MASK = "***"
_URL_USER = r"[A-Za-z][A-Za-z0-9+.-]*://[^:/\s]*:"  # a user may hold "@" (Azure's user@server)
# A connection string: its password runs to the last "@" (a password may hold
# an unescaped space, "/" or "@"; masking too much is the safe side).
_DSN_PASSWORD = re.compile(rf"\A(\s*{_URL_USER})(.*)@")
# A URL inside a longer text (a message): its password runs to the last "@"
# before the next whitespace. (A password with a space inside a message is
# caught by :class:`Secrets`, which knows the value.)
_URL_PASSWORD = re.compile(rf"({_URL_USER})\S*@")
SECRET_KEY = re.compile(
    r"pass|pwd|secret|token|credential|auth|api[_-]?key|private|(^|[_-])key$", re.IGNORECASE
)
"""Parameter names whose values are secrets (password, sslpassword, PWD,
access_token, api_key, ...): masked when shown, left out of a spool's identity."""

# A parameter's value: quoted (libpq's '...' with \' escapes, or with SQL's '',
# ODBC/ADO's "..." with ""; an unclosed quote runs to the end), ODBC's {...}
# with }}, or bare up to the next separator.
_VALUE = (
    r"'(?:[^'\\]|\\.?|'')*(?:'|\Z)"
    r'|"(?:[^"\\]|\\.?|"")*(?:"|\Z)'
    r"|\{(?:[^}]|\}\})*\}"
    r"|[^&;\s]*"
)
_PARAMETER = re.compile(rf"((?:^|[?&;\s])\s*([\w.-]+)\s*=\s*)({_VALUE})", re.DOTALL)
_EZCONNECT_PASSWORD = re.compile(r"^([^/@:\s]+/)[^@\s]*@")  # Oracle user/password@host


def mask_dsn(dsn: str) -> str:
    """``postgresql://user:***@host:5432/db``: the password replaced by ``***``,
    and so is every parameter named like a secret (``password=``, ``sslpassword=``,
    ``token=``, ODBC ``Pwd=``...), quoted or not, and the password of
    ``user/password@host``.

    A URL's password runs to the last ``@`` of the connection string (spaces,
    ``/`` and ``@`` left unescaped included); in a longer text that only
    contains a URL, to the last ``@`` before the next whitespace."""
    masked = _DSN_PASSWORD.sub(rf"\1{MASK}@", dsn, count=1)
    masked = _URL_PASSWORD.sub(rf"\1{MASK}@", masked)
    masked = _PARAMETER.sub(
        lambda m: m.group(1) + MASK if SECRET_KEY.search(m.group(2)) else m.group(0), masked
    )
    return _EZCONNECT_PASSWORD.sub(rf"\1{MASK}@", masked)


def _unquoted(value: str) -> str:
    """A parameter's value as the server sees it: ``'it''s'`` -> ``it's``,
    ``'a\\' b'`` -> ``a' b``, ``{x}}y}`` -> ``x}y``."""
    if value[:1] in ("'", '"'):
        quote = value[0]
        body = value[1:-1] if len(value) > 1 and value.endswith(quote) else value[1:]
        body = body.replace(quote * 2, quote)
        return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)
    if value.startswith("{") and value.endswith("}"):
        return value[1:-1].replace("}}", "}")
    return value


class Secrets:
    """The secrets of one store, kept out of every text it emits: the URL's
    password and the value of every parameter named like a secret (as written
    and as the server sees it, unquoted).

    Args:
        dsn: the connection string.
        extra: more secrets (a password given in ``StorageConfig.options``).
    """

    def __init__(self, dsn: str, extra: Iterable[Any] = ()) -> None:
        self.masked = mask_dsn(dsn)
        values: set[str] = set()
        whole = _DSN_PASSWORD.match(dsn)
        if whole:
            values.add(whole.group(2))  # up to the last "@", as masked
        try:
            parts = urlsplit(dsn)
            values.update(v for v in (parts.password, unquote(parts.password or "")) if v)
            values.update(v for k, v in parse_qsl(parts.query) if SECRET_KEY.search(k))
        except ValueError:
            pass
        for m in _PARAMETER.finditer(dsn):
            if SECRET_KEY.search(m.group(2)):
                values.update((m.group(3), _unquoted(m.group(3)), unquote(m.group(3))))
                values.add(_unquoted(unquote(m.group(3))))
        values.update(str(v) for v in extra if v)
        # A secret of one or two characters would mangle every message.
        self._values = sorted((v for v in values if len(v) >= 3), key=len, reverse=True)
        self._dsn = dsn

    def scrub(self, text: str) -> str:
        """``text`` without any secret (the connection string shown masked)."""
        text = text.replace(self._dsn, self.masked)
        for value in self._values:
            text = text.replace(value, MASK)
        return mask_dsn(text)


class StoreError(Exception):
    """A SQL store failed for a reason other than the rows' content: the
    server is unreachable, the connection dropped, a timeout, a lock, a
    login refused... The transport retries the batch. The message never holds
    a password, and the driver's exception is not chained (its text might).

    Attributes:
        sqlstate: the database's error code (SQLSTATE, MySQL error number or
            SQLite error name), if it sent one.
        llamonitor_transient: the store is unreachable or busy for now (a
            connection refused or lost, a timeout, a server shutting down, a
            lock), rather than misconfigured (a login or database refused).
            The transport reads it to start a sink in outage mode.
    """

    def __init__(self, message: str, sqlstate: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.llamonitor_transient = transient


_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH",
        "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "EPIPE", "EAGAIN",
    )
    if hasattr(errno, name)
)  # fmt: skip


def network_error(exc: BaseException, names: frozenset[str] = frozenset()) -> bool:
    """Is ``exc``, or an exception in its chain, a connection refused, reset or
    timed out, or a name that did not resolve (or of a class named in ``names``,
    a driver's own "cannot connect now")?"""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # asyncio.TimeoutError is TimeoutError from 3.11 on, not before.
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, socket.gaierror)):
            return True
        if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
            return True
        if type(e).__name__ in names:
            return True
        e = e.__cause__ or e.__context__
    return False


def describe(exc: BaseException) -> str:
    """``TypeName: message`` of a driver exception (to scrub before use)."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"
