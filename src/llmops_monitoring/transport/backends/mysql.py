"""``llmops_monitoring.transport.backends.mysql``: the MySQL / MariaDB backend
(the ``[mysql]`` extra)."""

from llamonitor.storage.mysql import MySQLBackend

__all__ = ["MySQLBackend"]
