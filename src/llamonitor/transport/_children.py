"""Spans recorded in ``multiprocessing`` children are written, whatever the start method.

A child process of ``multiprocessing`` (``Process``, ``Pool``,
``concurrent.futures.ProcessPoolExecutor``) ends with ``os._exit``: the
``atexit`` flush never runs there. Three things make its spans durable:

- **The exit flush**: in every such child that monitors, a
  ``multiprocessing.util.Finalize`` shuts monitoring down (flushing what is
  queued) when the child's work ends, as ``atexit`` does in a main process.
  In a ``fork`` child it is registered by an after-fork hook; in a ``spawn``
  or ``forkserver`` child, when monitoring starts there.
- **SIGTERM**: ``Pool.terminate()`` (what ``with Pool() as p:`` does on exit)
  kills its workers with SIGTERM. Where SIGTERM has its default action, the
  child flushes first (within ``CHILD_TERM_FLUSH_SECONDS``), then dies of the
  same signal, with the same exit status.
- **Inheritance**: a ``spawn``/``forkserver`` child is a new interpreter that
  never ran the parent's ``initialize_monitoring``. The parent writes its
  configuration to a private file (mode 0600 in a 0700 directory; the
  environment only carries its path, so no secret reaches the environment of
  other programs); a ``multiprocessing`` child that records a span and has
  not started monitoring itself starts it from that file at its first span.

Events queued in the parent at fork time stay the parent's (the child starts
with an empty queue), so each span is written once.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from llamonitor import _handoff
from llamonitor._internal import report_internal_error

logger = logging.getLogger("llamonitor.transport")

INHERIT_ENV = "LLAMONITOR_PARENT_CONFIG"
"""Environment variable holding the path of the parent's configuration file."""

CHILD_TERM_FLUSH_SECONDS = 5.0
"""How long a child that got SIGTERM spends flushing before it dies."""

_state: dict[str, Any] = {"dir": None, "hooked": False}


class _Anchor:
    """Keeps the after-fork hook registered (multiprocessing holds it weakly)."""


_ANCHOR = _Anchor()


def in_multiprocessing_child() -> bool:
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


# -- the parent ---------------------------------------------------------------


def share_config(config: Any) -> None:
    """Write ``config`` where ``spawn``/``forkserver`` children find it (best effort:
    a configuration that cannot be pickled, a backend object say, is not shared).

    A ``multiprocessing`` child shares nothing of its own: its children use the
    file of the process that wrote it (it would not be removed at ``os._exit``)."""
    if in_multiprocessing_child():
        return
    try:
        data = pickle.dumps(config)
    except Exception as exc:
        logger.debug("llamonitor: configuration not shared with child processes: %r", exc)
        os.environ.pop(INHERIT_ENV, None)
        return
    try:
        directory = _state["dir"]
        if directory is None:
            directory = _state["dir"] = tempfile.mkdtemp(prefix=f"llamonitor-{os.getpid()}-")
            atexit.register(_remove_shared)
        path = Path(directory) / "config.pickle"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        os.environ[INHERIT_ENV] = str(path)
    except OSError as exc:
        logger.debug("llamonitor: configuration not shared with child processes: %r", exc)
        os.environ.pop(INHERIT_ENV, None)


def stop_sharing() -> None:
    """Monitoring stopped: children started from now on do not monitor."""
    if not in_multiprocessing_child():
        os.environ.pop(INHERIT_ENV, None)


def _remove_shared() -> None:
    directory = _state["dir"]
    if directory is not None and os.getpid() == _owner_pid(directory):
        shutil.rmtree(directory, ignore_errors=True)
        if os.environ.get(INHERIT_ENV, "").startswith(directory):
            os.environ.pop(INHERIT_ENV, None)


def _owner_pid(directory: str) -> int:
    try:
        return int(Path(directory).name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def arrange_exit_flush() -> None:
    """Make this process's monitoring flush at the end of its ``multiprocessing``
    children (called whenever monitoring starts)."""
    if not _state["hooked"]:
        from multiprocessing import util

        util.register_after_fork(_ANCHOR, _child_started)  # fork children
        _state["hooked"] = True
    if in_multiprocessing_child():
        _child_started(_ANCHOR)  # spawn / forkserver: monitoring starts inside the child


# -- the child ----------------------------------------------------------------


def _child_started(_anchor: Any) -> None:
    from multiprocessing import util

    _state["dir"] = None  # the parent's file: not ours to remove
    util.Finalize(None, _flush_at_child_exit, exitpriority=10)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _flush_then_die)
        except (ValueError, OSError):  # not allowed here
            pass


def _flush_at_child_exit() -> None:
    from llamonitor.transport.writer import shutdown_monitoring

    _state["flushing"] = True
    try:
        shutdown_monitoring()
    except Exception as exc:
        report_internal_error("child_exit_flush", exc)
    finally:
        _state["flushing"] = False
        signum = _state.pop("deferred_signal", None)
        if signum is not None:
            _die_of(signum)


def _flush_then_die(signum: int, frame: Any) -> None:
    if _state.get("flushing"):
        # The exit flush is running (a Pool worker told to stop, then terminated):
        # let it finish; it dies of the signal afterwards.
        _state["deferred_signal"] = signum
        return
    from llamonitor.transport.writer import shutdown_monitoring

    try:
        shutdown_monitoring(CHILD_TERM_FLUSH_SECONDS)
    except BaseException:
        pass
    _die_of(signum)


def _die_of(signum: int) -> None:
    """End the process as the signal would have without us (same exit status)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class Inherited:
    """``_handoff.ACTIVE`` in a process that has the parent's configuration file
    but has not started monitoring: the first record starts it (in a
    ``multiprocessing`` child only) and is handed on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _start(self) -> _handoff.Queue | None:
        with self._lock:
            if _handoff.ACTIVE is not self:
                return _handoff.ACTIVE  # started meanwhile (or by the user)
            if not in_multiprocessing_child():
                _handoff.activate(None)  # another program that happens to see the variable
                return None
            try:
                with open(self.path, "rb") as f:
                    config = pickle.load(f)
                from llamonitor.transport.writer import initialize_monitoring

                initialize_monitoring(config)
            except Exception as exc:
                if _handoff.ACTIVE is self:
                    _handoff.activate(None)
                report_internal_error("inherit_config", exc)
            return _handoff.ACTIVE if _handoff.ACTIVE is not self else None

    def submit(self, record: tuple[Any, ...]) -> bool:
        queue = self._start()
        return queue.submit(record) if queue is not None else False

    def count_sampled_out(self) -> None:
        queue = self._start()
        if queue is not None:
            queue.count_sampled_out()


def install_inherited() -> None:
    """At import: in a process started with the parent's configuration file, the
    first span starts monitoring from it (see :class:`Inherited`)."""
    path = os.environ.get(INHERIT_ENV)
    if path and _handoff.ACTIVE is None and _owner_pid(str(Path(path).parent)) != os.getpid():
        _handoff.activate(Inherited(path))
