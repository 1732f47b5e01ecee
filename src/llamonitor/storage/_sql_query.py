"""The query side every SQL store shares: the filters pushed into the store's
``WHERE``, and rows streamed to DuckDB as Arrow record batches of the exact
schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from llamonitor.schema._columns import SCHEMA
from llamonitor.schema._extensions import failed_or_null
from llamonitor.storage._duckdb import Filters
from llamonitor.storage._sql import StoreError, describe, mask_dsn
from llamonitor.storage._sql_ddl import extension_field

CHUNK_ROWS = 10_000
"""Rows per record batch handed to DuckDB by the query side."""

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
    # How a table of the original system (llamonitor-async) not migrated yet
    # is read: column -> SQL expression (its error is the message).
    original: Mapping[str, str] = field(default_factory=dict)

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

    def select(
        self,
        qualified: str,
        present: Iterable[str],
        f: Filters,
        extra: Sequence[pa.Field] = (),
    ) -> tuple[str, list[Any]]:
        """``SELECT`` of every schema column (``NULL`` for those the table
        lacks, an older version's), then the ``extra`` (extension) columns,
        with the filters pushed down."""
        have = set(present)
        names = [*SCHEMA.names, *(x.name for x in extra)]
        if "schema_version" in have and "error" in have and "error_message" not in have:
            # The original's table, before a writer migrated it: read it as ours.
            exprs = {**{n: self.quote(n) for n in have}, **self.original}
            inner = ", ".join(f"{e} AS {self.quote(n)}" for n, e in exprs.items())
            qualified = f"(SELECT {inner} FROM {qualified}) AS llamonitor_original"
            have |= exprs.keys()
        cols = ", ".join(self.quote(n) if n in have else "NULL" for n in names)
        where, params = self.where(f)
        return f"SELECT {cols} FROM {qualified} {where}", params


def extension_fields(recorded: dict[str, str], present: Iterable[str]) -> list[pa.Field]:
    """The recorded extension columns (metric groups) the table has, as they are read."""
    have = set(present)
    return [extension_field(n, k) for n, k in sorted(recorded.items()) if n in have]


def read_schema(extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The schema a query streams: the base columns, then ``extra``."""
    return pa.schema([*SCHEMA, *extra], metadata=SCHEMA.metadata) if extra else SCHEMA


Decoder = Callable[[pa.Field, list[Any]], pa.Array]


def default_decode(field: pa.Field, values: list[Any]) -> pa.Array:
    return pa.array(values, type=field.type)


def rows_to_batch(
    rows: Sequence[Sequence[Any]], decode: Decoder = default_decode, schema: pa.Schema = SCHEMA
) -> pa.RecordBatch:
    """A record batch of ``schema`` from rows in its order; ``error`` FALSE (a
    table not migrated to version 3 yet) read as NULL."""
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [decode(f, list(col)) for f, col in zip(schema, columns, strict=True)]
    i = schema.get_field_index("error")
    arrays[i] = failed_or_null(arrays[i])
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def stream(
    first: Sequence[Sequence[Any]],
    fetch: Callable[[], Sequence[Sequence[Any]]],
    close: Callable[[], None],
    decode: Decoder = default_decode,
    scrub: Callable[[str], str] = mask_dsn,
    schema: pa.Schema = SCHEMA,
) -> pa.RecordBatchReader:
    """A reader of ``schema`` batches: ``first``, then ``fetch()`` until it
    returns no rows; ``close()`` runs when the reader is exhausted or dropped.
    A failing fetch raises :class:`StoreError` (scrubbed) in the consumer."""

    def batches() -> Iterator[pa.RecordBatch]:
        error: StoreError | None = None
        try:
            rows = first
            while rows:
                yield rows_to_batch(rows, decode, schema)
                try:
                    rows = fetch()
                except Exception as exc:
                    error = StoreError(scrub(f"reading the store failed: {describe(exc)}"))
                    break
        finally:
            close()
        if error is not None:
            raise error

    return pa.RecordBatchReader.from_batches(schema, batches())
