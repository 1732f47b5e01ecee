"""Configuration models (pydantic-settings, environment prefix ``LLMOPS_``).

Storage settings can be given flat (``LLMOPS_BACKEND``, ``LLMOPS_BATCH_SIZE``,
``LLMOPS_FLUSH_INTERVAL_SECONDS``, ``LLMOPS_CONNECTION_STRING``...) or nested
(``LLMOPS_STORAGE__OUTPUT_DIR``); monitor settings are flat
(``LLMOPS_MAX_QUEUE_SIZE``, ``LLMOPS_SAMPLE_RATE``...).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llamonitor.schema._metrics_config import RecordingRule
from llamonitor.schema._retention_config import RetentionConfig

DEFAULT_OUTPUT_DIR = "./monitoring_data"
DEFAULT_BATCH_SIZE = 100
DEFAULT_FLUSH_INTERVAL_SECONDS = 5.0
# The queue holds what the worker has not converted yet: 100,000 events, and at
# most 64 MiB of them (each is estimated at 512 bytes plus its text): a burst of
# 100,000 spans with 1 KB of text fits (the worker converts while it comes in).
DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 1024**3
DEFAULT_SPOOL_REJECTED_MAX_BYTES = 64 * 1024**2
SPOOL_DIR_NAME = ".spool"

DSN_SCHEMES: dict[str, str] = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "clickhouse": "clickhouse",
}
"""Connection string scheme (before any ``+driver``) -> backend name."""

QueueFullPolicy = Literal["drop_newest", "drop_oldest", "block"]


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the setting."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        where = env_names(setting)
        if where:
            message += f" (set in the environment: {', '.join(where)})"
        super().__init__(f"{setting}: {message}")


def env_names(setting: str) -> list[str]:
    """The ``LLMOPS_*`` variables that hold ``setting`` and are set now
    (``storage.backend``: ``LLMOPS_STORAGE__BACKEND`` or ``LLMOPS_BACKEND``)."""
    parts = setting.split(".")
    names = ["LLMOPS_" + "__".join(parts).upper()]
    if parts[0] == "storage" and len(parts) == 2:
        names.append("LLMOPS_" + parts[1].upper())
    return [n for n in names if os.environ.get(n)]


class StorageConfig(BaseSettings):
    """Where spans go: one storage backend and how it is fed.

    Args:
        backend: a registered backend name (``parquet``, ``jsonl``, ``memory``),
            ``"package.module:ClassName"``, a ``StorageBackend`` subclass or an
            instance of one.
        output_dir: directory of the file backends.
        partition_by: ``date`` (``output_dir/YYYY-MM-DD/``) or ``session_id``.
        batch_size: events that wake the worker for a write.
        flush_interval_seconds: longest time an event waits before a write.
        stream: the broker stream of ``redis-streams`` / ``nats`` (see docs/brokers.md).
        subject: the NATS subject (default ``llamonitor.<stream>``).
    """

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_", extra="forbid", arbitrary_types_allowed=True
    )

    backend: Any = "parquet"
    output_dir: Path = Path(DEFAULT_OUTPUT_DIR)
    partition_by: Literal["date", "session_id"] = "date"
    compression: Literal["snappy", "zstd", "gzip", "none"] = "snappy"
    connection_string: SecretStr | None = None
    table_name: str = "metric_events"
    schema_name: str | None = None
    pool_size: int = Field(default=10, gt=0)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    flush_interval_seconds: float = Field(default=DEFAULT_FLUSH_INTERVAL_SECONDS, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    stream: str | None = None
    subject: str | None = None

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                raise ValueError("backend must not be empty")
            return v if ":" in v else v.lower()
        return v


PROMETHEUS_MODULE = "llamonitor.export._prometheus"
"""Where ``MonitorConfig(prometheus=...)`` finds ``PrometheusConfig``."""


class ExporterConfig(BaseModel):
    """The settings of one exporter: a sink fed every batch of spans beside
    storage, with the same isolation, retries and (with ``spool``) disk spool.

    Subclass it for an exporter of your own (``llamonitor.export`` has the
    built-in ones: OTLP, console, Prometheus); the transport calls only
    :meth:`create_backend` and :meth:`spool_identity`.

    Args:
        spool: keep what the receiver could not take in the local spool and
            send it when it is back (``MonitorConfig.spool_enabled=False``
            turns it off for every sink).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: ClassVar[str] = "exporter"
    """A short name: the sink's name in ``health_check()`` and its spool directory."""

    spool: bool = True

    def create_backend(self) -> Any:
        """The object the sink feeds: ``write_table(table)`` (plain or
        ``async``), optionally ``initialize()`` and ``close()``, as a storage
        backend has (see ``llamonitor.StorageBackend``).

        Raises:
            ConfigurationError: a setting is invalid (naming it).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define create_backend()")

    def spool_identity(self) -> dict[str, Any]:
        """What tells this exporter's spool apart from another's (no secrets):
        written to the spool's ``identity.json`` and hashed into its name."""
        return {}

    def check(self, setting: str) -> None:
        """Called before :meth:`create_backend` with the exporter's place in the
        configuration (``exporters[0]``): raise ``ConfigurationError`` naming
        ``<setting>.<field>`` for a bad value (default: nothing to check)."""


