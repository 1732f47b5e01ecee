"""Which failures of an ingest worker's write are about the rows themselves.

A write that fails because the target is unreachable, busy or misconfigured
is retried for as long as it takes (the messages wait in the broker); one
that fails for what was written (the target refuses the rows) can never
succeed, so the worker splits the batch and dead-letters the message(s) that
fail alone. :func:`about_content` tells the two apart.
"""

from __future__ import annotations

import errno

from llamonitor.schema.config import ConfigurationError

__all__ = ["Refused", "about_content"]

_CONTENT_ERRNOS = frozenset({
    errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.EFBIG, errno.EOVERFLOW, errno.E2BIG,
})

_TARGET_SQLSTATE_CLASSES = frozenset({"08", "0A", "28", "3D", "3F", "42", "53", "55", "57", "58"})
"""SQLSTATE classes about the database (its connection, a feature, a login, a
missing database or schema, a privilege or a missing table, resources,
operator intervention): retried, never blamed on the messages."""


class Refused(Exception):
    """A write failed for the content of its messages (retrying cannot help)."""


def about_content(exc: BaseException) -> bool:
    """Whether a write's error is about what was written rather than the
    target being unreachable or busy: a ``StoreError`` not marked transient,
    ``ValueError``/``TypeError``, an ``OSError`` such as ENAMETOOLONG (not a
    connection error, a full disk or a permission; not a PostgreSQL SQLSTATE
    about the database itself, such as 42501 permission denied)."""
    if isinstance(exc, ConfigurationError):
        return False  # the target's setting, not these rows
    state = str(getattr(exc, "sqlstate", "") or "")
    if len(state) == 5 and state[:2] in _TARGET_SQLSTATE_CLASSES:
        return False  # SQLSTATE: a login, a privilege, resources: not the rows
    flag = getattr(exc, "llamonitor_transient", None)
    if isinstance(flag, bool):
        return not flag
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    if isinstance(exc, OSError):
        return exc.errno in _CONTENT_ERRNOS
    return isinstance(exc, (ValueError, TypeError))


