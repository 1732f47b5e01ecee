"""``llmops_monitoring.utils``: logging helpers."""

from llmops_monitoring.utils.logging_config import configure_logging, get_logger

__all__ = ["configure_logging", "get_logger"]
