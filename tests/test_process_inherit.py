"""multiprocessing children that start monitoring from their parent's configuration:
the worker's module imports only the decorator, children of children, programs that
are not a monitoring process's children, stale configuration files, terminated pools."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import duckdb
import pytest

WORKER = """
import multiprocessing as mp

from llamonitor import monitor_llm  # nothing else of llamonitor


@monitor_llm("leaf", session_id_from="kind")
def leaf(kind: str, i: int) -> int:
    return i


def work_later(kind: str, n: int) -> int:
    import time

    time.sleep(1.0)  # its parent's code is over by now
    return work(kind, n)


def work_marked(kind: str, n: int) -> int:
    import os

    leaf(kind, -1)
    open(f"started-{os.getpid()}", "w").close()  # recording (and its SIGTERM flush armed)
    return work(kind, n)


def work(kind: str, n: int, nested: str | None = None) -> int:
    for i in range(n):
        leaf(kind, i)
    if nested:
        p = mp.get_context(nested).Process(target=work, args=(kind + "_grandchild", n))
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
    return n
"""

MAIN = """
import multiprocessing as mp
import os
import sys

import mp_worker

if __name__ == "__main__":
    method, nested, store = sys.argv[1:4]
    from llamonitor import MonitorConfig, initialize_monitoring

    initialize_monitoring(MonitorConfig.for_local_dev(store))
    p = mp.get_context(method).Process(target=mp_worker.work, args=("child", 40, nested))
    p.start()
    p.join()
    assert p.exitcode == 0, p.exitcode
    print(os.getpid())
