"""``llmops_monitoring.utils.logging_config``: seed 000's logging helpers.

``get_logger(__name__)`` gives a logger that prints to stdout (what the
original's examples rely on); ``configure_logging`` sets the level, format and
handlers of the library's own loggers (``llamonitor`` and ``llmops_monitoring``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

DEFAULT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
SIMPLE_FORMAT = "%(levelname)s: %(message)s"
DETAILED_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(filename)s:%(lineno)d - %(message)s"
FORMATS = {"default": DEFAULT_FORMAT, "simple": SIMPLE_FORMAT, "detailed": DETAILED_FORMAT}
LIBRARY_LOGGERS = ("llamonitor", "llmops_monitoring")
NOISY_LOGGERS = ("urllib3", "asyncio", "aiohttp", "httpx", "httpcore")


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler these helpers added (so they replace only their own)."""


class _OwnFileHandler(logging.FileHandler):
    """A file handler these helpers added."""


def _level(name: str | None, default: str = "INFO") -> int:
    value = logging.getLevelName((name or default).upper())
    return value if isinstance(value, int) else logging.INFO


def get_logger(name: str, level: str | None = None) -> logging.Logger:
    """A logger that prints to stdout.

    Args:
        name: the logger's name (usually ``__name__``).
        level: ``DEBUG``, ``INFO``... (default: ``LLMOPS_LOG_LEVEL``, else ``INFO``).

    Returns:
        The logger; a logger that already has handlers is returned as it is.
    """
    logger = logging.getLogger(name)
    if logger.handlers:
        return logger
    logger.setLevel(_level(level or os.environ.get("LLMOPS_LOG_LEVEL")))
    handler = _OwnHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(DEFAULT_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def configure_logging(
    level: str = "INFO",
    format_style: str = "default",
    log_file: Path | str | None = None,
    quiet: bool = False,
) -> None:
    """Set level, format and handlers of the library's loggers.

    Args:
        level: ``DEBUG``, ``INFO``, ``WARNING``...
        format_style: ``default``, ``simple`` or ``detailed``.
        log_file: also write to this file (its directory is created).
        quiet: no console output.
    """
    fmt = logging.Formatter(FORMATS.get(format_style, DEFAULT_FORMAT))
    handlers: list[logging.Handler] = []
    if not quiet:
        handlers.append(_OwnHandler(sys.stdout))
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_OwnFileHandler(path))
    for handler in handlers:
        handler.setFormatter(fmt)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(_level(level))
        for old in [h for h in logger.handlers if isinstance(h, (_OwnHandler, _OwnFileHandler))]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False


def disable_external_loggers(level: str = "WARNING") -> None:
    """Quiet the loggers of common HTTP and asyncio libraries down to ``level``."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(_level(level, "WARNING"))


__all__ = ["configure_logging", "disable_external_loggers", "get_logger"]
