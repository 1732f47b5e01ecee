"""Retention on the Parquet store: files wholly past the cutoff are removed,
files that straddle it are rewritten with the rows that stay.

Crash-safe like compaction (``storage._compact``): a rewrite writes the
kept rows to a hidden, locked temporary file beside the original, fsyncs
it, checks its row count, and renames it *over the original*
(``os.replace``): a reader sees the whole old file or the whole new one,
never both and never half of one. A removal is one ``unlink``. A SIGKILL at
any point leaves every row either where it was or, if past the policy,
gone; the temporary file it leaves is removed by the next run (or a
writer's start, see ``storage._files``). One retention or compaction runs
per store at a time (compaction's lock), and leftover compaction journals
are finished first, so no file is rewritten while a journal names it.

Files are read only as far as needed: a file's row-group statistics of
``timestamp`` (and ``resolution_seconds``) decide most files; a file that
straddles the cutoff is streamed one record batch at a time (memory: one
batch, whatever the file's size). Rewritten span files keep their schema
(metadata included), codecs and dictionary columns; point files are written
with the points' encodings (``metrics._store.parquet_options``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llamonitor.metrics._retention_plan import POINTS, SPANS, Cutoff, RetentionError, Tally
from llamonitor.metrics._store import aware, metrics_root, parquet_options, point_files
from llamonitor.schema.config import StorageConfig
from llamonitor.storage._compact import _exclusive, _recover
from llamonitor.storage._files import (
    fsync_dir,
    locked_temp,
    remove_stale_temp_files,
    sync,
    temp_name,
)
from llamonitor.storage._layout import JOURNAL_NAME, data_files

BATCH_ROWS = 65_536
"""Rows per record batch of a streamed rewrite (bounds its memory)."""

TS = "timestamp"
RES = "resolution_seconds"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


Rules = dict[int | None, datetime]
"""Resolution (``None``: spans) -> rows before this time go."""


@dataclass
class _Verdict:
    action: str  # keep, remove, rewrite
    dropped: dict[int | None, int]
    rows: int


def _range(pf: pq.ParquetFile, column: str) -> tuple[Any, Any] | None:
    """(min, max) of ``column`` from the row-group statistics, or ``None``."""
    meta = pf.metadata
    if meta.num_row_groups == 0:
        return None
    first = meta.row_group(0)
    found = [i for i in range(first.num_columns) if first.column(i).path_in_schema == column]
    if not found:
        return None
    i = found[0]
    lo: Any = None
    hi: Any = None
    for g in range(meta.num_row_groups):
        col = meta.row_group(g).column(i)
        s = col.statistics
        if s is None or not s.has_min_max:
            return None
        if s.null_count:
            return None  # nulls stay: decide by reading
        lo = s.min if lo is None else min(lo, s.min)
        hi = s.max if hi is None else max(hi, s.max)
    return (lo, hi) if lo is not None else None


def _drop_mask(batch: pa.RecordBatch | pa.Table, rules: Rules) -> pa.Array | pa.ChunkedArray:
    """True for the rows past their rule's cutoff (never for a null timestamp)."""
    ts = batch.column(TS)
    mask: Any = None
    for res, before in rules.items():
        naive = before if ts.type.tz is not None else before.replace(tzinfo=None)
        bound = pa.scalar(naive, ts.type)
        m = pc.less(ts, bound)
        if res is not None:
            m = pc.and_(m, pc.equal(batch.column(RES), pa.scalar(res, pa.int32())))
        mask = m if mask is None else pc.or_(mask, m)
    return pc.fill_null(mask, False)


def _verdict(pf: pq.ParquetFile, rules: Rules, points: bool) -> _Verdict:
    n = pf.metadata.num_rows
    if n == 0:
        return _Verdict("keep", {}, 0)
    if TS not in pf.schema_arrow.names or (points and RES not in pf.schema_arrow.names):
        return _Verdict("keep", {}, n)  # not a file we can date: keep it
    ts = _range(pf, TS)
    only: int | None = None
    if points:
        res = _range(pf, RES)
        if res is not None and res[0] == res[1]:
            only = int(res[0])
    if ts is not None and (not points or only is not None):
        before = rules.get(only)
        if before is None:
            return _Verdict("keep", {}, n)
        lo, hi = aware(ts[0]), aware(ts[1])
        if hi < before:
            return _Verdict("remove", {only: n}, n)
        if lo >= before:
            return _Verdict("keep", {}, n)
    elif ts is not None and aware(ts[0]) >= max(rules.values()):
        return _Verdict("keep", {}, n)
    columns = [TS, RES] if points else [TS]
    table = pf.read(columns=columns)
    dropped: dict[int | None, int] = {}
    total = 0
    for res_key, before in rules.items():
        k = int(pc.sum(pc.cast(_drop_mask(table, {res_key: before}), pa.int64())).as_py() or 0)
        if k:
            dropped[res_key] = k
            total += k
    if total == 0:
        return _Verdict("keep", {}, n)
    return _Verdict("remove" if total == n else "rewrite", dropped, n)


def _span_writer_options(pf: pq.ParquetFile) -> dict[str, Any]:
    """The codecs and dictionary columns of ``pf`` (its first row group)."""
    meta = pf.metadata
    if meta.num_row_groups == 0:
        return {}
    rg = meta.row_group(0)
    compression: dict[str, str] = {}
    dictionary: list[str] = []
    for i in range(rg.num_columns):
        col = rg.column(i)
        name = col.path_in_schema.split(".")[0]
        codec = str(col.compression).lower()
        compression[name] = "none" if codec == "uncompressed" else codec
        if any("DICTIONARY" in e for e in col.encodings):
            dictionary.append(name)
    return {"compression": compression, "use_dictionary": dictionary}


