"""Telling a store that is down from a batch it refuses, and when to try again.

- :func:`is_transient`: is an error the store being unreachable for now (a
  connection refused, a timeout...) rather than a wrong setting or bad rows?
- :class:`Backoff`: the recovery probe's schedule (doubling, capped, jittered).
- :class:`Suspects`: spooled records the store refused for a reason other
  than being unreachable. One is retried only once the store has taken some
  other write since it failed (a record the store refuses twice that way is
  refused for its content: it is set aside as rejected); until then the
  replay and the probe pass it by, so it cannot stall what is behind it.
"""

from __future__ import annotations

import random

from llamonitor.schema.config import ConfigurationError
from llamonitor.storage._sql import network_error

POISON_STRIKES = 2
"""A spooled record that fails this many times (each time after the backend
took other writes in between, never for a transient error) is moved to the
rejected records, with its error: the backend is up, that record is what it
refuses."""

MAX_SUSPECTS = 1000
"""Suspect records remembered at most (the oldest are forgotten first)."""

_TRANSIENT_NAMES = frozenset(
    {"CannotConnectNowError", "TooManyConnectionsError", "ConnectionDoesNotExistError"}
)


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` (from a backend) the store being unreachable for now, rather
    than a setting being wrong or the rows being refused?

    Transient: a connection refused/reset, a timeout, a name that does not
    resolve, or a driver error caused by one of these (anywhere in the
    ``__cause__``/``__context__`` chain). Never transient: ``ConfigurationError``
    and ``ImportError`` (a missing driver). A backend can decide itself by
    setting ``exc.llamonitor_transient = True/False``.
    """
    if isinstance(exc, (ConfigurationError, ImportError)):
        return False
    flag = getattr(exc, "llamonitor_transient", None)
    if isinstance(flag, bool):
        return flag
    return network_error(exc, _TRANSIENT_NAMES)


class Backoff:
    """When to try again: ``first`` seconds after the first failure, doubling
    after each further one up to ``cap``; each delay jittered to 50-100 %."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.delay = first
        self.at = 0.0  # monotonic time of the next try

    def reset(self) -> None:
        self.delay = self.first
        self.at = 0.0

    def failed(self, now: float) -> None:
        self.at = now + self.delay * (0.5 + random.random() / 2)
        self.delay = min(self.cap, self.delay * 2)

    def wait(self, now: float) -> float:
        """Seconds until the next try (0: due)."""
        return max(0.0, self.at - now)


Key = tuple[str, int]  # (segment name, offset): a record, in any process


class Suspects:
    """Spooled records that failed for a reason other than the store being
    unreachable, with their strikes (see the module docstring)."""

    def __init__(self, strikes: int = POISON_STRIKES, max_entries: int = MAX_SUSPECTS) -> None:
        self.strikes = strikes
        self.max_entries = max_entries
        self.ok_writes = 0  # writes the backend took so far
        self._entries: dict[Key, tuple[int, int]] = {}  # key -> (strikes, ok_writes then)

    def __len__(self) -> int:
        return len(self._entries)

    def wrote(self) -> None:
        """The backend took a write."""
        self.ok_writes += 1

    def failed(self, key: Key, exc: BaseException) -> bool:
        """Record a failure of ``key``; True if it is now known to be refused
        for its content. A transient error is no strike."""
        if is_transient(exc):
            return False
        strikes, at = self._entries.pop(key, (0, -1))
        if at < self.ok_writes:  # the store took another write since: a strike
            strikes += 1
        self._entries[key] = (strikes, self.ok_writes)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]
        return strikes >= self.strikes

    def waiting(self) -> frozenset[Key]:
        """The records to pass by for now: retrying them before the store took
        another write would prove nothing."""
        return frozenset(k for k, (_, at) in self._entries.items() if at == self.ok_writes)

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def prune(self, segments: set[str]) -> None:
        """Forget the records of segments that are gone (``segments``: those left)."""
        for key in [k for k in self._entries if k[0] not in segments]:
            del self._entries[key]
