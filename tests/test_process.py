"""Process lifecycle: exit without shutdown, fork (with and without Python's hooks),
several processes sharing one store."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import duckdb
import pytest

from llamonitor import MonitorConfig, initialize_monitoring, monitor_llm, shutdown_monitoring


def _rows(store: Path, where: str = "true") -> list[tuple[object, ...]]:
    files = list(store.rglob("*.parquet"))
    if not files:
        return []
    return duckdb.sql(
        f"select operation_name, process_id, event_id from read_parquet('{store}/**/*.parquet') "
        f"where {where}"
    ).fetchall()


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_seed_quick_start_leaves_its_events_on_disk_without_shutdown(tmp_path: Path) -> None:
    """The README quick start, run as a program that never calls shutdown, persists its span."""
    proc = _run(
        """
        import asyncio
        from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig

        @monitor_llm(
            operation_name="generate_text",
            measure_text=True,
            custom_attributes={"model": "gpt-4"},
        )
        async def my_llm_function(prompt: str):
            return {"text": "Generated response..."}

        async def main():
            await initialize_monitoring(MonitorConfig.for_local_dev())
            result = await my_llm_function("Hello!")

        if __name__ == "__main__":
            asyncio.run(main())
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = duckdb.sql(
        f"select operation_name, text_char_count, custom_attributes "
        f"from read_parquet('{tmp_path}/monitoring_data/**/*.parquet')"
    ).fetchall()
    assert rows == [("generate_text", 21, '{"model": "gpt-4"}')]


def test_a_busy_program_exiting_without_shutdown_loses_nothing(tmp_path: Path) -> None:
    """20,000 spans queued at the moment of exit are all written by the exit flush."""
    proc = _run(
        f"""
        from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig, StorageConfig

        @monitor_llm(operation_name="step", measure_text=True)
        def step(i):
            return "token " * (i % 50)

        initialize_monitoring(MonitorConfig(
            storage=StorageConfig(output_dir={str(tmp_path)!r}, flush_interval_seconds=60,
                                  batch_size=1_000_000),
            max_queue_size=100_000,
        ))
        for i in range(20_000):
            step(i)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_rows(tmp_path)) == 20_000


def _libc_fork() -> int:
    """fork(2) straight from libc: Python's at-fork hooks do not run."""
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.fork())


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("fork", [os.fork, _libc_fork], ids=["os.fork", "raw-libc-fork"])
def test_forked_child_writes_its_own_events_and_the_parents_are_written_once(
    tmp_path: Path, fork: object
) -> None:
    """Events queued before fork are written once (by the parent); the child's by the child."""

    @monitor_llm(operation_name="parent_op")
    def parent_op() -> int:
        return 1

    @monitor_llm(operation_name="child_op")
    def child_op() -> int:
        return 2

    config = MonitorConfig.for_local_dev(tmp_path)
    config.storage.flush_interval_seconds = 60  # keep the parent's events queued at fork
    config.storage.batch_size = 1_000_000
    initialize_monitoring(config)
    for _ in range(100):
        parent_op()
    pid = fork()  # type: ignore[operator]
    if pid == 0:  # the child
        code = 1
        try:
            for _ in range(50):
                child_op()
            code = 0 if shutdown_monitoring(20) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(10):
        parent_op()
    assert shutdown_monitoring(20)
    rows = _rows(tmp_path)
    by_op: dict[object, list[tuple[object, ...]]] = {}
    for row in rows:
        by_op.setdefault(row[0], []).append(row)
    assert len(by_op["parent_op"]) == 110
    assert {r[1] for r in by_op["parent_op"]} == {os.getpid()}
    assert len(by_op["child_op"]) == 50
    assert {r[1] for r in by_op["child_op"]} == {pid}
    assert len({r[2] for r in rows}) == 160


