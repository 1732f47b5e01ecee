"""``llmops_monitoring.schema.config``: llamonitor's configuration models.

``MonitorConfig`` accepts seed 000's ``auto_start``, ``worker_threads``,
``retry_failed_writes`` and ``extensions`` (see its docstring).
"""

from llamonitor import MonitorConfig, StorageConfig

__all__ = ["MonitorConfig", "StorageConfig"]
