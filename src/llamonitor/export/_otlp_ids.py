"""Our ids as OTLP ids, and the ``OTEL_*`` key-value lists.

A ``trace_id`` of 32 lowercase hex characters is its 16 bytes and a
``span_id`` of 16 its 8 bytes; any other string (a hand-made row, an id from
another system) is hashed (BLAKE2b) to the right length, so the same row
exported twice carries the same ids (a replayed spool is the same span) and a
parent's hashed id matches its child's ``parent_span_id``. OTLP forbids
all-zero ids: none comes out of here.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8


def otlp_id(value: str, size: int) -> tuple[bytes, bool]:
    """``value`` as an OTLP id of ``size`` bytes, and whether it is the id
    itself (hex of that length) rather than a hash of it."""
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if raw.hex() == value and any(raw):
                return raw, True
    raw = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=size).digest()
    if not any(raw):  # pragma: no cover - one chance in 2**64 at least
        raw = raw[:-1] + b"\x01"
    return raw, False


class IdColumn:
    """The OTLP ids of one id column of a batch (values repeat: a trace's id
    is computed once)."""

    def __init__(self, values: list[str | None], size: int) -> None:
        memo: dict[str, tuple[bytes, bool]] = {}
        self.ids: list[bytes] = []
        self.hashed: list[int] = []  # rows whose id is a hash: their text is exported too
        for i, value in enumerate(values):
            if value is None or value == "":
                self.ids.append(b"")
                continue
            got = memo.get(value)
            if got is None:
                got = memo[value] = otlp_id(value, size)
            self.ids.append(got[0])
            if not got[1]:
                self.hashed.append(i)


def parse_key_values(text: str, setting: str) -> dict[str, str]:
    """``k=v,k2=v2`` (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``):
    keys and values URL-decoded and stripped, empty items skipped.

    Raises:
        ValueError: an item without ``=`` or with an empty key (naming ``setting``).
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key:
            raise ValueError(f"{setting}: {item.strip()!r} is not key=value")
        out[key] = unquote(value).strip()
    return out
