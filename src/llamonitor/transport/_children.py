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
  kills its workers with SIGTERM. Where SIGTERM has its default action, a
  child that monitors flushes first (within ``CHILD_TERM_FLUSH_SECONDS``),
  then dies of the same signal, with the same exit status.
- **Inheritance**: a ``spawn``/``forkserver`` child is a new interpreter that
  never ran its parent's ``initialize_monitoring``. Each monitoring process
  writes its configuration to a private file (mode 0600 in a 0700 directory
  named after its pid; the environment only carries the file's path, so no
  secret reaches the environment of other programs). A process that imports
  llamonitor with that variable set and has not started monitoring starts it
  from the file at its first span, if it is a ``multiprocessing`` child *of
  the process that wrote the file*; any other program (a plain subprocess, or
  the ``multiprocessing`` children of one) ignores the file and removes the
  variable from its own environment. A child that monitors shares its own
  file with its children in turn, and removes it when it ends (after joining
  its own children). Directories left by processes that were killed (nobody
  holds their ``alive.lock`` any more) are removed at the next start.

Events queued in the parent at fork time stay the parent's (the child starts
with an empty queue), so each span is written once.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import stat
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

DIR_PREFIX = "llamonitor-mp-"
"""Name of a configuration file's directory: ``DIR_PREFIX + "<pid>-<random>"``."""

CHILD_TERM_FLUSH_SECONDS = 5.0
"""How long a child that got SIGTERM spends flushing before it dies."""

_state: dict[str, Any] = {"dir": None, "data": None, "hooked": False, "swept": False}


class _Anchor:
    """Keeps the after-fork hook registered (multiprocessing holds it weakly)."""


_ANCHOR = _Anchor()


def in_multiprocessing_child() -> bool:
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def _multiprocessing_parent_pid() -> int | None:
    mp = sys.modules.get("multiprocessing")
    parent = mp.parent_process() if mp is not None else None
    return parent.pid if parent is not None else None


def _owner_pid(path: str | Path) -> int:
    """The pid in a configuration directory's name (or the file's), -1 if none."""
    p = Path(path)
    name = p.name if p.name.startswith(DIR_PREFIX) else p.parent.name
    if not name.startswith(DIR_PREFIX):
        return -1
    try:
        return int(name[len(DIR_PREFIX) :].split("-")[0])
    except ValueError:
        return -1


# -- sharing -------------------------------------------------------------------


def share_config(config: Any) -> None:
    """Write ``config`` where this process's ``spawn``/``forkserver`` children find
    it (best effort: a configuration that cannot be pickled, a backend object
    say, is not shared)."""
    try:
        data = pickle.dumps(config)
    except Exception as exc:
        logger.debug("llamonitor: configuration not shared with child processes: %r", exc)
        _state["data"] = None
        os.environ.pop(INHERIT_ENV, None)
        return
    _state["data"] = data
    _write_shared(data)


def _write_shared(data: bytes) -> None:
    try:
        directory = _state["dir"]
        if directory is None or _owner_pid(directory) != os.getpid():
            _sweep_stale()
            directory = _state["dir"] = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
            _hold_alive_lock(directory)
            from multiprocessing import util

            # Removed by multiprocessing's last pass of finalizers: after the flush,
            # and after this process has joined its own children (which may still
            # need the file), also in a main process (util's atexit hook runs then).
            util.Finalize(None, _remove_shared, exitpriority=-1)
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
    os.environ.pop(INHERIT_ENV, None)


def _remove_shared() -> None:
    directory = _state["dir"]
    if directory is not None and os.getpid() == _owner_pid(directory):
        shutil.rmtree(directory, ignore_errors=True)
        _state["dir"] = None
        if os.environ.get(INHERIT_ENV, "").startswith(directory):
            os.environ.pop(INHERIT_ENV, None)


ALIVE_LOCK = "alive.lock"
"""A file its owner holds ``flock``'ed while it lives (whatever pid namespace the
sweeper is in: locks are the kernel's, pids are not)."""


