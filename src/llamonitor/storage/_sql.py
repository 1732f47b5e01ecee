"""What the SQL stores (PostgreSQL, MySQL/MariaDB, SQLite) share.

- The table definition, derived from :data:`~llamonitor.schema._columns.SCHEMA`:
  each dialect maps an Arrow field to a column type, nothing lists columns.
- The versioned migration: a small meta table records the schema version of
  each span table; an older table gets the missing columns (nullable), a
  table with an incompatible column or a newer version is a clear error.
- Row isolation: a batch the database refuses for the *content* of some rows
  is bisected, the good rows written, and :class:`RowsRejected` raised.
- Secrets: connection strings are shown masked, and every text that leaves a
  store (errors, logs, reprs) is scrubbed of the password.
- The query side: the filters pushed into the store's ``WHERE``, and rows
  streamed to DuckDB as Arrow record batches of the exact schema.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa

from llamonitor.schema._columns import COLUMNS_V1, SCHEMA, SCHEMA_VERSION
from llamonitor.schema.config import DSN_SCHEMES, ConfigurationError, StorageConfig
from llamonitor.storage._duckdb import Filters
from llamonitor.storage.base import RowsRejected

PRIMARY_KEY = ("event_id",)
"""A replayed batch never duplicates a row: inserts skip existing event ids."""

INDEXES: tuple[tuple[str, tuple[tuple[str, bool], ...]], ...] = (
    ("session_ts", (("session_id", False), ("timestamp", True))),
    ("trace_ts", (("trace_id", False), ("timestamp", True))),
    ("parent", (("parent_span_id", False),)),
    ("operation_ts", (("operation_name", False), ("timestamp", True))),
)
"""(name suffix, ((column, descending), ...)) of each index (the seed's four)."""

INDEXED_COLUMNS = frozenset([*PRIMARY_KEY, *(col for _, cols in INDEXES for col, _ in cols)])

JSON_COLUMNS = frozenset({"custom_attributes"})
"""String columns holding JSON text (Arrow has no JSON type here); a dialect
may store them in a JSON type that keeps the text as written."""

META_TABLE = "llamonitor_schema_version"
"""One row per span table: its name and the schema version it was migrated to."""

CHUNK_ROWS = 10_000
"""Rows per record batch handed to DuckDB by the query side."""

ROW_BY_ROW = 8
"""A failing slice this small is written row by row instead of bisected."""

MIN_PART_ROWS = 1_000
"""A batch is split for concurrent writes only into slices at least this large."""

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
    return dsn


EXAMPLES = {
    "postgres": "postgresql://user:password@host:5432/database",
    "mysql": "mysql://user:password@host:3306/database",
    "sqlite": "sqlite:///path/to/monitoring.db",
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


def present_fields(table: pa.Table) -> list[pa.Field]:
    """The schema fields to send for ``table``: a nullable column null in every
    row is left out (the database fills in NULL). Half the columns of a typical
    span are, and each costs the client and the server per row."""
    return [f for f in SCHEMA if not f.nullable or table.column(f.name).null_count < table.num_rows]


def conform(table: pa.Table) -> pa.Table:
    """``table`` with exactly the columns and types of ``SCHEMA``."""
    if table.schema.equals(SCHEMA):
        return table
    return table.select(list(SCHEMA.names)).cast(SCHEMA)


# -- table definition and migration ---------------------------------------


def column_defs(
    type_of: Callable[[pa.Field], str], quote: Callable[[str], str], fields: Iterable[pa.Field]
) -> list[str]:
    """``"name" TYPE [NOT NULL]`` for each field."""
    return [f"{quote(f.name)} {type_of(f)}{'' if f.nullable else ' NOT NULL'}" for f in fields]


def index_columns(columns: Sequence[tuple[str, bool]], quote: Callable[[str], str]) -> str:
    return ", ".join(f"{quote(c)}{' DESC' if desc else ''}" for c, desc in columns)


def plan_migration(
    label: str,
    existing: Mapping[str, str],
    accepts: Callable[[str, pa.Field], bool],
    stored_version: int | None,
) -> list[pa.Field]:
    """The fields to add to an existing span table (nullable, in schema order).

    Args:
        label: the table, for messages.
        existing: its columns, name -> the database's type.
        accepts: whether a database type holds a field's values.
        stored_version: the version in the meta table, if any.

    Raises:
        ConfigurationError: a newer schema version, a column of an
            incompatible type, or not a span table at all (naming
            ``storage.table_name``).
    """
    if stored_version is not None and stored_version > SCHEMA_VERSION:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} has schema version {stored_version}, newer than this llamonitor "
            f"knows ({SCHEMA_VERSION}): upgrade llamonitor to write to it",
        )
    lacking_v1 = [name for name in COLUMNS_V1 if name not in existing]
    if lacking_v1:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} exists but is not a llamonitor span table (it has no "
            f"{', '.join(lacking_v1[:5])}{', ...' if len(lacking_v1) > 5 else ''} column): "
            "choose another table_name",
        )
    wrong = [
        f"{f.name} is {existing[f.name]} (expected {f.type})"
        for f in SCHEMA
        if f.name in existing and not accepts(existing[f.name], f)
    ]
    if wrong:
        raise ConfigurationError(
            "storage.table_name",
            f"{label} has columns of an incompatible type: {'; '.join(wrong)}",
        )
    return [f.with_nullable(True) for f in SCHEMA if f.name not in existing]


