"""What the list endpoints share: a whitelisted sort, keyset pagination over it
(NULL sort values last, a unique column breaking ties), and rows made fit for
JSON (no NaN or infinity, capped text).

A sort column only ever comes from an endpoint's whitelist; a cursor's values
reach SQL as ``?`` parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llamonitor.server._errors import BadParameter
from llamonitor.server._query import decode_cursor, encode_cursor

__all__ = ["Keyset", "finite", "clean_row", "limit_checked"]

INT64_MAX = 2**63 - 1


def finite(value: Any) -> Any:
    """``value``, or ``None`` for a float that JSON cannot hold (NaN, infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every non-finite float as ``None``."""
    return {k: finite(v) for k, v in row.items()}


def limit_checked(limit: int, max_page_size: int) -> int:
    """``limit``, refused past the server's page size (names ``limit``)."""
    if limit > max_page_size:
        raise BadParameter(
            "limit",
            f"must be at most {max_page_size} (server.max_page_size, "
            "LLMOPS_SERVER__MAX_PAGE_SIZE)",
        )
    return limit


@dataclass(frozen=True)
class Keyset:
    """One sort of one endpoint: ``sort`` (a name of ``columns``, a leading ``-``
    for descending) over the SQL expressions of ``columns``, ties broken by
    ``tie`` (ascending). Rows whose sort value is NULL come last, either way.

    ``columns`` maps a sort name to ``(SQL expression, kind of its values)``,
    the kind one of ``datetime``, ``float``, ``int``.
    """

    sort: str
    columns: dict[str, tuple[str, type]]
    tie: str

    @property
    def name(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    @property
    def expr(self) -> str:
        try:
            return self.columns[self.name][0]
        except KeyError:
            raise BadParameter(
                "sort", f"{self.sort[:40]!r} is not one of {sorted(self.columns)} (or -name)"
            ) from None

    @property
    def kind(self) -> type:
        return self.columns[self.name][1]

    def order_by(self) -> str:
        """``ORDER BY ...``: NULLs last, then the value, then the tie column."""
        direction = "DESC" if self.descending else "ASC"
        return f"ORDER BY ({self.expr}) IS NULL, {self.expr} {direction}, {self.tie} ASC"

    def after(self, cursor: str | None) -> tuple[str, list[Any]]:
        """``AND ...`` keeping the rows after ``cursor`` in :meth:`order_by`'s
        order (``""`` for the first page), and its parameters.

        Raises:
            BadParameter: a cursor this sort did not make (names ``cursor``).
        """
        if cursor is None:
            return "", []
        sort, value, tie = decode_cursor(cursor, (str, self.kind, str))
        if sort != self.sort:
            raise BadParameter(
                "cursor", f"was made for sort={sort}, not sort={self.sort}: start over without it"
            )
        if tie is None or (isinstance(value, int) and abs(value) > INT64_MAX) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise BadParameter("cursor", "is not a cursor this endpoint returned")
        e = self.expr
        if value is None:  # already among the NULLs, which come last
            return f"AND ({e}) IS NULL AND {self.tie} > ?", [tie]
        beyond = "<" if self.descending else ">"
        return (
            f"AND (({e}) IS NULL OR {e} {beyond} ? OR ({e} = ? AND {self.tie} > ?))",
            [value, value, tie],
        )

    def cursor_of(self, value: Any, tie: str) -> str:
        """The cursor of a page whose last row has sort ``value`` and tie ``tie``."""
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if isinstance(value, datetime):
            value = value.isoformat()
        return encode_cursor([self.sort, value, tie])
