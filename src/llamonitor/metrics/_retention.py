"""Retention and downsampling: :func:`apply_retention` and :func:`show_retention`.

One run: the policy (``RetentionConfig``) and the time make the cutoffs
(``_retention_plan.plan``); the rollups the doomed rows feed are built
first (``metrics._rollup.rollup``: raw points -> 1 min -> 5 min -> 1 h, and,
with ``keep_span_rollups``, the spans' per-minute and per-hour series), so
that no point or span goes before the coarser series that summarise it
exist; then the store's executor removes what is past the cutoffs (Parquet:
``_retention_parquet``; SQLite, PostgreSQL, MySQL: ``_retention_sql``).
ClickHouse is refused up front (:func:`check_store`): there a month is
dropped whole (``ALTER TABLE ... DROP PARTITION``; the raw points' month
``(0, 202601)``, which keeps the rollups ``llamonitor metrics rollup`` built).

Idempotent: rollups are built once (their watermark is the store), and a
second run at the same time finds nothing more to delete. A run that dies
half way leaves every row kept or, if past the policy, gone; the next one
goes on. A dry run writes nothing and deletes nothing; it counts (the rows
that would go, and the rollup points it would write first: built in memory,
each level from the one below as the real run would).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from llamonitor.metrics._retention_plan import POINTS, SPANS, Cutoff, Tally, plan
from llamonitor.metrics._store import aware, query_points, store_kind
from llamonitor.schema._retention_config import ROLLUP_SETTLE_SECONDS, RetentionConfig
from llamonitor.schema.config import ConfigurationError, StorageConfig

logger = logging.getLogger("llamonitor.metrics.retention")

ROLLUP_MARGIN_SECONDS = 2 * 3600
"""Rollups are built up to the newest row plus this (an hour window and its
settling time): a clock far in the future never walks empty windows for years."""


@dataclass
class RetentionReport:
    """What one run did (or, with ``dry_run``, would do)."""

    store: str
    now: datetime
    dry_run: bool
    cutoffs: list[Cutoff] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    kept_forever: list[str] = field(default_factory=list)
    rollups_written: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Rows that went (would go)."""
        return sum(t.rows for t in self.tallies.values())

    def to_dict(self) -> dict[str, Any]:
        items = []
        for c in self.cutoffs:
            t = self.tallies.get(c.key, Tally())
            items.append(
                {
                    "table": c.table,
                    "resolution_seconds": c.resolution,
                    "retention_seconds": c.retention_seconds,
                    "before": c.before.isoformat(),
                    **t.to_dict(),
                }
            )
        return {
            "store": self.store,
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "rows": self.rows,
            "cutoffs": items,
            "kept_forever": self.kept_forever,
            "rollups_written": self.rollups_written,
            "seconds": round(self.seconds, 3),
        }