def test_several_processes_share_one_store(tmp_path: Path) -> None:
    """Three processes writing one directory at once: every row, no clobbered file."""
    code = f"""
        from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig, StorageConfig
        @monitor_llm(operation_name="p")
        def p():
            return 1
        initialize_monitoring(MonitorConfig(storage=StorageConfig(
            output_dir={str(tmp_path)!r}, batch_size=7, flush_interval_seconds=0.01)))
        for _ in range(3000):
            p()
        """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path)
        for _ in range(3)
    ]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    rows = _rows(tmp_path)
    assert len(rows) == 9000
    assert len({r[1] for r in rows}) == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_children_forked_while_another_thread_records_exit_promptly(tmp_path: Path) -> None:
    """A lock held by a parent thread at fork() never hangs the child's exit flush."""
    proc = _run(
        f"""
        import os, sys, threading, time
        from llamonitor import monitor_llm, initialize_monitoring, MonitorConfig

        @monitor_llm(operation_name="busy")
        def busy():
            return 1

        initialize_monitoring(MonitorConfig.for_local_dev({str(tmp_path)!r}))
        stop = False
        def hammer():
            while not stop:
                busy()
        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        hung = 0
        for _ in range(40):
            pid = os.fork()
            if pid == 0:
                sys.exit(0)  # runs the atexit flush
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.005)
            else:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        stop = True
        print("hung", hung)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hung 0" in proc.stdout


MULTIPROCESSING_SCRIPT = """
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from llamonitor import MonitorConfig, initialize_monitoring, monitor_llm


@monitor_llm("work", session_id_from="kind", measure_text=True)
def step(kind: str, i: int) -> str:
    return f"{kind} {i}"


def work(kind: str, n: int) -> int:
    for i in range(n):
        step(kind, i)
    return n


def work_args(args: tuple[str, int]) -> int:
    return work(*args)


if __name__ == "__main__":
    method, store = sys.argv[1], sys.argv[2]
    ctx = mp.get_context(method)
    initialize_monitoring(MonitorConfig.for_local_dev(store))
    work("parent", 250)
    p = ctx.Process(target=work, args=("process", 250))
    p.start()
    p.join()
    assert p.exitcode == 0, p.exitcode
    with ctx.Pool(2) as pool:  # terminate() on exit: SIGTERM to the workers
        assert pool.map(work_args, [("pool", 125), ("pool", 125)]) == [125, 125]
    pool = ctx.Pool(2)
    assert pool.map(work_args, [("pool_closed", 100)] * 3) == [100] * 3
    pool.close()
    pool.join()
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(work_args, [("executor", 50)] * 4)) == [50] * 4
    work("parent", 250)
    print(os.getpid())
    # no shutdown: the parent's atexit flush writes its own
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_spans_of_multiprocessing_children_are_written_once(tmp_path: Path, method: str) -> None:
    """Process, Pool (terminated and closed) and ProcessPoolExecutor workers: every
    span written exactly once, the parent's too, whatever the start method."""
    script = tmp_path / "mp_script.py"
    script.write_text(MULTIPROCESSING_SCRIPT)
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, str(script), method, str(store)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    counts = dict(
        duckdb.sql(
            f"select session_id, count(*) from read_parquet('{store}/**/*.parquet') group by 1"
        ).fetchall()
    )
    assert counts == {
        "parent": 500,
        "process": 250,
        "pool": 250,
        "pool_closed": 300,
        "executor": 200,
    }
    distinct = duckdb.sql(
        f"select count(distinct event_id), count(*) from read_parquet('{store}/**/*.parquet')"
    ).fetchall()
    assert distinct == [(1500, 1500)]
    # The configuration file children started from is gone with the parent.
    parent = int(proc.stdout.split()[-1])
    assert not list(Path(tempfile.gettempdir()).glob(f"llamonitor-mp-{parent}-*"))


def test_a_program_that_is_not_a_multiprocessing_child_does_not_inherit(tmp_path: Path) -> None:
    """A plain subprocess of a monitored program sees the configuration file's path in
    its environment, but records nothing unless it starts monitoring itself."""
    store = tmp_path / "store"
    parent = _run(
        f"""
        import os, subprocess, sys
        from llamonitor import MonitorConfig, initialize_monitoring
        initialize_monitoring(MonitorConfig.for_local_dev({str(store)!r}))
        child = '''
        from llamonitor import monitor_llm, flush
        @monitor_llm("plain_child")
        def f():
            return "x"
        f()
        flush(5)
        '''
        subprocess.run([sys.executable, "-c", child], check=True)
        print(os.environ["LLAMONITOR_PARENT_CONFIG"])
        """,
        tmp_path,
    )
    assert parent.returncode == 0, parent.stderr
    assert parent.stdout.strip().endswith("config.pickle")
    assert _rows(store) == []
