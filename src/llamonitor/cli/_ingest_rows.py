"""A broker message's spans as the rows an ingest worker writes.

:func:`spans` decodes and conforms one message (or raises
:class:`~llamonitor.export._broker_codec.PoisonMessage`), :func:`dedupe`
keeps each ``event_id`` once within a write, and :func:`keyed` names one
message's rows by its batch id for a keyed (Parquet) target.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.cli._ingest_source import Delivery
from llamonitor.export._broker_codec import BATCH_ID, PoisonMessage, decode, ids_digest
from llamonitor.schema._extensions import conform

__all__ = ["dedupe", "keyed", "spans"]

_BATCH_KEY = re.compile(r"[0-9a-f]{32}")


def dedupe(table: pa.Table) -> tuple[pa.Table, int]:
    """``table`` with each ``event_id`` once (the first), and how many were dropped."""
    ids = table.column("event_id")
    distinct = pc.count_distinct(ids).as_py()
    if distinct == table.num_rows:
        return table, 0
    seen: set[Any] = set()
    keep = []
    for i, value in enumerate(ids.to_pylist()):
        if value not in seen:
            seen.add(value)
            keep.append(i)
    return table.take(keep), table.num_rows - len(keep)




def spans(d: Delivery) -> pa.Table:
    """The spans of a message, in the schema's types.

    Raises:
        PoisonMessage: it cannot be decoded, or its columns cannot be
            converted to the schema's (a write of it would fail forever).
    """
    table = decode(d.payload, d.headers)
    try:
        return conform(table)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise PoisonMessage(f"the spans do not fit the schema: {exc}") from exc


def keyed(d: Delivery, table: pa.Table) -> tuple[str, pa.Table]:
    """``(key, rows)`` of one message for a keyed target: its batch id (a
    digest of its event ids: 32 hex digits; computed when the producer did
    not send one, or sent anything else)."""
    key = d.headers.get(BATCH_ID, "")
    if not _BATCH_KEY.fullmatch(key):
        key = ids_digest(table.column("event_id"))
    return key, dedupe(table)[0]
