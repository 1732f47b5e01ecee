"""``llmops_monitoring.transport.backends.base``: the storage backend interface.

A subclass written for seed 000 (``initialize``, ``write_event``,
``write_batch``, ``close``, optionally ``health_check`` and
``supports_batch_writes``) plugs in as ``StorageConfig(backend=MyBackend)``.
"""

from llamonitor import StorageBackend

__all__ = ["StorageBackend"]
