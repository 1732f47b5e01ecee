"""Which spool directory belongs to which store, told without secrets.

A sink's spool directory is named after its backend and a hash of everything
that picks its store: the backend, the connection string *without its
secrets* (so a rotated password finds the same spool), the table and schema,
the output directory, and the backend's ``options``. ``identity.json`` (and
``llamonitor spool status``) show the connection string only as rebuilt from
the parts a URL parser recognized (scheme, user, host, port, database);
anything else is shown as a hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from llamonitor.storage._sql import SECRET_KEY

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_EZCONNECT = re.compile(r"^([^/@\s]+)/.*@([^@]+)$", re.DOTALL)  # user/password@host:port/service
_ODBC_PAIR = re.compile(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)")
_LIBPQ_PAIR = re.compile(r"([\w.-]+)\s*=\s*('(?:\\.|[^'\\])*'|\S*)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# What a part of a shown URL may contain: nothing that could be a password.
_SAFE_USER = re.compile(r"^[A-Za-z0-9._~%+-]*$")
_SAFE_HOSTS = re.compile(
    r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?"
    r"(?:,(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?)*$"
)
_SAFE_PATH = re.compile(r"^(?:/[A-Za-z0-9._~+-]*)*$")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _split_url(rest: str) -> tuple[str, str]:
    """``(userinfo, after)`` of what follows ``scheme://``. The userinfo ends at
    the *last* ``@`` before the query, so a password holding an unescaped
    ``/`` or ``@`` stays in it."""
    query = rest.find("?")
    head = rest if query < 0 else rest[:query]
    at = head.rfind("@")
    if at < 0:
        return "", rest
    return rest[:at], rest[at + 1 :]


def dsn_without_secrets(dsn: str) -> str:
    """``dsn`` with every secret left out, in a normal form: what identifies the
    store (to hash, never to show: a form not recognized is kept whole)."""
    m = _URL.match(dsn.strip())
    if m:
        scheme, rest = m.groups()
        userinfo, after = _split_url(rest)
        user = userinfo.split(":", 1)[0]
        try:
            parts = urlsplit(f"{scheme}://{after}")
            query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                     if not SECRET_KEY.search(k)]
        except ValueError:
            return f"{scheme.lower()}://{user}@{after}"
        q = f"?{urlencode(sorted(query))}" if query else ""
        return f"{scheme.lower()}://{user}@{parts.netloc.lower()}{parts.path}{q}"
    if ";" in dsn and "=" in dsn:  # ODBC: Driver={...};Server=db;Uid=app;Pwd=...;
        pairs = [(k.strip().lower(), v) for k, v in _ODBC_PAIR.findall(dsn)]
        return ";".join(f"{k}={v}" for k, v in sorted(pairs) if not SECRET_KEY.search(k))
    if _LIBPQ_PAIR.match(dsn.strip()):  # libpq keywords: host=db user=app password=...
        pairs = [(k.lower(), v) for k, v in _LIBPQ_PAIR.findall(dsn)]
        return " ".join(f"{k}={v}" for k, v in sorted(pairs) if not SECRET_KEY.search(k))
    m = _EZCONNECT.match(dsn.strip())
    if m:  # Oracle EZConnect: user/password@host:port/service
        return f"{m.group(1)}@{m.group(2)}"
    return dsn


def describe_dsn(dsn: str) -> str:
    """``dsn`` as it may be shown: ``scheme://user@host:port/database`` rebuilt
    from the parts a URL parser recognized, each checked to hold nothing but
    what such a part holds; otherwise ``sha256:<hash>`` of its secret-free form
    (a keyword or ODBC string, ``user/password@host``...)."""
    hashed = f"sha256:{_digest(dsn_without_secrets(dsn), 16)}"
    m = _URL.match(dsn.strip())
    if not m:
        return hashed
    scheme, rest = m.groups()
    userinfo, after = _split_url(rest)
    user = userinfo.split(":", 1)[0]
    try:
        parts = urlsplit(f"{scheme}://{after}")
    except ValueError:
        return hashed
    hosts = parts.netloc
    if (
        not _SAFE_USER.match(user)
        or not _SAFE_PATH.match(parts.path)
        or "@" in after
        or (hosts and not _SAFE_HOSTS.match(hosts))
        or (not hosts and (userinfo or not parts.path))
    ):
        return hashed
    at = f"{user}@" if user else ""
    return f"{scheme}://{at}{hosts}{parts.path}"


def _stable(value: Any) -> str:
    # Objects in options have no stable text (reprs hold addresses): their type.
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _options_digest(options: dict[str, Any]) -> str:
    kept = {str(k): v for k, v in options.items() if not SECRET_KEY.search(str(k))}
    return _digest(json.dumps(kept, sort_keys=True, default=_stable), 16)


def sink_identity(storage: Any) -> dict[str, Any]:
    """What identifies the store a ``StorageConfig`` writes to (no secrets):
    the dict written to ``identity.json`` and hashed into the directory name.
    An exporter (``ExporterConfig``) says its own (``spool_identity``)."""
    if callable(getattr(storage, "spool_identity", None)):
        return {"backend": f"exporter-{storage.kind}", **storage.spool_identity()}
    backend = storage.backend
    if isinstance(backend, str):
        name = backend
    else:
        cls = backend if isinstance(backend, type) else type(backend)
        name = f"{cls.__module__}:{cls.__qualname__}"
    ident: dict[str, Any] = {"backend": name, "table": storage.table_name}
    dsn = storage.connection_string
    if dsn is not None:
        secret = dsn.get_secret_value() if hasattr(dsn, "get_secret_value") else str(dsn)
        ident["dsn"] = describe_dsn(secret)
        ident["dsn_hash"] = _digest(dsn_without_secrets(secret), 16)
        if getattr(storage, "schema_name", None):
            ident["schema"] = storage.schema_name
    else:
        ident["output_dir"] = str(Path(storage.output_dir).expanduser().resolve())
    for key in ("stream", "subject"):  # broker transports: one spool per stream
        if getattr(storage, key, None):
            ident[key] = getattr(storage, key)
    options = getattr(storage, "options", None)
    if options:
        ident["options_hash"] = _options_digest(options)
    return ident


def sink_dir_name(storage: Any) -> str:
    """The spool subdirectory of a ``StorageConfig``: stable across processes
    and restarts, different for different stores (``postgres-3f9a1c0b2d``)."""
    ident = sink_identity(storage)
    digest = _digest(json.dumps(ident, sort_keys=True), 10)
    slug = _UNSAFE.sub("_", ident["backend"].rsplit(":", 1)[-1]).strip("_")[:40] or "backend"
    return f"{slug.lower()}-{digest}"