"""


def _script(tmp_path: Path, main: str) -> Path:
    (tmp_path / "mp_worker.py").write_text(WORKER)
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(main))
    return script


def _run_script(script: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent, capture_output=True, text=True, timeout=timeout,
    )


def _counts(store: Path) -> dict[object, object]:
    if not list(store.rglob("*.parquet")):
        return {}
    return dict(
        duckdb.sql(
            f"select session_id, count(*) from read_parquet('{store}/**/*.parquet') group by 1"
        ).fetchall()
    )


def _pids(store: Path) -> set[int]:
    rows = duckdb.sql(
        f"select distinct process_id from read_parquet('{store}/**/*.parquet')"
    ).fetchall()
    return {int(r[0]) for r in rows}


def _config_dirs(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"llamonitor-mp-{pid}-*"))


@pytest.mark.parametrize(
    ("method", "nested"),
    [("spawn", "spawn"), ("forkserver", "spawn"), ("fork", "spawn"), ("spawn", "fork")],
)
def test_children_and_their_children_monitor_when_the_worker_imports_only_the_decorator(
    tmp_path: Path, method: str, nested: str
) -> None:
    """A child whose module imports nothing but ``monitor_llm`` starts monitoring
    from its parent's configuration, and shares it with its own children."""
    script = _script(tmp_path, MAIN)
    store = tmp_path / "store"
    proc = _run_script(script, method, nested, str(store), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _counts(store) == {"child": 40, "child_grandchild": 40}
    parent = int(proc.stdout.split()[-1])
    for pid in {parent, *_pids(store)}:
        assert not _config_dirs(pid), pid  # every process removed its own file


UNRELATED = """
import multiprocessing as mp
import os
import subprocess
import sys

if __name__ == "__main__":
    store = sys.argv[1]
    from llamonitor import MonitorConfig, initialize_monitoring

    initialize_monitoring(MonitorConfig.for_local_dev(store))
    # Another program, started by the monitored one, with multiprocessing children
    # of its own that import llamonitor.
    other = '''
import multiprocessing as mp, os, sys
sys.path.insert(0, os.getcwd())
import mp_worker
if __name__ == "__main__":
    for method in ("spawn", "fork"):
        p = mp.get_context(method).Process(target=mp_worker.work, args=("other_" + method, 10))
        p.start()
        p.join()
        assert p.exitcode == 0
    mp_worker.work("other_main", 10)
    print("other", os.environ.get("LLAMONITOR_PARENT_CONFIG"))
'''
    with open("other.py", "w") as f:
        f.write(other)
    out = subprocess.run([sys.executable, "other.py"], check=True, capture_output=True, text=True)
    print(out.stdout)
"""


def test_another_program_and_its_multiprocessing_children_do_not_inherit(
    tmp_path: Path,
) -> None:
    """A plain subprocess of a monitored program sees the configuration's path but
    records nothing, and nor do its own ``multiprocessing`` children; it removes the
    variable from its environment at its first span."""
    script = _script(tmp_path, UNRELATED)
    store = tmp_path / "store"
    proc = _run_script(script, str(store), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "other None" in proc.stdout
    assert _counts(store) == {}


PRIVATE = """
import multiprocessing as mp
import os
import sys

import mp_worker

if __name__ == "__main__":
    store = sys.argv[1]
    from llamonitor import MonitorConfig, initialize_monitoring, get_writer

    initialize_monitoring(MonitorConfig.for_local_dev(store))
    os.chmod(os.environ["LLAMONITOR_PARENT_CONFIG"], 0o644)  # readable by others
    p = mp.get_context("spawn").Process(target=mp_worker.work, args=("child", 10))
    p.start()
    p.join()
    assert p.exitcode == 0, p.exitcode
    mp_worker.work("parent", 5)
"""


def test_a_configuration_file_others_can_read_is_not_loaded(tmp_path: Path) -> None:
    script = _script(tmp_path, PRIVATE)
    store = tmp_path / "store"
    proc = _run_script(script, str(store), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _counts(store) == {"parent": 5}
    assert "not a private file" in proc.stderr


def test_configuration_directories_of_dead_processes_are_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A monitoring process killed before its exit hooks leaves its directory; the
    next one to start removes it (nobody holds its lock), and leaves alone those
    whose owner lives, whatever pid its name shows (another pid namespace)."""
    import fcntl

    base = Path(tempfile.gettempdir())
    stale = base / "llamonitor-mp-999999991-test"
    live = base / "llamonitor-mp-999999992-test"  # a pid this namespace does not have
    for d in (stale, live):
        d.mkdir(mode=0o700, exist_ok=True)
        (d / "config.pickle").write_bytes(b"x")
        (d / "alive.lock").write_bytes(b"")
    fd = os.open(live / "alive.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # its owner, alive
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                from llamonitor import MonitorConfig, initialize_monitoring
                initialize_monitoring(MonitorConfig.for_local_dev({str(tmp_path)!r}))
                """)],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert not stale.exists()
        assert live.exists()
    finally:
        os.close(fd)
        for d in (stale, live):
            if d.exists():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


NOT_JOINED = """
import multiprocessing as mp
import os
import sys

import mp_worker

if __name__ == "__main__":
    import concurrent.futures.process  # imports multiprocessing.util first, as libraries do
    store = sys.argv[1]
    from llamonitor import MonitorConfig, initialize_monitoring

    initialize_monitoring(MonitorConfig.for_local_dev(store))
    p = mp.get_context("spawn").Process(target=mp_worker.work_later, args=("late", 5))
    p.start()  # not joined: multiprocessing joins it at exit
"""


def test_a_child_that_records_after_its_parent_returned_still_finds_the_configuration(
    tmp_path: Path,
) -> None:
    """The file is removed only after the process has joined its children, so a
    child that records its first span late (its parent's code already over) is written."""
    script = _script(tmp_path, NOT_JOINED)
    store = tmp_path / "store"
    proc = _run_script(script, str(store), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _counts(store) == {"late": 5}


TERMINATED = """
import multiprocessing as mp
import os
import sys
import time

import mp_worker

if __name__ == "__main__":
    method, store = sys.argv[1:3]
    from llamonitor import MonitorConfig, initialize_monitoring

    initialize_monitoring(MonitorConfig.for_local_dev(store))
    import glob

    for round in range(3):
        pool = mp.get_context(method).Pool(2)
        pool.starmap_async(mp_worker.work_marked, [("pool", 10**7)] * 2)
        deadline = time.monotonic() + 60
        while len(glob.glob("started-*")) < 2 * (round + 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the workers record as fast as they can
        pool.terminate()  # SIGTERM in the middle of it
        pool.join()
    print("done")
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_terminated_while_its_workers_record_ends_and_keeps_what_they_recorded(
    tmp_path: Path, method: str
) -> None:
    """SIGTERM can land while a worker holds the queue's lock: the worker still
    flushes and dies (no hang of the pool's ``join``), and what it wrote is unique."""
    script = _script(tmp_path, TERMINATED)
    store = tmp_path / "store"
    proc = _run_script(script, method, str(store), timeout=200)
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    rows = duckdb.sql(
        f"select count(*), count(distinct event_id), count(distinct process_id) "
        f"from read_parquet('{store}/**/*.parquet')"
    ).fetchall()
    total, distinct, processes = rows[0]
    assert total == distinct and total > 0
    assert processes == 6  # every terminated worker flushed
