"""The GenAI metrics of spans, aggregated a whole Arrow batch at a time.

:class:`SpanMetrics` keeps, for each metric family (``FAMILIES``), one row of
counters per label set: histogram bucket counts and sums, or counter values.
A batch is folded in with a few numpy passes (labels dictionary-encoded by
Arrow, label sets grouped with ``np.unique``, buckets found with
``np.searchsorted`` and counted with ``np.bincount``): the Python work per
batch is per distinct label value and per distinct label set, never per span.

Cardinality is bounded twice: a label holds at most ``max_label_values``
values (later ones fold into ``other``, counted by label in ``folded``), and
a family at most ``max_series`` label sets (later ones fold into the set whose
labels are all ``other``; the observations folded are counted by family in
``series_folded``). No id
(trace, span, session, response) is ever a label.

The Prometheus exposition (``_prometheus``) and the OTLP form
(``_otlp_metrics``) read a :class:`Snapshot`, copied under the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llamonitor.export._metric_names import (
    AGENT,
    COST,
    DURATION,
    DURATION_BUCKETS,
    ERROR,
    ERROR_OTHER,
    ERRORS,
    FAMILIES,
    FIRST_CHUNK,
    LABELS,
    MODEL,
    OP,
    OPERATION,
    OTHER,
    PROVIDER,
    TOKEN_BUCKETS,
    TOKEN_TYPE,
    TOKENS,
    Family,
    Label,
    operation_names,
)

__all__ = [
    "DEFAULT_MAX_LABEL_VALUES",
    "DEFAULT_MAX_SERIES",
    "DURATION_BUCKETS",
    "FAMILIES",
    "LABELS",
    "OTHER",
    "TOKEN_BUCKETS",
    "Family",
    "FamilyData",
    "Label",
    "Snapshot",
    "SpanMetrics",
    "operation_names",
]

DEFAULT_MAX_LABEL_VALUES = 100
"""Values a label holds before new ones fold into ``other``."""

DEFAULT_MAX_SERIES = 300
"""Label sets a metric holds before new ones fold into the all-``other`` set
(with both caps reached, a scrape stays well under 50 ms: see
benchmarks/bench_prometheus.py)."""

MAX_LABEL_CHARS = 128
"""A longer label value is cut to this many characters."""

_ABSENT, _OTHER = 0, 1  # the ids every label gives "" and "other"
_NO_FOLD = (TOKEN_TYPE,)  # a label set folding past max_series keeps these


class _Values:
    """One label's values and their ids (``""`` is 0, ``other`` 1), capped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ids: dict[str, int] = {"": _ABSENT, OTHER: _OTHER}
        self.names: list[str] = ["", OTHER]
        self.folded = 0

    def intern(self, value: str) -> tuple[int, bool]:
        """The id of ``value``, and whether it was folded into ``other``."""
        found = self.ids.get(value)
        if found is not None:
            return found, False
        if len(self.names) - 2 >= self.cap:
            return _OTHER, True
        self.ids[value] = len(self.names)
        self.names.append(value)
        return self.ids[value], False


