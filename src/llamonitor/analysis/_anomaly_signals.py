"""The signals per time bucket and group, computed by the store's engine.

One DuckDB ``GROUP BY bucket, group`` over the store's relation (Parquet
files read in place; a SQL store's rows of the time range only, the range
pushed into its own ``WHERE``): per bucket and group, the spans, the failed
ones, the cost, the tokens and the exact p95 of ``duration_ms``
(``quantile_cont``, as ``numpy.percentile``). Only these rows (buckets x
groups) reach Python, never the spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pyarrow as pa

from llamonitor.analysis._sql import HAS_TOKENS, TOKENS
from llamonitor.storage._duckdb import DuckDBQuery, Filters

SIGNALS: tuple[str, ...] = ("cost", "tokens", "latency_p95", "error_rate", "volume")
"""The signals, in the order they are reported."""

GROUP_COLUMNS: dict[str, str] = {
    "model": "model",
    "operation": "operation_name",
    "agent": "agent_name",
    "provider": "provider",
    "project": "project_name",
    "operation_type": "operation_type",
}
"""``group_by`` names -> the span column (the only identifiers that reach the SQL)."""

MIN_SPANS = 5
"""A bucket needs this many spans (timed ones, for the p95) for a p95 or an error rate."""

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_SQL = """SELECT CAST(epoch_us("timestamp") // {width} AS BIGINT) AS b{keys},
  count(*) AS volume,
  count(*) FILTER (WHERE error) AS errors,
  sum(cost_usd) AS cost,
  sum({tokens}) FILTER (WHERE {has_tokens}) AS tokens,
  quantile_cont(duration_ms, 0.95) FILTER (WHERE NOT isnan(duration_ms)) AS latency_p95,
  count(duration_ms) FILTER (WHERE NOT isnan(duration_ms)) AS timed
FROM {{rel}} {where}
GROUP BY ALL
ORDER BY b"""


class Query(Protocol):
    """What the signals need of a store: ``DuckDBQuery.run`` (a ``ServerStore`` has it too)."""

    def run(
        self, sql: str, params: Sequence[Any] = ..., filters: Filters = ...
    ) -> pa.Table | None: ...


@dataclass(frozen=True)
class BucketRow:
    """The figures of one bucket of one group."""

    bucket: int  # bucket number: epoch seconds // bucket_seconds
    group: tuple[tuple[str, str], ...]
    volume: int
    errors: int
    cost: float | None
    tokens: float | None
    latency_p95: float | None
    timed: int

    def value(self, signal: str) -> float:
        """The signal's value in this bucket (NaN: not measurable here)."""
        if signal == "volume":
            return float(self.volume)
        if signal == "error_rate":
            return self.errors / self.volume if self.volume >= MIN_SPANS else math.nan
        if signal == "latency_p95":
            if self.latency_p95 is None or self.timed < MIN_SPANS:
                return math.nan
            return float(self.latency_p95)
        found = self.cost if signal == "cost" else self.tokens
        return 0.0 if found is None else float(found)

    def has(self, signal: str) -> bool:
        """Whether this bucket starts the signal's series (a first cost, a first token...)."""
        if signal == "cost":
            return self.cost is not None
        if signal == "tokens":
            return self.tokens is not None
        return True


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(group_by)
    for d in dims:
        if d not in GROUP_COLUMNS:
            raise ValueError(f"group_by: {d!r} is not one of {sorted(GROUP_COLUMNS)}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"group_by: {list(dims)} names a dimension twice")
    return dims


def check_signals(signals: Sequence[str]) -> tuple[str, ...]:
    names = tuple(signals)
    for s in names:
        if s not in SIGNALS:
            raise ValueError(f"signals: {s!r} is not one of {list(SIGNALS)}")
    return names


def signals_sql(bucket_seconds: int, group_by: Sequence[str], where: str) -> str:
    keys = "".join(
        f", coalesce(CAST({GROUP_COLUMNS[d]} AS VARCHAR), '') AS k{i}"
        for i, d in enumerate(group_by)
    )
    return _SQL.format(
        width=int(bucket_seconds) * 1_000_000, keys=keys, tokens=TOKENS, has_tokens=HAS_TOKENS,
        where=where,
    )


def bucket_of(t: datetime, bucket_seconds: int) -> int:
    """The number of the bucket holding ``t`` (naive = UTC)."""
    aware = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    us = (aware - EPOCH) // timedelta(microseconds=1)
    return int(us // (bucket_seconds * 1_000_000))


def start_of(bucket: int, bucket_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=bucket * bucket_seconds)


def bucket_rows(
    query: Query,
    *,
    first_bucket: int,
    end_bucket: int,
    bucket_seconds: int,
    group_by: Sequence[str] = ("model",),
) -> list[BucketRow]:
    """The figures of every (bucket, group) in ``[first_bucket, end_bucket)``.

    The time range goes into the store's filters, so a SQL store reads only
    those rows and a watcher's cost follows the new data.
    """
    dims = check_group_by(group_by)
    if end_bucket <= first_bucket:
        return []
    filters = Filters(
        since=start_of(first_bucket, bucket_seconds), until=start_of(end_bucket, bucket_seconds)
    )
    where, params = DuckDBQuery.where(filters)
    table = query.run(signals_sql(bucket_seconds, dims, where), params, filters)
    if table is None:
        return []
    cols = table.to_pydict()
    out: list[BucketRow] = []
    for i in range(table.num_rows):
        out.append(
            BucketRow(
                bucket=int(cols["b"][i]),
                group=tuple((d, str(cols[f"k{j}"][i])) for j, d in enumerate(dims)),
                volume=int(cols["volume"][i]),
                errors=int(cols["errors"][i] or 0),
                cost=cols["cost"][i],
                tokens=None if cols["tokens"][i] is None else float(cols["tokens"][i]),
                latency_p95=cols["latency_p95"][i],
                timed=int(cols["timed"][i] or 0),
            )
        )
    return out
