"""Where scores are kept: the configured store, beside the spans.

One pair of calls for every store: :func:`write_scores` and
:func:`read_scores`.

- Parquet (``parquet``, and the file store ``jsonl``): files under
  ``<output_dir>/scores/YYYY-MM-DD/scores_*.parquet`` (the UTC day the score
  was given), written atomically like the span files (``_side_files``, as the
  metric points' files); the span reader never
  lists the ``scores`` directory. Files are only ever added: a score written
  again is a new row with the same ``score_id``, and reads keep the latest.
- SQLite, PostgreSQL, MySQL/MariaDB: the table ``llamonitor_scores``, upserted
  by ``score_id`` (see ``_sql_scores``).
- ClickHouse: the table ``llamonitor_scores``, a ``ReplacingMergeTree`` by
  ``score_id`` read ``FINAL`` (see ``_clickhouse_scores``).

A score may name a trace, span or session the store does not hold (yet, or
ever: a typo, spans sampled out): it is kept as given, and
:func:`mark_targets` adds the query-side flag ``target_found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from llamonitor.schema._scores import SCORE_SCHEMA, conform_scores, empty_scores
from llamonitor.schema.config import StorageConfig
from llamonitor.storage import _side_files
from llamonitor.storage._files import write_atomic

SCORES_DIR = "scores"
"""The Parquet store's scores live in ``<output_dir>/scores/``."""

FILE_STORES = _side_files.FILE_STORES
SQL_STORES = _side_files.SQL_STORES


def store_kind(storage: StorageConfig) -> str:
    """``parquet``, the SQL backend's name or ``clickhouse`` for ``storage``.

    Raises:
        ConfigurationError: a backend that cannot hold scores (``memory``, a
            custom class), naming ``storage.backend``.
    """
    return _side_files.store_kind(storage, "scores")


def scores_root(storage: StorageConfig) -> Path:
    return Path(storage.output_dir) / SCORES_DIR


def write_scores(storage: StorageConfig, table: pa.Table) -> int:
    """Store a table of scores (idempotent by ``score_id``).

    Returns:
        The number of scores written.

    Raises:
        ValueError: the table is not scores (see ``conform_scores``).
        ConfigurationError: a backend that cannot hold scores.
        StoreError / OSError: the store failed (worth retrying when transient).
    """
    kind = store_kind(storage)
    scores = conform_scores(table)
    if scores.num_rows == 0:
        return 0
    if kind == "parquet":
        _write_parquet(scores_root(storage), scores)
    elif kind == "clickhouse":
        from llamonitor.storage import _clickhouse_scores

        _clickhouse_scores.write(storage, scores)
    else:
        from llamonitor.storage import _sql_scores

        _sql_scores.write(storage, kind, scores)
    return int(scores.num_rows)


