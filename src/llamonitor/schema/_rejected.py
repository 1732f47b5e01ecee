"""The error a sink's backend raises for rows the receiver refused for their
content (here, not in ``storage``, so that exporters can raise it too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RowsRejected"]


class RowsRejected(Exception):
    """Raised by ``write_table`` after every other row of the batch was durably
    written: the database refused ``rejected`` for their content (an
    out-of-range value...), with one error text per row in ``errors``."""

    def __init__(self, rejected: pa.Table, errors: list[str]) -> None:
        self.rejected = rejected
        self.errors = errors
        first = errors[0] if errors else "rejected"
        super().__init__(f"{rejected.num_rows} row(s) rejected: {first}")