EXPORTER_KINDS: dict[str, str] = {
    "console": "llamonitor.export.console:ConsoleExporterConfig",
    "otlp": "llamonitor.export._otlp_config:OTLPExporterConfig",
    "prometheus": "llamonitor.export._prometheus:PrometheusConfig",
}
"""Exporter kind -> ``"module:Class"`` of its ``ExporterConfig``: what
``MonitorConfig(exporters=["otlp"])`` or ``LLMOPS_EXPORTERS='["otlp"]'`` builds."""


def exporter_config(spec: Any, setting: str) -> Any:
    """An ``ExporterConfig`` from a kind name (``"otlp"``) or a dict with
    ``"kind"`` and the exporter's fields; anything else is returned as it is.

    Raises:
        ConfigurationError: an unknown kind, or an exporter that cannot be imported.
    """
    if isinstance(spec, str):
        kind, fields = spec, {}
    elif isinstance(spec, dict) and "kind" in spec:
        kind, fields = spec["kind"], {k: v for k, v in spec.items() if k != "kind"}
    else:
        return spec
    path = EXPORTER_KINDS.get(str(kind).strip().lower())
    if path is None:
        raise ConfigurationError(
            setting,
            f"unknown exporter kind {kind!r}; known: {', '.join(sorted(EXPORTER_KINDS))}",
        )
    import importlib

    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(setting, f"cannot load exporter {kind!r}: {exc}") from exc
    return cls(**fields)


