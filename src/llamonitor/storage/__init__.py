"""Storage backends: one module per engine, each with its write side and query side."""

from llamonitor.storage.base import (
    StorageBackend,
    available_backends,
    create_backend,
    register_backend,
)
from llamonitor.storage.memory import InMemoryBackend

__all__ = [
    "InMemoryBackend",
    "StorageBackend",
    "available_backends",
    "create_backend",
    "register_backend",
]