def _hold_alive_lock(directory: str) -> None:
    try:
        import fcntl

        fd = os.open(Path(directory) / ALIVE_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _state["alive_fd"] = fd  # held until the process ends (its fork children share it)
    except (ImportError, OSError):
        pass


def _owner_gone(directory: Path) -> bool:
    """The directory's owner has ended: nobody holds its lock (False if unsure)."""
    try:
        import fcntl

        fd = os.open(directory / ALIVE_LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return False  # no lock file (being created, or not ours): leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: alive
    finally:
        os.close(fd)
    return True


def _sweep_stale() -> None:
    """Remove this user's configuration directories whose process is gone
    (killed before its exit hooks ran). Once per process."""
    if _state["swept"]:
        return
    _state["swept"] = True
    uid = os.getuid()
    try:
        candidates = list(Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"))
    except OSError:
        return
    for directory in candidates:
        pid = _owner_pid(directory)
        if pid <= 0 or pid == os.getpid():
            continue
        try:
            st = directory.lstat()
            if st.st_uid != uid or not stat.S_ISDIR(st.st_mode):
                continue
        except OSError:
            continue
        if _owner_gone(directory):
            shutil.rmtree(directory, ignore_errors=True)


# -- the exit flush --------------------------------------------------------------


def arrange_exit_flush() -> None:
    """Make this process's monitoring flush at the end of its ``multiprocessing``
    children (called whenever monitoring starts)."""
    if not _state["hooked"]:
        from multiprocessing import util

        util.register_after_fork(_ANCHOR, _child_started)  # fork children
        _state["hooked"] = True
    if in_multiprocessing_child():
        _child_started(_ANCHOR)  # spawn / forkserver: monitoring starts inside the child


def _child_started(_anchor: Any) -> None:
    from multiprocessing import util

    util.Finalize(None, _flush_at_child_exit, exitpriority=10)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _flush_then_die)
        except (ValueError, OSError):  # not allowed here
            pass
    directory = _state["dir"]
    if directory is not None and _owner_pid(directory) != os.getpid():
        # A fork child: the parent's file is not ours to remove, and our own
        # children must find one of ours (they accept only their parent's).
        _state["dir"] = None
        if _state["data"] is not None and os.environ.get(INHERIT_ENV):
            _write_shared(_state["data"])


def _monitoring() -> bool:
    active = _handoff.ACTIVE
    return active is not None and not isinstance(active, Inherited)


def _flush_at_child_exit() -> None:
    _state["flushing"] = True
    try:
        if _monitoring():
            from llamonitor.transport.writer import shutdown_monitoring

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
    if _monitoring():
        if _in_pipeline(frame) and _state.get("term_retries", 0) < 100:
            # Interrupted inside the queue's critical section (its lock held by
            # this very thread): let it finish, and take the signal again.
            _state["term_retries"] = _state.get("term_retries", 0) + 1
            timer = threading.Timer(0.005, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        # On a thread of its own, bounded: a lock this thread holds cannot hang us.
        from llamonitor.transport.writer import shutdown_monitoring

        flusher = threading.Thread(
            target=_quietly, args=(shutdown_monitoring, CHILD_TERM_FLUSH_SECONDS), daemon=True
        )
        flusher.start()
        flusher.join(CHILD_TERM_FLUSH_SECONDS + 1.0)
    _die_of(signum)


def _in_pipeline(frame: Any) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__") == "llamonitor.transport._pipeline":
            return True
        frame = frame.f_back
    return False


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException:
        pass


def _die_of(signum: int) -> None:
    """End the process as the signal would have without us (same exit status)."""
    _remove_shared()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# -- the child that inherits -----------------------------------------------------


class Inherited:
    """``_handoff.ACTIVE`` in a process that has a configuration file's path in
    its environment but has not started monitoring: the first record starts it
    (in a ``multiprocessing`` child of the file's writer only) and is handed on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._starting = False

    def _start(self) -> _handoff.Queue | None:
        with self._lock:
            if _handoff.ACTIVE is not self:
                return _handoff.ACTIVE  # started meanwhile (or by the user)
            if self._starting:
                return None  # a span recorded while monitoring starts, on this thread
            if _multiprocessing_parent_pid() != _owner_pid(self.path):
                # Another program that happens to see the variable: not ours, nor
                # its children's.
                _handoff.activate(None)
                if os.environ.get(INHERIT_ENV) == self.path:
                    os.environ.pop(INHERIT_ENV, None)
                return None
            self._starting = True
            try:
                config = _load_private(self.path)
                from llamonitor.transport.writer import start_inherited

                start_inherited(config)
            except Exception as exc:
                if _handoff.ACTIVE is self:
                    _handoff.activate(None)
                report_internal_error("inherit_config", exc)
            finally:
                self._starting = False
            return _handoff.ACTIVE if _handoff.ACTIVE is not self else None

    def submit(self, record: tuple[Any, ...]) -> bool:
        queue = self._start()
        return queue.submit(record) if queue is not None else False

    def count_sampled_out(self) -> None:
        queue = self._start()
        if queue is not None:
            queue.count_sampled_out()


def _load_private(path: str) -> Any:
    """Unpickle the configuration file, only if it is this user's and no one
    else's to read or write."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(f"{path}: not a private file of this user; not loaded")
        return pickle.load(f)


def install_inherited() -> None:
    """At import of llamonitor: in a process started with a configuration file's
    path, the first span starts monitoring from it (see :class:`Inherited`)."""
    path = os.environ.get(INHERIT_ENV)
    if path and _handoff.ACTIVE is None and _owner_pid(path) != os.getpid():
        _handoff.activate(Inherited(path))
