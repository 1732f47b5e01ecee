"""The query side of the Parquet store, apart from its writer: reading needs
DuckDB, pyarrow and the file layout, not the configuration models or the
writer's machinery, so ``llamonitor report`` and ``events`` start sooner.
``llamonitor.storage.parquet.query`` is this function."""

from __future__ import annotations

from pathlib import Path

from llamonitor.storage._duckdb import DuckDBQuery, parquet_relation
from llamonitor.storage._layout import data_files


def query(output_dir: str | Path) -> DuckDBQuery:
    """The query side of a Parquet store (empty results while it has no files).

    Args:
        output_dir: the ``storage.output_dir`` the store was written to.

    Returns:
        A :class:`~llamonitor.storage._duckdb.DuckDBQuery` that lists the
        files again at every query.
    """
    root = Path(output_dir)
    return DuckDBQuery(lambda _filters: parquet_relation(data_files(root)))
