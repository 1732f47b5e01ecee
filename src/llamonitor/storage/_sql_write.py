"""The write path every SQL store shares: the columns to send, and row isolation.

A batch the database refuses for the *content* of some rows is bisected, the
good rows written, and :class:`~llamonitor.storage.base.RowsRejected` raised;
a large batch may go as concurrent slices, each its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pyarrow as pa

from llamonitor.schema import _extensions
from llamonitor.storage.base import RowsRejected

ROW_BY_ROW = 8
"""A failing slice this small is written row by row instead of bisected."""

MIN_PART_ROWS = 1_000
"""A batch is split for concurrent writes only into slices at least this large."""


def present_fields(table: pa.Table) -> list[pa.Field]:
    """The fields to send for ``table`` (conformed: the base columns, then its
    metric groups' columns): a nullable column null in every row is left out
    (the database fills in NULL). Half the columns of a typical span are, and
    each costs the client and the server per row."""
    n = table.num_rows
    return [f for f in table.schema if not f.nullable or table.column(f.name).null_count < n]


def conform(table: pa.Table) -> pa.Table:
    """``table`` with the columns and types of ``SCHEMA`` (then its extension
    columns), ``error`` TRUE or NULL (see :func:`~llamonitor.schema._extensions.conform`)."""
    return _extensions.conform(table)


class ContentError(Exception):
    """Internal: the database refused a slice of rows for their content."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