@dataclass(frozen=True)
class ScoreFilters:
    """What :func:`read_scores` keeps (``since`` inclusive, ``until`` exclusive, UTC)."""

    name: str | None = None
    trace_id: str | tuple[str, ...] | None = None
    span_id: str | None = None
    session_id: str | None = None
    source: str | None = None
    evaluator: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def score_where(f: ScoreFilters) -> tuple[str, list[Any]]:
    """``WHERE ...`` (DuckDB SQL over scores) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("name", "span_id", "session_id", "source", "evaluator"):
        value = getattr(f, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if isinstance(f.trace_id, tuple):
        clauses.append("list_contains(?, trace_id)")
        params.append(list(f.trace_id))
    elif f.trace_id is not None:
        clauses.append("trace_id = ?")
        params.append(f.trace_id)
    if f.since is not None:
        clauses.append('"timestamp" >= ?')
        params.append(_aware(f.since))
    if f.until is not None:
        clauses.append('"timestamp" < ?')
        params.append(_aware(f.until))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def read_scores(storage: StorageConfig, filters: ScoreFilters | None = None) -> pa.Table:
    """The store's scores passing ``filters``: one row per ``score_id`` (the
    latest written), newest first. A table of :data:`SCORE_SCHEMA`."""
    import duckdb

    f = filters or ScoreFilters()
    kind = store_kind(storage)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if kind == "parquet":
            files = score_files(scores_root(storage), f.since, f.until)
            if not files:
                return empty_scores()
            # Rows written again carry a later timestamp: a later day's file.
            rel = "read_parquet(?, union_by_name = true)"
            head: list[Any] = [[str(p) for p in files]]
        elif kind == "clickhouse":
            from llamonitor.storage import _clickhouse_scores

            trace = f.trace_id if isinstance(f.trace_id, str) else None
            pushed = _clickhouse_scores.fetch(
                storage, f.since, f.until, name=f.name, trace_id=trace, source=f.source,
                evaluator=f.evaluator,
            )  # fmt: skip
            con.register("__scores", pushed)
            rel, head = "__scores", []
        else:
            from llamonitor.storage import _sql_scores

            con.register("__scores", _sql_scores.fetch(storage, kind, f.since))
            rel, head = "__scores", []
        where, params = score_where(f)
        sql = (
            f"SELECT * FROM {rel} {where} QUALIFY row_number() OVER "
            '(PARTITION BY score_id ORDER BY "timestamp" DESC) = 1 '
            'ORDER BY "timestamp" DESC, score_id'
        )
        result = con.sql(sql, params=[*head, *params])
        fetch = getattr(result, "to_arrow_table", None) or result.arrow
        out: pa.Table = fetch()
    finally:
        con.close()
    return conform_scores(out)


def score_files(
    root: Path, since: datetime | None = None, until: datetime | None = None
) -> list[Path]:
    """The complete score files under ``root``, of the days ``[since, until)`` touches."""
    return _side_files.day_files(root, since, until)


def _write_parquet(root: Path, scores: pa.Table) -> None:
    import pyarrow.parquet as pq

    def write_file(part: pa.Table, path: Path) -> None:
        def write(out: BinaryIO) -> None:
            pq.write_table(part, out, compression="zstd")

        write_atomic(path, write)

    _side_files.write_by_day(root, scores, "scores", write_file)


def mark_targets(scores: pa.Table, spans: Any) -> pa.Table:
    """``scores`` with a ``target_found`` column: whether the store ``spans``
    (a ``DuckDBQuery``) holds the trace, span or session each score names.

    A score whose target is missing is kept as given (its spans may arrive
    later, or were sampled out); ``target_found`` says so.
    """
    import pyarrow.compute as pc

    found: dict[str, set[str]] = {"trace": set(), "span": set(), "session": set()}
    for target, column in (("trace", "trace_id"), ("span", "span_id"), ("session", "session_id")):
        mask = pc.equal(scores.column("target"), target)
        ids = sorted({v for v in pc.filter(scores.column(column), mask).to_pylist() if v})
        if not ids:
            continue
        table = spans.run(
            f"SELECT DISTINCT {column} AS id FROM {{rel}} WHERE list_contains(?, {column})",
            [ids],
        )
        if table is not None:
            found[target] = {str(v) for v in table.column("id").to_pylist()}
    flags = [
        row[f"{t}_id"] in found.get(t, set())
        for row, t in zip(
            scores.select(["trace_id", "span_id", "session_id"]).to_pylist(),
            scores.column("target").to_pylist(),
            strict=True,
        )
    ]
    return scores.append_column("target_found", pa.array(flags, pa.bool_()))


def since_ago(text: str, now: datetime | None = None) -> datetime:
    """``15m``/``2h``/``1d``/``1w`` ago, or an ISO time (naive: UTC).

    Raises:
        ValueError: neither.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    now = now or datetime.now(timezone.utc)
    t = text.strip()
    if t[:-1].replace(".", "", 1).isdigit() and t[-1:] in units:
        return now - timedelta(seconds=float(t[:-1]) * units[t[-1]])
    try:
        return _aware(datetime.fromisoformat(t))
    except ValueError:
        raise ValueError(f"{text!r}: give a duration (30m, 2h, 1d, 1w) or an ISO time") from None


__all__ = [
    "SCORES_DIR",
    "SCORE_SCHEMA",
    "ScoreFilters",
    "mark_targets",
    "read_scores",
    "score_files",
    "since_ago",
    "store_kind",
    "write_scores",
]
