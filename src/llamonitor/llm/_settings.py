"""The LLM settings of the active monitoring configuration.

Set by ``initialize_monitoring``; read by the content capture on the
application thread (one attribute read) and by the worker when it fills the
cost and project columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llamonitor.schema.config import ModelPrice, MonitorConfig


@dataclass(frozen=True)
class LLMSettings:
    project_name: str | None = None
    capture_content: bool = False
    content_max_chars: int = 4096
    redact: Callable[[str], str] | None = None
    model_prices: dict[str, ModelPrice] = field(default_factory=dict)


SETTINGS = LLMSettings()


def configure(config: MonitorConfig) -> None:
    """Make ``config``'s LLM settings the active ones."""
    from llamonitor.llm import pricing
    from llamonitor.llm.content import make_redactor

    global SETTINGS
    SETTINGS = LLMSettings(
        project_name=config.project_name,
        capture_content=config.capture_content,
        content_max_chars=config.content_max_chars,
        redact=make_redactor(config.redact_builtin, config.redact_patterns, config.redactor),
        model_prices=dict(config.model_prices),
    )
    pricing.reset()


def get() -> LLMSettings:
    return SETTINGS
