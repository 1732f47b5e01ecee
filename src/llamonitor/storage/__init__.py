"""Storage backends: one module per engine, each with its write side and query side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamonitor._lazy import exports

if TYPE_CHECKING:
    from llamonitor.storage._sql import StoreError
    from llamonitor.storage.base import (
        RowsRejected,
        StorageBackend,
        available_backends,
        create_backend,
        register_backend,
    )
    from llamonitor.storage.memory import InMemoryBackend

# Imported at first use (see llamonitor._lazy).
_EXPORTS: dict[str, str] = {
    "InMemoryBackend": "llamonitor.storage.memory",
    "RowsRejected": "llamonitor.storage.base",
    "StorageBackend": "llamonitor.storage.base",
    "StoreError": "llamonitor.storage._sql",
    "available_backends": "llamonitor.storage.base",
    "create_backend": "llamonitor.storage.base",
    "register_backend": "llamonitor.storage.base",
}

__all__ = [
    "InMemoryBackend",
    "RowsRejected",
    "StorageBackend",
    "StoreError",
    "available_backends",
    "create_backend",
    "register_backend",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS, globals(), __all__)
