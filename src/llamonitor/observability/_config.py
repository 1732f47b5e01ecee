"""Seed 001's configuration: ``ObservabilityConfig`` (environment ``LLMOPS_OBSERVABILITY_*``).

==========================================  =======================  ===========
Variable                                    Setting                  Default
==========================================  =======================  ===========
``LLMOPS_OBSERVABILITY_ENABLED``            ``enabled``              ``true``
``LLMOPS_OBSERVABILITY_QUEUE_SIZE``         ``queue_size``           ``10000``
``LLMOPS_OBSERVABILITY_WORKERS``            ``num_workers``          ``2``
``LLMOPS_OBSERVABILITY_SAMPLE_RATE``        ``sample_rate``          ``1.0``
``LLMOPS_OBSERVABILITY_BACK_PRESSURE_STRATEGY``  ``back_pressure_strategy``  ``drop_newest``
``LLMOPS_OBSERVABILITY_BLOCK_TIMEOUT_SECONDS``   ``block_timeout_seconds``   ``1.0``
==========================================  =======================  ===========

LLMgine's names (``LLMGINE_OBSERVABILITY_ENABLED``, ``_QUEUE_SIZE``,
``_WORKERS``, ``_SAMPLE_RATE``, ``_BACK_PRESSURE_STRATEGY``) are read too,
below the ``LLMOPS_`` ones, each with a ``DeprecationWarning`` naming its
new name.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from llamonitor.schema.config import ConfigurationError, warn_legacy

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_NUM_WORKERS = 2
DEFAULT_BLOCK_TIMEOUT_SECONDS = 1.0

ENV_PREFIX = "LLMOPS_OBSERVABILITY_"
LEGACY_ENV_PREFIX = "LLMGINE_OBSERVABILITY_"

BackPressureStrategy = Literal["drop_newest", "drop_oldest", "block"]

# setting -> its variable's suffix (num_workers is seed 001's ..._WORKERS)
_ENV_SUFFIX = {
    "enabled": "ENABLED",
    "queue_size": "QUEUE_SIZE",
    "num_workers": "WORKERS",
    "sample_rate": "SAMPLE_RATE",
    "back_pressure_strategy": "BACK_PRESSURE_STRATEGY",
    "block_timeout_seconds": "BLOCK_TIMEOUT_SECONDS",
}


class ObservabilityConfig(BaseSettings):
    """How an :class:`~llamonitor.observability.ObservabilityManager` runs.

    Args:
        enabled: observe events at all (``observe_event`` returns at once when off).
        queue_size: events each handler's queue holds before the strategy applies.
        num_workers: threads serving a handler that is not ``ordered``
            (the built-in handlers are: one thread each, in event order).
        back_pressure_strategy: when a handler's queue is full: ``drop_newest``
            (the new event is dropped, counted), ``drop_oldest`` (the oldest
            queued one is, counted) or ``block`` (the caller waits up to
            ``block_timeout_seconds``, then the event is dropped, counted).
        block_timeout_seconds: the longest ``block`` makes a caller wait.
        sample_rate: fraction of sessions observed (0..1), decided per
            session (per command or call outside a session), so a kept
            session is whole; changeable at run time
            (:meth:`~llamonitor.observability.ObservabilityManager.set_sample_rate`).

    Raises:
        ConfigurationError: a value is invalid (naming the setting and the
            variable it came from).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", populate_by_name=True)

    enabled: bool = True
    queue_size: int = Field(default=DEFAULT_QUEUE_SIZE, gt=0)
    num_workers: int = Field(
        default=DEFAULT_NUM_WORKERS,
        gt=0,
        validation_alias=AliasChoices(
            "num_workers", f"{ENV_PREFIX}WORKERS", f"{ENV_PREFIX}NUM_WORKERS"
        ),
    )
    back_pressure_strategy: BackPressureStrategy = "drop_newest"
    block_timeout_seconds: float = Field(default=DEFAULT_BLOCK_TIMEOUT_SECONDS, ge=0)
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _configuration_error(exc, values) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _LegacyEnv(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )


def env_name(setting: str) -> str:
    """The ``LLMOPS_OBSERVABILITY_*`` variable of ``setting``."""
    return ENV_PREFIX + _ENV_SUFFIX.get(setting, setting.upper())


def _configuration_error(exc: ValidationError, given: dict[str, Any]) -> ConfigurationError:
    first = exc.errors()[0]
    loc = first.get("loc") or ("observability",)
    key = str(loc[0])
    setting = key
    for name, suffix in _ENV_SUFFIX.items():
        if key in (name, ENV_PREFIX + suffix, f"{ENV_PREFIX}NUM_WORKERS"):
            setting = name
    message = f"{first.get('msg', 'invalid value')} (got {first.get('input')!r})"
    if setting not in given:
        where = [
            n
            for n in (env_name(setting), LEGACY_ENV_PREFIX + _ENV_SUFFIX.get(setting, ""))
            if os.environ.get(n)
        ]
        if where:
            message += f" (set in the environment: {', '.join(where)})"
    return ConfigurationError(f"observability.{setting}", message)


class _LegacyEnv(PydanticBaseSettingsSource):
    """LLMgine's ``LLMGINE_OBSERVABILITY_*`` variables, each with a DeprecationWarning."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, suffix in _ENV_SUFFIX.items():
            old = LEGACY_ENV_PREFIX + suffix
            value = os.environ.get(old)
            if value is None:
                continue
            warn_legacy(
                f"{old} is LLMgine's name; llamonitor reads {env_name(name)} "
                f"(the old name still works, below the new one)"
            )
            out[name] = value
        return out