class _Rows:
    """A family's label sets (tuples of label value ids) and their counters."""

    def __init__(self, family: Family, max_series: int, radix: int) -> None:
        self.family = family
        self.max_series = max_series
        # Label ids are below ``radix``: a label set is one int64 when it fits,
        # and the rows of the sets seen are found with one searchsorted a batch.
        k = len(family.labels)
        self._weights = (
            np.array([radix ** (k - 1 - j) for j in range(k)], np.int64)
            if radix**k < 2**62
            else None
        )
        self._memo_keys = np.zeros(0, np.int64)  # sorted
        self._memo_rows = np.zeros(0, np.int64)
        self._memo_folds = np.zeros(0, np.bool_)
        self._memo_max = 10 * max_series + 1000  # folded sets are remembered too, this many
        self.index: dict[tuple[int, ...], int] = {}
        self.keys: list[tuple[int, ...]] = []
        self.folded = 0
        self._keep = [i for i, lab in enumerate(family.labels) if lab in _NO_FOLD]
        width = len(family.bounds) + 1 if family.kind == "histogram" else 1
        self.counts = np.zeros((16, width), np.int64)  # buckets (the last is +Inf)
        self.sums = np.zeros(16, np.float64)  # histogram sums, counter values

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, codes: Any) -> tuple[Any, Any]:
        """The row of each span's label set (``codes``: spans x labels ids):
        ``(rowmap, inverse)``, the rows of the distinct sets and each span's
        index into them. Spans whose set folds past ``max_series`` are counted."""
        if self._weights is not None:
            rowmap, folds, inverse = self._rows_by_key(codes)
        else:
            rowmap, folds, inverse = self._rows_by_tuple(codes)
        if folds.any():
            self.folded += int(np.bincount(inverse, minlength=len(rowmap))[folds].sum())
        return rowmap, inverse

    def _rows_by_tuple(self, codes: Any) -> tuple[Any, Any, Any]:
        key = codes[:, 0].astype(np.int64)
        bound = int(codes[:, 0].max(initial=0)) + 1
        for j in range(1, codes.shape[1]):
            radix = int(codes[:, j].max(initial=0)) + 1
            if bound * radix >= 2**62:  # compact what we have so far first
                _, key = np.unique(key, return_inverse=True)
                key = key.astype(np.int64)
                bound = int(key.max(initial=0)) + 1
            key = key * radix + codes[:, j]
            bound *= radix
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        found = [self._row(tuple(codes[i].tolist())) for i in first.tolist()]
        rowmap = np.array([r for r, _ in found], np.int64)
        folds = np.array([f for _, f in found], np.bool_)
        return rowmap, folds, inverse.reshape(-1)

    def _rows_by_key(self, codes: Any) -> tuple[Any, Any, Any]:
        assert self._weights is not None
        keys, first, inverse = np.unique(
            codes @ self._weights, return_index=True, return_inverse=True
        )
        memo = self._memo_keys
        at = np.searchsorted(memo, keys)
        hit = at < len(memo)
        hit[hit] = memo[at[hit]] == keys[hit]
        rowmap = np.empty(len(keys), np.int64)
        folds = np.zeros(len(keys), np.bool_)
        rowmap[hit] = self._memo_rows[at[hit]]
        folds[hit] = self._memo_folds[at[hit]]
        miss = np.flatnonzero(~hit)
        if len(miss):
            found = [self._row(tuple(codes[first[g]].tolist())) for g in miss.tolist()]
            rowmap[miss] = [r for r, _ in found]
            folds[miss] = [f for _, f in found]
            if len(memo) < self._memo_max:
                merged = np.concatenate([memo, keys[miss]])
                order = np.argsort(merged, kind="stable")
                self._memo_keys = merged[order]
                self._memo_rows = np.concatenate([self._memo_rows, rowmap[miss]])[order]
                self._memo_folds = np.concatenate([self._memo_folds, folds[miss]])[order]
        return rowmap, folds, inverse.reshape(-1)

    def _row(self, key: tuple[int, ...]) -> tuple[int, bool]:
        """The row of a label set, and whether it is the fold set standing in for it."""
        row = self.index.get(key)
        if row is not None:
            return row, False
        if len(self.keys) >= self.max_series:
            other = tuple(k if i in self._keep else _OTHER for i, k in enumerate(key))
            row = self.index.get(other)
            if row is not None:
                return row, True
            key = other  # the fold set itself is one past the cap
        row = len(self.keys)
        self.index[key] = row
        self.keys.append(key)
        if row >= len(self.sums):
            grow = len(self.sums)
            self.counts = np.concatenate([self.counts, np.zeros_like(self.counts[:grow])])
            self.sums = np.concatenate([self.sums, np.zeros(grow, np.float64)])
        return row, len(self.keys) > self.max_series  # the fold set, made now

    def observe(self, codes: Any, values: Any) -> None:
        """Add ``values`` (one per span of ``codes``) to the rows' histograms."""
        if not len(values):
            return
        rowmap, inverse = self.rows(codes)
        groups = len(rowmap)
        width = self.counts.shape[1]
        bucket = np.searchsorted(np.asarray(self.family.bounds, np.float64), values, "left")
        counts = np.bincount(inverse * width + bucket, minlength=groups * width)
        np.add.at(self.counts, rowmap, counts.reshape(groups, width))
        np.add.at(self.sums, rowmap, np.bincount(inverse, weights=values, minlength=groups))

    def add(self, codes: Any, values: Any | None = None) -> None:
        """Add ``values`` (1 each when ``None``) to the rows' counters."""
        if not len(codes):
            return
        rowmap, inverse = self.rows(codes)
        np.add.at(self.sums, rowmap, np.bincount(inverse, weights=values, minlength=len(rowmap)))