class ModelPrice(BaseModel):
    """A user price for a model (private, fine-tuned, negotiated), USD per
    million tokens. Cached input tokens cost ``cached_input_per_million`` when
    given, else the input price."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float | None = Field(default=None, ge=0)


class MonitorConfig(BaseSettings):
    """Everything ``initialize_monitoring`` needs.

    Args:
        enabled: record spans at all.
        storage: the primary storage backend (its counters are the
            ``written``/``failed`` of ``health_check``).
        extra_backends: more sinks fed the same batches, each isolated.
        metrics_interval_seconds: how often the metrics worker snapshots the
            instruments of ``llamonitor.metrics`` and writes their points.
        metrics_max_series: label combinations a metric keeps before new
            ones go to its ``other`` series.
        metrics_rules: recording rules (``RecordingRule``) the metrics
            worker evaluates and stores.
        retention: how long spans and metric points are kept, and the
            rollups kept after raw points go (``RetentionConfig``,
            ``LLMOPS_RETENTION__SPANS_DAYS``...; see docs/retention.md).
        exporters: exporters (``ExporterConfig`` subclasses, such as
            ``llamonitor.export.OTLPExporterConfig``) fed the same batches,
            each an isolated sink like the storage backends; a kind name
            (``"otlp"``) or a dict with ``"kind"`` and its fields builds the
            exporter of that kind (``LLMOPS_EXPORTERS='["otlp"]'``).
        prometheus: ``True`` or a ``llamonitor.export.PrometheusConfig``:
            GenAI and pipeline metrics for Prometheus, computed on a sink from
            the spans, served at ``http://127.0.0.1:9464/metrics`` (the
            ``[prometheus]`` extra; ``LLMOPS_PROMETHEUS__PORT``...; see
            docs/prometheus.md). An exporter like those of ``exporters``.
        max_queue_size: events held between the application and the worker.
            Set explicitly without ``max_queue_bytes``, the byte bound follows
            it (512 bytes + 1 KB of text an event, at least the default);
            set with it, it must fit at 512 bytes an event (more with its
            text), or ``initialize_monitoring`` raises a
            ``ConfigurationError`` naming ``max_queue_bytes``.
        max_queue_bytes: estimated bytes held in the queue (512 per event
            plus the length of the text it keeps, at most 16 KiB).
        queue_full_policy: what happens to an event when both bounds of the
            queue are reached, which the worker's pace (callers past a quarter of the
            queue yield to it) and the spool (a sink that is behind spills to
            it) leave for when memory and disk are both exhausted:
            ``drop_newest`` (default, counted), ``drop_oldest`` or ``block``
            (wait up to ``block_timeout_seconds``, then drop).
        sample_rate: fraction of traces recorded (decided at the root span).
        fail_silently: swallow (count and log once) monitoring errors; set
            ``False`` in tests to see them raised.
        max_retries: write attempts after the first failure of a batch.
        retry_backoff_seconds: first retry delay; doubles, with jitter.
        shutdown_timeout_seconds: deadline of the flush at interpreter exit.
        project_name: stored in the ``project_name`` column of every span.
        capture_content: store prompt and completion text (off by default),
            after redaction and capped at ``content_max_chars`` per field.
        redact_builtin: apply the built-in rules (e-mail addresses, phone
            numbers, credit-card numbers, API keys and secrets).
        redact_patterns: more regular expressions whose matches are replaced.
        redactor: a callable ``str -> str`` applied last.
        model_prices: ``{model: ModelPrice}`` overriding the bundled prices
            (``genai-prices``) for private or fine-tuned models.
        spool_enabled: keep what a sink cannot write (after its retries) in a
            local spool on disk and write it when the store is back. ``None``
            (default): on for backends given by name (``parquet``, ``postgres``,
            ``"pkg.module:Class"``...), off for backend objects and ``memory``.
        spool_dir: the spool's root (one subdirectory per sink); default
            ``<storage.output_dir>/.spool``.
        spool_max_bytes: the most the spool of one sink holds on disk for
            batches waiting to be written; past it, events that cannot be
            written are counted as failed.
        spool_rejected_max_bytes: the most the spool of one sink holds for
            rows the store rejected (kept until ``llamonitor spool replay
            --rejected``); past it, further rejected rows are counted as failed.

    Settings of seed 000 (llamonitor-async), accepted so its configurations work:
    ``retry_failed_writes=False`` means ``max_retries=0`` and no spool (a batch
    that fails is dropped and counted failed); ``auto_start``,
    ``worker_threads`` and ``extensions`` have no effect here, and a value
    that would have one warns (``DeprecationWarning``) naming what to use.
    """

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        arbitrary_types_allowed=True,
    )

    enabled: bool = True
    storage: StorageConfig = Field(default_factory=StorageConfig)
    extra_backends: list[StorageConfig] = Field(default_factory=list)
    exporters: list[ExporterConfig] = Field(default_factory=list)
    prometheus: bool | ExporterConfig | dict[str, Any] | None = None
    metrics_interval_seconds: float = Field(default=10.0, gt=0)
    metrics_max_series: int = Field(default=1000, gt=0)
    metrics_rules: list[RecordingRule] = Field(default_factory=list)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    max_queue_size: int = Field(default=DEFAULT_MAX_QUEUE_SIZE, gt=0)
    max_queue_bytes: int = Field(default=DEFAULT_MAX_QUEUE_BYTES, gt=0)
    queue_full_policy: QueueFullPolicy = "drop_newest"
    block_timeout_seconds: float = Field(default=1.0, ge=0)
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    fail_silently: bool = True
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_seconds: float = Field(default=0.2, gt=0)
    retry_max_backoff_seconds: float = Field(default=5.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    project_name: str | None = None
    capture_content: bool = False
    content_max_chars: int = Field(default=4096, gt=0)
    redact_builtin: bool = True
    redact_patterns: list[str] = Field(default_factory=list)
    redactor: Callable[[str], str] | None = None
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    spool_enabled: bool | None = None
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=DEFAULT_SPOOL_MAX_BYTES, gt=0)
    spool_rejected_max_bytes: int = Field(default=DEFAULT_SPOOL_REJECTED_MAX_BYTES, gt=0)
    # -- seed 000's settings (see the docstring) ---------------------------
    auto_start: bool = True
    worker_threads: int = Field(default=1, gt=0)
    retry_failed_writes: bool = True
    extensions: dict[str, Any] = Field(default_factory=dict)
    _warned_extensions: set[str] = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _seed_settings(self) -> MonitorConfig:
        if not self.retry_failed_writes:
            self.max_retries = 0
            if self.spool_enabled is None:
                self.spool_enabled = False
        if not self.auto_start:
            warn_legacy(
                "MonitorConfig(auto_start=False) has no effect: monitoring starts when "
                "initialize_monitoring() is called; call it later, or pass enabled=False"
            )
        if self.worker_threads != 1:
            warn_legacy(
                f"MonitorConfig(worker_threads={self.worker_threads}) has no effect: llamonitor "
                "runs one worker thread plus one thread per sink; for more throughput raise "
                "storage.batch_size or max_queue_size"
            )
        self.warn_extensions()
        return self

    def warn_extensions(self) -> None:
        """Warn once per key of ``extensions`` (none is supported yet)."""
        for key in list(self.extensions):
            if key not in self._warned_extensions:
                self._warned_extensions.add(key)
                warn_legacy(
                    f"MonitorConfig.extensions[{key!r}] has no effect: llamonitor has no "
                    f"{key!r} extension; more sinks go in extra_backends=[StorageConfig(...)] "
                    "(see docs/migrating.md)"
                )

    @field_validator("exporters", mode="before")
    @classmethod
    def _exporter_kinds(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        if isinstance(v, (list, tuple)):
            return [exporter_config(item, f"exporters[{i}]") for i, item in enumerate(v)]
        return v

    @field_validator("prometheus")
    @classmethod
    def _prometheus_config(cls, v: Any) -> Any:
        if v is None or v is False:
            return None
        if isinstance(v, ExporterConfig):
            if v.kind != "prometheus":
                raise ValueError(f"expected a PrometheusConfig, got {type(v).__name__}")
            return v
        # The exporters layer, by name (it imports this module, not the other way round).
        config = importlib.import_module(PROMETHEUS_MODULE).PrometheusConfig
        return config() if v is True else config.model_validate(v)

    def exporter_configs(self) -> list[ExporterConfig]:
        """``exporters``, and the Prometheus exporter of ``prometheus``."""
        extra = [self.prometheus] if isinstance(self.prometheus, ExporterConfig) else []
        return [*self.exporters, *extra]

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
        return v

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
            _GivenStorage(settings_cls, init_settings),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _storage_from_flat_env(cls, data: Any) -> Any:
        # A nested LLMOPS_STORAGE__X arrives as a dict, which pydantic validates
        # without reading the flat LLMOPS_BACKEND & co: merge them in first.
        if isinstance(data, dict) and isinstance(data.get("storage"), dict):
            flat = StorageConfig().model_dump(exclude_unset=True)
            data = {**data, "storage": {**flat, **data["storage"]}}
        return data

    def spool_root(self) -> Path:
        """The spool directory: ``spool_dir``, or ``<storage.output_dir>/.spool``."""
        if self.spool_dir is not None:
            return Path(self.spool_dir)
        return Path(self.storage.output_dir) / SPOOL_DIR_NAME

    def spool_on(self, storage: StorageConfig | ExporterConfig) -> bool:
        """Whether the sink of ``storage`` gets a spool (see ``spool_enabled``)."""
        if self.spool_enabled is not None:
            return self.spool_enabled and getattr(storage, "spool", True)
        if isinstance(storage, ExporterConfig):
            return storage.spool
        return isinstance(storage.backend, str) and storage.backend != "memory"

    @classmethod
    def for_local_dev(
        cls, output_dir: str | Path | None = None, **settings: Any
    ) -> MonitorConfig:
        """Parquet files under ``output_dir`` (default ``./monitoring_data``), flushed
        every second.

        What you pass wins; then the environment (``LLMOPS_STORAGE__OUTPUT_DIR``,
        ``LLMOPS_BACKEND``...); then this preset's defaults.
        """
        storage = {} if output_dir is None else {"output_dir": Path(output_dir)}
        defaults = {
            "backend": "parquet",
            "output_dir": Path(DEFAULT_OUTPUT_DIR),
            "flush_interval_seconds": 1.0,
        }
        return cls._preset(defaults, storage, settings)

    @classmethod
    def for_production(cls, connection_string: str, **storage: Any) -> MonitorConfig:
        """A database backend chosen from the connection string's scheme, written
        in batches of 1,000.

        What you pass wins (``storage`` holds ``StorageConfig`` fields); then the
        environment (``LLMOPS_BATCH_SIZE``...); then this preset's defaults.
        """
        scheme = connection_string.split(":", 1)[0].split("+", 1)[0].lower()
        backend = DSN_SCHEMES.get(scheme)
        if backend is None:
            raise ConfigurationError(
                "storage.connection_string",
                f"unsupported scheme {scheme!r}; use postgresql://, mysql:// or sqlite://",
            )
        given = {**storage, "backend": backend, "connection_string": SecretStr(connection_string)}
        return cls._preset({"batch_size": 1000}, given, {})

    @classmethod
    def _preset(
        cls, defaults: dict[str, Any], storage: dict[str, Any], settings: dict[str, Any]
    ) -> MonitorConfig:
        """A config from a preset: ``storage``/``settings`` (given by the caller) win,
        then the environment, then the preset's storage ``defaults``."""
        from_env = cls(**settings).storage.model_fields_set
        below = {k: v for k, v in defaults.items() if k not in from_env and k not in storage}
        return cls(**settings, storage={**below, **storage})

    @classmethod
    def from_env(cls) -> MonitorConfig:
        """Read every setting from ``LLMOPS_*`` environment variables."""
        return cls()


_OWN_MODULES = frozenset(
    ("llamonitor", "llmops_monitoring", "pydantic", "pydantic_settings", "pydantic_core")
)


def warn_legacy(message: str) -> None:
    """A ``DeprecationWarning`` about a seed 000 setting, attributed to the
    user's line (the first frame outside llamonitor and pydantic)."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and (
        str(frame.f_globals.get("__name__", "")).partition(".")[0] in _OWN_MODULES
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


class _GivenStorage(PydanticBaseSettingsSource):
    """The init source, where a ``StorageConfig`` given as ``storage`` counts only
    for the fields it was given: the environment fills the others (explicit
    arguments > environment > defaults, field by field)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        storage = data.get("storage")
        if isinstance(storage, StorageConfig):
            data = {**data, "storage": storage.model_dump(include=storage.model_fields_set)}
        return data