def _now(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if isinstance(now, (int, float)):
        return datetime.fromtimestamp(float(now), timezone.utc)
    return aware(now)


def _label(storage: StorageConfig, kind: str) -> str:
    if kind == "parquet":
        return str(storage.output_dir)
    from llamonitor.storage import _sql

    dsn = storage.connection_string.get_secret_value() if storage.connection_string else ""
    return _sql.mask_dsn(dsn) if dsn else kind


def _kept_forever(config: RetentionConfig) -> list[str]:
    out = [] if config.spans_seconds is not None else [SPANS]
    for res in (0, 60, 300, 3600):
        if config.point_retention(res) is None:
            out.append(f"{POINTS}@{res}")
    return out


def _newest_point(storage: StorageConfig) -> datetime | None:
    t = query_points(storage, 'SELECT max("timestamp") AS t FROM {rel}')
    if t.num_rows == 0 or "t" not in t.column_names:
        return None
    value = t.column("t")[0].as_py()
    return None if value is None else aware(value)


def _newest_span(storage: StorageConfig) -> datetime | None:
    from llamonitor.metrics._span_rollup import span_query

    q = span_query(storage)
    try:
        t = q.run('SELECT max("timestamp") AS t FROM {rel}')
    finally:
        q.close()
    if t is None or t.num_rows == 0:
        return None
    value = t.column("t")[0].as_py()
    return None if value is None else aware(value)


def _rollups(
    storage: StorageConfig,
    config: RetentionConfig,
    cutoffs: list[Cutoff],
    now: datetime,
    dry_run: bool = False,
) -> dict[str, int]:
    """Build the rollups the rows about to go feed; points written per series
    kind (``dry_run``: built in memory and counted, not written)."""
    from llamonitor.metrics._rollup import LEVELS, rollup
    from llamonitor.metrics._span_rollup import rollup_spans

    written: dict[str, int] = {}
    limit = now - timedelta(seconds=ROLLUP_SETTLE_SECONDS)
    feeding = {src for src, _ in LEVELS}
    if any(c.table == POINTS and c.resolution in feeding for c in cutoffs):
        newest = _newest_point(storage)
        if newest is not None:
            until = min(limit, newest + timedelta(seconds=ROLLUP_MARGIN_SECONDS))
            result = rollup(storage, until=until, spans=False, now=now.timestamp(), dry_run=dry_run)
            for dst, n in result.written.items():
                written[f"points@{dst}"] = n
    if config.keep_span_rollups and any(c.table == SPANS for c in cutoffs):
        newest = _newest_span(storage)
        if newest is not None:
            until = min(limit, newest + timedelta(seconds=ROLLUP_MARGIN_SECONDS))
            for res, n in rollup_spans(storage, None, until, dry_run=dry_run).items():
                written[f"spans@{res}"] = n
    return written


def apply_retention(
    storage: StorageConfig,
    config: RetentionConfig | None = None,
    *,
    now: datetime | float | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Apply the retention policy to the store of ``storage``.

    Args:
        storage: the store (the spans' ``StorageConfig``; metric points are
            beside the spans).
        config: the policy (default: ``RetentionConfig()``, the seed's
            ladder for points, spans forever).
        now: the time the policy counts from (a datetime, naive = UTC, or
            epoch seconds; default: the clock). A time before the data
            deletes nothing; a time far ahead deletes everything the policy
            says is past, after building the rollups that summarise it.
        dry_run: count what would go and the rollup points that would be
            written first (``rollups_written``); change nothing.

    Returns:
        A :class:`RetentionReport`.

    Raises:
        ConfigurationError: a store that holds no metric points (``memory``,
            a custom backend) or the ``clickhouse`` store (its way is a
            partition drop: see :func:`check_store`), naming
            ``storage.backend``; a span retention on the ``jsonl`` store
            (naming ``retention.spans_days``).
        CompactionError: a compaction or another retention holds the Parquet store.
        RetentionError / StoreError / OSError: the store failed; what was
            done before stays done, the next run goes on.
    """
    config = config or RetentionConfig()
    check_store(storage, config)
    kind = store_kind(storage)
    when = _now(now)
    started = time.perf_counter()
    cutoffs = plan(config, when)
    report = RetentionReport(
        store=_label(storage, kind),
        now=when,
        dry_run=dry_run,
        cutoffs=cutoffs,
        kept_forever=_kept_forever(config),
    )
    if cutoffs:
        from llamonitor.metrics import _retention_parquet, _retention_sql

        lock: AbstractContextManager[None]
        if dry_run:
            lock = nullcontext()
        elif kind == "parquet":
            lock = _retention_parquet.exclusive(storage)
        else:
            lock = _retention_sql.exclusive(storage, kind)
        with lock:
            report.rollups_written = _rollups(storage, config, cutoffs, when, dry_run)
            if kind == "parquet":
                report.tallies = _retention_parquet.apply(storage, cutoffs, dry_run)
            else:
                report.tallies = _retention_sql.apply(
                    storage, kind, cutoffs, dry_run, config.batch_rows
                )
    report.seconds = time.perf_counter() - started
    if not dry_run and report.rows:
        logger.info(
            "llamonitor: retention removed %d row(s) from %s in %.1f s",
            report.rows,
            report.store,
            report.seconds,
        )
    return report


def check_store(storage: StorageConfig, config: RetentionConfig) -> None:
    """Raise if ``config`` cannot be applied to ``storage`` (before any run).

    Raises:
        ConfigurationError: a store that holds no metric points, or the
            ``clickhouse`` store (the message says how to drop a month of
            spans, and of raw points keeping their rollups, there), naming
            ``storage.backend``; a span retention on the ``jsonl`` store,
            naming ``retention.spans_days``.
    """
    if storage.backend == "clickhouse":
        raise ConfigurationError(
            "storage.backend",
            "retention is not applied to the clickhouse store: drop a month of spans with "
            "ALTER TABLE <database>.<table> DROP PARTITION 202601, and a month of raw metric "
            "points with ALTER TABLE <database>.metric_points DROP PARTITION (0, 202601), "
            "which keeps their rollups (built by 'llamonitor metrics rollup': run it "
            "periodically; docs/clickhouse.md)",
        )
    store_kind(storage)
    if storage.backend == "jsonl" and config.spans_seconds is not None:
        raise ConfigurationError(
            "retention.spans_days",
            "the jsonl store's spans (one append-only file) have no retention: keep them "
            "forever (LLMOPS_RETENTION__SPANS_DAYS=forever, or --spans-days forever) or "
            "store spans in parquet or a database; its metric points have retention",
        )


def show_retention(
    storage: StorageConfig, config: RetentionConfig | None = None, *, now: Any = None
) -> RetentionReport:
    """The policy and what it would remove now (:func:`apply_retention` with ``dry_run``)."""
    return apply_retention(storage, config, now=now, dry_run=True)


def retention_from_env() -> RetentionConfig:
    """``MonitorConfig().retention`` (``LLMOPS_RETENTION__*``).

    Raises:
        ConfigurationError: a bad value, naming the setting (``retention.points``).
    """
    from pydantic import ValidationError

    from llamonitor.schema.config import MonitorConfig

    try:
        return MonitorConfig().retention
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise ConfigurationError(loc or "retention", str(err.get("msg", exc))) from None