@dataclass
class FamilyData:
    """A copy of one family's rows: label values (strings) and counters."""

    family: Family
    label_values: list[tuple[str, ...]]
    bucket_counts: Any
    """Histograms: spans x (buckets + 1), not cumulative; the last is +Inf."""
    sums: Any
    """Histogram sums, or counter values."""


@dataclass
class Snapshot:
    """Every family's rows, the fold counters, and the state's time span."""

    families: list[FamilyData]
    folded: dict[str, int]
    """Label values folded into ``other``, by Prometheus label name."""
    series_folded: dict[str, int]
    """Observations whose label set folded into the all-``other`` set, by family."""
    label_values: dict[str, int]
    """Distinct values each label holds now."""
    spans: int
    start_time_ns: int
    time_ns: int


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _floats(table: pa.Table, name: str, scale: float = 1.0) -> Any:
    """The column as float64 (NaN for null or absent)."""
    col = _column(table, name)
    if col is None:
        return np.full(table.num_rows, np.nan)
    values = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    return values * scale if scale != 1.0 else values


class SpanMetrics:
    """The span metrics of everything :meth:`update` was given (thread-safe).

    Args:
        max_label_values: values a label holds before new ones fold into ``other``.
        max_series: label sets a family holds before new ones fold into the
            set whose labels are all ``other``.
        clock: the wall clock, in seconds (a test can pass its own).
    """

    def __init__(
        self,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
        max_series: int = DEFAULT_MAX_SERIES,
        clock: Any = time.time,
    ) -> None:
        self.max_label_values = max_label_values
        self.max_series = max_series
        self._clock = clock
        self._lock = threading.Lock()
        self._labels = {
            lab: _Values(2 if lab is TOKEN_TYPE else max_label_values) for lab in LABELS
        }
        radix = max(max_label_values, 2) + 2  # ids: "", other, then the values
        self._rows = {f.key: _Rows(f, max_series, radix) for f in FAMILIES}
        self.spans = 0
        self.start_time_ns = int(clock() * 1e9)
        for token_type in ("input", "output"):
            self._labels[TOKEN_TYPE].intern(token_type)

    # -- a batch --------------------------------------------------------------

    def update(self, table: pa.Table) -> None:
        """Fold a batch of spans (a table of span rows; missing columns count as null)."""
        n = table.num_rows
        if n == 0:
            return
        with self._lock:
            self._update(table, n)

    def _ids(self, label: Label, column: pa.Array | None, n: int, mapper: Any = None) -> Any:
        """Each span's id of ``label`` from ``column`` (absent: ``""``)."""
        if column is None:
            return np.zeros(n, np.int64)
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        encoded = pc.dictionary_encode(column)
        values = encoded.dictionary.to_pylist()
        index = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        table = self._labels[label]
        ids = np.zeros(len(values) + 1, np.int64)  # the last: null
        folded = np.zeros(len(values) + 1, np.bool_)
        for k, value in enumerate(values):
            text = mapper(value) if mapper is not None else value
            ids[k], folded[k] = table.intern(text[:MAX_LABEL_CHARS])
        if folded.any():
            table.folded += int(np.bincount(index, minlength=len(ids))[folded].sum())
        return ids[index]

    def _update(self, table: pa.Table, n: int) -> None:
        ids = {
            OP: self._ids(OP, _column(table, "operation_type"), n, operation_names),
            PROVIDER: self._ids(PROVIDER, _column(table, "provider"), n),
            MODEL: self._ids(MODEL, _column(table, "model"), n),
            AGENT: self._ids(AGENT, _column(table, "agent_name"), n),
            OPERATION: self._ids(OPERATION, _column(table, "operation_name"), n),
        }
        error = _column(table, "error")
        failed = (
            np.zeros(n, np.bool_)
            if error is None
            else np.asarray(pc.fill_null(error, False).to_numpy(zero_copy_only=False), np.bool_)
        )
        errors = np.zeros(n, np.int64)
        where = np.flatnonzero(failed)
        if len(where):
            kinds = _column(table, "error_type")
            kinds = None if kinds is None else kinds.take(pa.array(where))
            if kinds is None:
                kinds = pa.nulls(len(where), pa.string())
            kinds = pc.fill_null(pc.cast(kinds, pa.string()), ERROR_OTHER)
            errors[where] = self._ids(ERROR, kinds, len(where))
        ids[ERROR] = errors

        def codes(family: Family, mask: Any = None, **fixed: int) -> Any:
            cols = [
                np.full(n, fixed[lab.name], np.int64) if lab.name in fixed else ids[lab]
                for lab in family.labels
            ]
            matrix = np.stack(cols, axis=1)
            return matrix if mask is None else matrix[mask]

        def finite(values: Any) -> Any:
            return np.isfinite(values) & (values >= 0)

        duration = _floats(table, "duration_ms", 0.001)
        ok = finite(duration)
        self._rows[DURATION.key].observe(codes(DURATION, ok), duration[ok])

        first = _floats(table, "time_to_first_token_ms", 0.001)
        ok = finite(first)
        if ok.any():
            self._rows[FIRST_CHUNK.key].observe(codes(FIRST_CHUNK, ok), first[ok])

        parts, values = [], []
        for token_type, column in (("input", "input_tokens"), ("output", "output_tokens")):
            count = _floats(table, column)
            ok = finite(count)
            if ok.any():
                type_id = self._labels[TOKEN_TYPE].ids[token_type]
                parts.append(codes(TOKENS, ok, **{TOKEN_TYPE.name: type_id}))
                values.append(count[ok])
        if parts:
            self._rows[TOKENS.key].observe(np.concatenate(parts), np.concatenate(values))

        cost = _floats(table, "cost_usd")
        ok = finite(cost)
        if ok.any():
            self._rows[COST.key].add(codes(COST, ok), cost[ok])
        if failed.any():
            self._rows[ERRORS.key].add(codes(ERRORS, failed))
        self.spans += n

    # -- reading ----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A copy of the state (the lock is held only for the copy)."""
        with self._lock:
            names = {lab: list(v.names) for lab, v in self._labels.items()}
            copied = [
                (r.family, list(r.keys), r.counts[: len(r)].copy(), r.sums[: len(r)].copy())
                for r in self._rows.values()
            ]
            folded = {lab.name: v.folded for lab, v in self._labels.items()}
            series_folded = {r.family.prom_name: r.folded for r in self._rows.values()}
            counts = {lab.name: len(v.names) - 2 for lab, v in self._labels.items()}
            spans = self.spans
        families = []
        for family, keys, counts_, sums in copied:
            lookups = [names[lab] for lab in family.labels]
            values = [tuple(lookups[j][k] for j, k in enumerate(key)) for key in keys]
            families.append(FamilyData(family, values, counts_, sums))
        return Snapshot(
            families, folded, series_folded, counts, spans,
            self.start_time_ns, int(self._clock() * 1e9),
        )
