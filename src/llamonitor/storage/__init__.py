"""Storage backends: one module per engine, each with its write side and query side."""

from llamonitor.storage._sql import StoreError
from llamonitor.storage.base import (
    RowsRejected,
    StorageBackend,
    available_backends,
    create_backend,
    register_backend,
)
from llamonitor.storage.memory import InMemoryBackend

__all__ = [
    "InMemoryBackend",
    "RowsRejected",
    "StorageBackend",
    "StoreError",
    "available_backends",
    "create_backend",
    "register_backend",
]
