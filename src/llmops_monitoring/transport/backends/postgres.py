"""``llmops_monitoring.transport.backends.postgres``: the PostgreSQL backend
(the ``[postgres]`` extra)."""

from llamonitor.storage.postgres import PostgresBackend

__all__ = ["PostgresBackend"]
