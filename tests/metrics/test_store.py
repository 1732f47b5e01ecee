"""Metric points in every store: written, read back with filters, and the
Parquet files' encodings; the span reader never sees them."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llamonitor.metrics import METRIC_SCHEMA, read_points, write_points
from llamonitor.metrics._store import metrics_root, point_files
from llamonitor.schema.config import ConfigurationError, StorageConfig

T = datetime(2026, 3, 1, 23, 59, 50, tzinfo=timezone.utc)


def _points(name: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            dict(
                timestamp=T,
                name=name,
                kind="counter",
                labels='{"model":"a"}',
                resolution_seconds=0,
                value=1.0,
                source="test",
            ),
            dict(
                timestamp=T + timedelta(seconds=20),
                name=name,
                kind="counter",
                labels='{"model":"a"}',
                resolution_seconds=0,
                value=3.0,
                source="test",
            ),
            dict(
                timestamp=T + timedelta(seconds=20),
                name=name,
                kind="counter",
                labels='{"model":"b"}',
                resolution_seconds=0,
                value=math.inf,
                source="test",
            ),
            dict(
                timestamp=T + timedelta(seconds=30),
                name=name,
                kind="histogram",
                labels="{}",
                resolution_seconds=60,
                count=2,
                sum=1.5,
                min=0.5,
                max=1.0,
                sketch=b"\x01\x02",
                source="test",
            ),
        ],
        schema=METRIC_SCHEMA,
    )


def test_points_round_trip_with_filters(any_store: StorageConfig, name: str) -> None:
    """What write_points stores, read_points returns, filtered by name, labels,
    time and resolution (non-finite values: NULL where the database has none)."""
    assert write_points(any_store, _points(name)) == 4
    every = read_points(any_store, name=name)
    assert every.schema.equals(METRIC_SCHEMA)
    assert every.num_rows == 4
    a = read_points(any_store, name=name, labels={"model": "a"})
    assert a.column("value").to_pylist() == [1.0, 3.0]
    later = read_points(any_store, name=name, start=T + timedelta(seconds=10), resolution=0)
    assert sorted(later.column("labels").to_pylist()) == ['{"model":"a"}', '{"model":"b"}']
    (hist,) = read_points(any_store, name=name, resolution=60).to_pylist()
    assert (hist["count"], hist["sum"], hist["min"], hist["max"], hist["sketch"]) == (
        2,
        1.5,
        0.5,
        1.0,
        b"\x01\x02",
    )
    assert hist["timestamp"] == T + timedelta(seconds=30)
    inf = read_points(any_store, name=name, labels={"model": "b"}).column("value")[0].as_py()
    kept = ("parquet", "postgres", "clickhouse")  # the others have no infinite doubles
    assert inf == math.inf if any_store.backend in kept else inf is None


def test_an_empty_store_reads_as_no_points(any_store: StorageConfig, name: str) -> None:
    """Nothing written (not even a table or directory): an empty table, no error."""
    assert read_points(any_store, name=name).num_rows == 0


def test_bad_points_are_refused_whole(parquet: StorageConfig) -> None:
    """A table without a required column, or with an unknown kind, writes nothing."""
    bad = _points("x").drop_columns(["kind"])
    with pytest.raises(ValueError, match="kind"):
        write_points(parquet, bad)
    wrong = _points("x").set_column(2, "kind", pa.array(["meter"] * 4))
    with pytest.raises(ValueError, match="meter"):
        write_points(parquet, wrong)
    assert read_points(parquet).num_rows == 0
    with pytest.raises(ValueError, match="label name"):
        read_points(parquet, labels={"bad key": "x"})


def test_a_store_without_points_is_a_configuration_error() -> None:
    """The memory backend holds no points: say so, naming storage.backend."""
    with pytest.raises(ConfigurationError, match=r"storage\.backend"):
        write_points(StorageConfig(backend="memory"), _points("x"))


def test_parquet_files_use_the_time_series_encodings(parquet: StorageConfig) -> None:
    """Files are per UTC day, complete (no temporary left), with DELTA_BINARY_PACKED
    timestamps, BYTE_STREAM_SPLIT floats and zstd."""
    write_points(parquet, _points("enc_total"))
    files = point_files(metrics_root(parquet))
    assert sorted(f.parent.name for f in files) == ["2026-03-01", "2026-03-02"]
    assert not [p for p in Path(parquet.output_dir).rglob(".*.tmp")]
    meta = pq.ParquetFile(files[0]).metadata
    columns = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
        for i in range(meta.num_columns)
    }
    assert "DELTA_BINARY_PACKED" in columns["timestamp"].encodings
    assert "BYTE_STREAM_SPLIT" in columns["value"].encodings
    assert columns["value"].compression == "ZSTD"
    assert pq.read_schema(files[0]).metadata[b"metrics.schema_version"] == b"1"


def test_the_span_reader_skips_the_metrics_directory(tmp_path: Path) -> None:
    """Points under output_dir/metrics are not spans: the span store's file list leaves them out."""
    from llamonitor.storage._layout import data_files

    storage = StorageConfig(output_dir=tmp_path)
    write_points(storage, _points("skip_total"))
    assert point_files(metrics_root(storage))
    assert data_files(tmp_path) == []


def test_the_float_encoding_is_the_one_that_compresses_smaller() -> None:
    """Noisy floats get BYTE_STREAM_SPLIT, a slowly walking gauge PLAIN (zstd finds
    its recurring values), and the file reads back the same either way."""
    import numpy as np

    from llamonitor.metrics._store import float_encoding

    rng = np.random.default_rng(1)
    noisy = pa.array(rng.normal(100, 15, 50_000))
    walk = pa.array(np.round(50 + np.cumsum(rng.normal(0, 0.01, 50_000)), 2))
    assert float_encoding(noisy) == "BYTE_STREAM_SPLIT"
    assert float_encoding(walk) == "PLAIN"
    assert float_encoding(pa.array([1.0, None])) == "BYTE_STREAM_SPLIT"  # too few to tell