# -- secrets ----------------------------------------------------------------

MASK = "***"
# Up to the last "@" of the URL: a password may hold an unescaped "/" or "@"
# (masking too much is the safe side).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*@")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&;\s])password=)[^&;\s]*", re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """``postgresql://user:***@host:5432/db``: the password (also a
    ``password=`` parameter) replaced by ``***``."""
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", _URL_PASSWORD.sub(rf"\1{MASK}@", dsn))


class Secrets:
    """The secrets of one store, kept out of every text it emits.

    Args:
        dsn: the connection string.
        extra: more secrets (a password given in ``StorageConfig.options``).
    """

    def __init__(self, dsn: str, extra: Iterable[Any] = ()) -> None:
        self.masked = mask_dsn(dsn)
        values: set[str] = set()
        try:
            parts = urlsplit(dsn)
            values.update(v for v in (parts.password, unquote(parts.password or "")) if v)
            values.update(v for k, v in parse_qsl(parts.query) if k.lower() == "password")
        except ValueError:
            pass
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
        "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "EPIPE",
    )
    if hasattr(errno, name)
)  # fmt: skip


def network_error(exc: BaseException) -> bool:
    """Is ``exc``, or an exception in its chain, a connection refused, reset or
    timed out, or a name that did not resolve?"""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # asyncio.TimeoutError is TimeoutError from 3.11 on, not before.
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, socket.gaierror)):
            return True
        if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return False


class ContentError(Exception):
    """Internal: the database refused a slice of rows for their content."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def describe(exc: BaseException) -> str:
    """``TypeName: message`` of a driver exception (to scrub before use)."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


# -- row isolation -----------------------------------------------------------


async def write_isolating(
    table: pa.Table,
    attempt: Callable[[pa.Table], Awaitable[None]],
    refused: Sequence[tuple[int, str]] = (),
) -> None:
    """Write ``table`` with ``attempt`` (one transaction per call), isolating
    the rows the database refuses.

    ``attempt`` raises :class:`ContentError` when the database refused the
    slice for its content; anything else it raises propagates (transient: the
    caller retries the batch, and the primary key skips what was written).

    Args:
        refused: rows already known to be unwritable, ``(index, reason)``.

    Raises:
        RowsRejected: after every other row is written.
    """
    rejected = list(refused)
    indices = list(range(table.num_rows))
    if rejected:
        skip = {i for i, _ in rejected}
        indices = [i for i in indices if i not in skip]
    if indices:
        work = table if not rejected else table.take(indices)
        try:
            await attempt(work)
        except ContentError:
            rejected.extend(await _isolate(work, indices, attempt))
    if rejected:
        rejected.sort()
        raise RowsRejected(table.take([i for i, _ in rejected]), [m for _, m in rejected])


async def write_in_parts(
    table: pa.Table,
    attempt: Callable[[pa.Table], Awaitable[None]],
    parts: int,
    refused: Sequence[tuple[int, str]] = (),
) -> None:
    """:func:`write_isolating` on up to ``parts`` slices of ``table`` at once
    (each slice its own transaction, on its own connection), so the client
    prepares one slice while the server stores another.

    A slice that fails does not stop the others; a replay skips what they
    wrote. Raises the first error other than :class:`RowsRejected`, else the
    rows every slice rejected.
    """
    n = table.num_rows
    parts = max(1, min(parts, n // MIN_PART_ROWS))
    if parts == 1:
        await write_isolating(table, attempt, refused)
        return
    step = -(-n // parts)
    results = await asyncio.gather(
        *(
            write_isolating(
                table.slice(i, step), attempt, [(j - i, m) for j, m in refused if i <= j < i + step]
            )
            for i in range(0, n, step)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    rejected = [r for r in failed if isinstance(r, RowsRejected)]
    if len(rejected) < len(failed):
        raise next(r for r in failed if not isinstance(r, RowsRejected))
    if rejected:
        raise RowsRejected(
            pa.concat_tables([r.rejected for r in rejected]),
            [e for r in rejected for e in r.errors],
        )


async def _isolate(
    part: pa.Table, indices: list[int], attempt: Callable[[pa.Table], Awaitable[None]]
) -> list[tuple[int, str]]:
    """The rows of ``part`` (known to fail) the database refuses; writes the others."""
    found: list[tuple[int, str]] = []
    n = part.num_rows
    if n <= ROW_BY_ROW:
        for i in range(n):
            try:
                await attempt(part.slice(i, 1))
            except ContentError as exc:
                found.append((indices[i], exc.message))
        return found
    mid = n // 2
    for start, stop in ((0, mid), (mid, n)):
        piece = part.slice(start, stop - start)
        try:
            await attempt(piece)
        except ContentError:
            found.extend(await _isolate(piece, indices[start:stop], attempt))
    return found


# -- query side ---------------------------------------------------------------

MAX_PUSHED_SESSIONS = 500


def aware(value: datetime) -> datetime:
    """``value`` as an aware UTC time (naive times are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def glob_to_like(pattern: str) -> str | None:
    """A LIKE pattern (escape ``!``) matching what the glob matches, or
    ``None`` if the glob has a ``[...]`` class LIKE cannot say."""
    if "[" in pattern:
        return None
    out = pattern.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return out.replace("*", "%").replace("?", "_")


@dataclass(frozen=True)
class Pushdown:
    """How a dialect writes the query filters into its own ``WHERE``.

    The clause may keep more rows than the filters (DuckDB applies them
    exactly afterwards), never fewer.
    """

    quote: Callable[[str], str]
    placeholder: Callable[[int], str]  # 1-based position -> "$1" | "%s" | "?"
    timestamp: Callable[[datetime], Any]  # an aware UTC time -> the bound value
    native_glob: bool = False  # the dialect has GLOB with DuckDB's semantics

    def where(self, f: Filters) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return self.placeholder(len(params))

        if isinstance(f.session_id, str):
            clauses.append(f"{self.quote('session_id')} = {param(f.session_id)}")
        elif f.session_id is not None and len(f.session_id) <= MAX_PUSHED_SESSIONS:
            if not f.session_id:
                clauses.append("1 = 0")
            else:
                marks = ", ".join(param(s) for s in f.session_id)
                clauses.append(f"{self.quote('session_id')} IN ({marks})")
        if f.trace_id is not None:
            clauses.append(f"{self.quote('trace_id')} = {param(f.trace_id)}")
        if f.operation is not None:
            op = self.quote("operation_name")
            if not any(c in f.operation for c in "*?["):
                clauses.append(f"{op} = {param(f.operation)}")
            elif self.native_glob:
                clauses.append(f"{op} GLOB {param(f.operation)}")
            else:
                like = glob_to_like(f.operation)
                if like is not None:
                    clauses.append(f"{op} LIKE {param(like)} ESCAPE '!'")
        if f.since is not None:
            clauses.append(f"{self.quote('timestamp')} >= {param(self.timestamp(aware(f.since)))}")
        if f.until is not None:
            clauses.append(f"{self.quote('timestamp')} < {param(self.timestamp(aware(f.until)))}")
        if f.project_name is not None:
            clauses.append(f"{self.quote('project_name')} = {param(f.project_name)}")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select(self, qualified: str, present: Iterable[str], f: Filters) -> tuple[str, list[Any]]:
        """``SELECT`` of every schema column (``NULL`` for those the table
        lacks, an older version's) with the filters pushed down."""
        have = set(present)
        cols = ", ".join(self.quote(n) if n in have else "NULL" for n in SCHEMA.names)
        where, params = self.where(f)
        return f"SELECT {cols} FROM {qualified} {where}", params


Decoder = Callable[[pa.Field, list[Any]], pa.Array]


def default_decode(field: pa.Field, values: list[Any]) -> pa.Array:
    return pa.array(values, type=field.type)


def rows_to_batch(
    rows: Sequence[Sequence[Any]], decode: Decoder = default_decode
) -> pa.RecordBatch:
    """A record batch of ``SCHEMA`` from rows in schema order."""
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in SCHEMA]
    arrays = [decode(f, list(col)) for f, col in zip(SCHEMA, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def stream(
    first: Sequence[Sequence[Any]],
    fetch: Callable[[], Sequence[Sequence[Any]]],
    close: Callable[[], None],
    decode: Decoder = default_decode,
    scrub: Callable[[str], str] = mask_dsn,
) -> pa.RecordBatchReader:
    """A reader of ``SCHEMA`` batches: ``first``, then ``fetch()`` until it
    returns no rows; ``close()`` runs when the reader is exhausted or dropped.
    A failing fetch raises :class:`StoreError` (scrubbed) in the consumer."""

    def batches() -> Iterator[pa.RecordBatch]:
        error: StoreError | None = None
        try:
            rows = first
            while rows:
                yield rows_to_batch(rows, decode)
                try:
                    rows = fetch()
                except Exception as exc:
                    error = StoreError(scrub(f"reading the store failed: {describe(exc)}"))
                    break
        finally:
            close()
        if error is not None:
            raise error

    return pa.RecordBatchReader.from_batches(SCHEMA, batches())
