"""Retention killed mid-apply (SIGKILL at a random point, several seeds):
every row is either kept or, if past the policy, gone; never duplicated, and
no visible file is half written; the next run then ends where an
uninterrupted one does, row for row (rollups included). On Parquet, SQLite,
and the PostgreSQL and MySQL/MariaDB test servers (a schema or database of
each run's own: the client is killed, never the server)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from _retention_data import (
    T0,
    point_keys,
    point_rows,
    span_ids,
    span_times,
    write_raw_points,
    write_spans,
)
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.metrics._store import point_files
from llamonitor.schema.config import StorageConfig
from llamonitor.storage.parquet import data_files

NOW = T0 + timedelta(days=10)
POLICY = RetentionConfig(spans_days=4.5, batch_rows=40)
SEEDS = (("all", 1), ("all", 2), ("delete", 3), ("delete", 4), ("delete", 5))
"""(phase, seed): killed anywhere in the run, or among the deletes (after the rollups)."""
SERVER_SEEDS = (("all", 1), ("delete", 3), ("delete", 4))
"""On a server each run fills a schema of its own first: fewer runs (CI's time),
every phase still killed."""

CHILD = """
import sys
from pydantic import SecretStr
from llamonitor.metrics import RetentionConfig, apply_retention
from llamonitor.schema.config import StorageConfig
kind, where, table, now, phase, schema = sys.argv[1:7]
if kind == "parquet":
    storage = StorageConfig(output_dir=where, partition_by="session_id")
else:
    storage = StorageConfig(backend=kind, connection_string=SecretStr(where), table_name=table,
                            schema_name=schema or None)
policy = RetentionConfig(spans_days=4.5, batch_rows=40)
if phase == "delete":  # say when the deletes start: the kill then falls among them
    from llamonitor.metrics import _retention_parquet, _retention_sql
    for module in (_retention_parquet, _retention_sql):
        def announced(*args, _apply=module.apply):
            print("deleting", flush=True)
            return _apply(*args)
        module.apply = announced
print("ready", flush=True)
apply_retention(storage, policy, now=float(now))
print("done", flush=True)
"""


SERVERS = ("postgres", "mysql")


def _schema(where: Path) -> str:
    """The schema (database) of a run on a server: one per directory of the test."""
    return "rc_" + hashlib.sha256(str(where).encode()).hexdigest()[:12]


def config(kind: str, where: Path) -> StorageConfig:
    if kind == "parquet":
        return StorageConfig(output_dir=where, partition_by="session_id")
    if kind == "sqlite":
        dsn = SecretStr(f"sqlite:///{where}/store.db")
        return StorageConfig(backend="sqlite", connection_string=dsn, table_name="spans")
    from _servers import server_dsn

    return StorageConfig(
        backend=kind,
        connection_string=SecretStr(server_dsn(kind)),
        table_name="spans",
        schema_name=_schema(where),
    )


def child_args(kind: str, where: Path, phase: str) -> list[str]:
    storage = config(kind, where)
    target = str(where) if kind == "parquet" else storage.connection_string.get_secret_value()  # type: ignore[union-attr]
    return [kind, target, "spans", str(NOW.timestamp()), phase, storage.schema_name or ""]


def state(storage: StorageConfig) -> tuple[list[str], list[dict[str, Any]]]:
    return sorted(span_ids(storage)), point_rows(storage)


@pytest.fixture
def made() -> Iterator[list[StorageConfig]]:
    """The server schemas (databases) a test made, dropped afterwards."""
    stores: list[StorageConfig] = []
    yield stores
    from _servers import _execute

    for st in stores:
        assert st.connection_string is not None
        drop = (
            "SCHEMA IF EXISTS {} CASCADE" if st.backend == "postgres" else "DATABASE IF EXISTS {}"
        )
        _execute(
            str(st.backend),
            st.connection_string.get_secret_value(),
            "DROP " + drop.format(st.schema_name),
        )


@pytest.mark.timeout(900)  # seven runs; on a server each fills its own schema first
@pytest.mark.parametrize("kind", ["parquet", "sqlite", *SERVERS])
def test_sigkill_mid_apply_loses_nothing_inside_the_policy(
    tmp_path: Path, kind: str, made: list[StorageConfig]
) -> None:
    original = tmp_path / "original"
    original.mkdir()
    times = span_times(days=10, per_day=96)
    ids = {f"ev{i:07d}" for i in range(len(times))}

    def fill(where: Path) -> None:
        """The spans and raw points of the test, written by the stores' writers."""
        storage = config(kind, where)
        if kind in SERVERS:
            made.append(storage)
            if kind == "mysql":
                from _servers import _execute

                dsn = storage.connection_string.get_secret_value()  # type: ignore[union-attr]
                _execute(kind, dsn, f"CREATE DATABASE {storage.schema_name}")
        write_spans(storage, times, sessions=12)
        write_raw_points(storage, T0 + timedelta(days=7), 3 * 1440, 60, chunks=30)

    fill(original)
    cutoff = NOW - timedelta(days=4.5)
    must_keep = {f"ev{i:07d}" for i, t in enumerate(times) if t >= cutoff}
    raw_cut = NOW - timedelta(days=1)
    raw_keep = {k for k in point_keys(config(kind, original)) if k[2] == 0 and k[3] >= raw_cut}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start(phase: str, work: Path) -> subprocess.Popen[str]:
        """A child applying the policy to ``work``, returned once it says the phase began."""
        if kind in SERVERS:
            work.mkdir()
            fill(work)
        else:
            shutil.copytree(original, work)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *child_args(kind, work, phase)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        if phase == "delete":
            assert child.stdout.readline().strip() == "deleting"
        return child

    duration = {}  # how long each phase lasts in a child run to its end, as the kills see it
    for phase in ("all", "delete"):
        child = start(phase, tmp_path / f"timed-{phase}")
        started = time.perf_counter()
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
        duration[phase] = time.perf_counter() - started
        assert child.wait(30) == 0
    clean = tmp_path / "timed-all"
    expected = state(config(kind, clean))
    assert set(expected[0]) == must_keep
    assert state(config(kind, tmp_path / "timed-delete")) == expected

    killed = {"all": 0, "delete": 0}
    for phase, seed in SERVER_SEEDS if kind in SERVERS else SEEDS:
        work = tmp_path / f"run{seed}"
        storage = config(kind, work)
        child = start(phase, work)
        time.sleep(random.Random(seed).uniform(0.0, 1.0) * duration[phase])
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        killed[phase] += child.returncode == -signal.SIGKILL

        if kind == "parquet":  # never half a file: every visible file reads whole
            for f in [*data_files(work), *point_files(work / "metrics")]:
                pq.read_table(f)
        left = span_ids(storage)
        assert len(left) == len(set(left)), f"seed {seed}: a span twice"
        assert must_keep <= set(left) <= ids, f"seed {seed}: a span inside the policy lost"
        keys = point_keys(storage)
        assert len(keys) == len(set(keys)), f"seed {seed}: a point twice"
        assert raw_keep <= set(keys), f"seed {seed}: a raw point inside the policy lost"

        apply_retention(storage, POLICY, now=NOW)
        assert state(storage) == expected, f"seed {seed}: the next run ends elsewhere"
    assert killed["all"] >= 1 and killed["delete"] >= 1, f"runs killed: {killed}"