def _kept_batches(pf: pq.ParquetFile, rules: Rules) -> Iterator[pa.RecordBatch]:
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
        keep = pc.invert(_drop_mask(batch, rules))
        yield batch.filter(keep)


def _rewrite(path: Path, pf: pq.ParquetFile, rules: Rules, expect: int, points: bool) -> int:
    """Replace ``path`` by a file of its rows that stay; returns bytes saved."""
    size = path.stat().st_size
    tmp = temp_name(path, ".retention")
    with locked_temp(tmp) as f:
        if points:
            kept = pa.Table.from_batches(list(_kept_batches(pf, rules)), schema=pf.schema_arrow)
            pq.write_table(kept, f, **parquet_options(kept))
        else:
            options = _span_writer_options(pf)
            with pq.ParquetWriter(f, pf.schema_arrow, **options) as writer:
                for batch in _kept_batches(pf, rules):
                    if batch.num_rows:
                        writer.write_batch(batch)
        sync(f)
        with pq.ParquetFile(tmp) as check:
            written = check.metadata.num_rows
        if written != expect:
            raise RetentionError(f"{path}: rewrite holds {written} rows, expected {expect}")
        os.replace(tmp, path)
    fsync_dir(path.parent)
    return max(0, size - path.stat().st_size)


def _sweep(files: list[Path], rules: Rules, points: bool, dry_run: bool) -> dict[int | None, Tally]:
    out: dict[int | None, Tally] = {k: Tally() for k in rules}
    for path in files:
        try:
            size = path.stat().st_size
            pf = pq.ParquetFile(path)
        except FileNotFoundError:
            continue  # compacted or removed meanwhile
        except (OSError, pa.ArrowException) as exc:
            first = next(iter(out.values()))
            first.notes.append(f"skipped unreadable {path.name}: {exc}")
            continue
        with pf:
            v = _verdict(pf, rules, points)
            if v.action == "keep":
                continue
            total = sum(v.dropped.values())
            # The file's effect is counted under the resolution that drops most of it.
            main = max(v.dropped, key=lambda k: v.dropped[k])
            for k, rows in v.dropped.items():
                out[k].rows += rows
            if v.action == "remove":
                out[main].files_removed += 1
                out[main].bytes += size
                if not dry_run:
                    path.unlink(missing_ok=True)
            else:
                out[main].files_rewritten += 1
                if dry_run:
                    out[main].bytes += size * total // max(1, v.rows)
                else:
                    out[main].bytes += _rewrite(path, pf, rules, v.rows - total, points)
    if not dry_run:
        for d in sorted({p.parent for p in files}):
            _remove_if_empty(d, rules)
    return out


def _remove_if_empty(directory: Path, rules: Rules) -> None:
    """Remove a day directory left empty, if its day is wholly past every cutoff."""
    if not _DAY.match(directory.name):
        return
    latest = max(rules.values())
    if directory.name >= latest.strftime("%Y-%m-%d"):
        return
    try:
        directory.rmdir()  # only if empty
    except OSError:
        pass


@contextmanager
def exclusive(storage: StorageConfig) -> Iterator[None]:
    """Hold compaction's lock on the store (one retention or compaction at a time).

    Raises:
        CompactionError: another compaction or retention holds it.
    """
    root = Path(storage.output_dir)
    if not root.is_dir():
        yield
        return
    with _exclusive(root):
        yield


def apply(storage: StorageConfig, cutoffs: list[Cutoff], dry_run: bool) -> dict[str, Tally]:
    """Remove or rewrite the files of the store past ``cutoffs`` (the caller
    holds :func:`exclusive` unless ``dry_run``).

    A dry run reads the same statistics and columns and changes nothing
    (not even the leftovers of a crashed writer). Returns a tally per
    cutoff (``Cutoff.key``).

    Raises:
        RetentionError: a rewrite came out with the wrong number of rows
            (the original is left in place).
    """
    root = Path(storage.output_dir)
    tallies: dict[str, Tally] = {c.key: Tally() for c in cutoffs}
    if not root.is_dir() or not cutoffs:
        return tallies
    span_rules: Rules = {}
    for c in cutoffs:
        if c.table == SPANS:
            span_rules[None] = c.before
    point_rules: Rules = {c.resolution: c.before for c in cutoffs if c.table == POINTS}
    if not dry_run:
        for d in sorted({Path(d) for d, _, names in os.walk(root) if JOURNAL_NAME in names}):
            _recover(d)
        remove_stale_temp_files(root)
        mroot = metrics_root(storage)
        if mroot.is_dir():
            remove_stale_temp_files(mroot)
    _collect(storage, root, span_rules, point_rules, cutoffs, tallies, dry_run)
    return tallies


def _collect(
    storage: StorageConfig,
    root: Path,
    span_rules: Rules,
    point_rules: Rules,
    cutoffs: list[Cutoff],
    tallies: dict[str, Tally],
    dry_run: bool,
) -> None:
    if span_rules:
        if storage.backend == "jsonl":
            key = next(c.key for c in cutoffs if c.table == SPANS)
            tallies[key].notes.append("spans in a JSONL file are not subject to retention")
        else:
            done = _sweep(data_files(root), span_rules, False, dry_run)
            for c in cutoffs:
                if c.table == SPANS:
                    tallies[c.key].add(done[None])
    if point_rules:
        done = _sweep(point_files(metrics_root(storage)), point_rules, True, dry_run)
        for c in cutoffs:
            if c.table == POINTS:
                tallies[c.key].add(done[c.resolution])
