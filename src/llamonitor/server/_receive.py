"""The OTLP receiver's parts for a server: the writer it queues spans in, the
:class:`~llamonitor.server._ingest.Ingestor`, and the optional gRPC server.

The writer: the process's running ``MonitoringWriter`` when the server serves
that writer's store (``initialize_monitoring(serve=True)``,
``start_server()`` without a store); otherwise a writer of the receiver's own
into the served store (``llamonitor serve --dir/--dsn``, ``llamonitor
collect``), flushed and stopped with the server, configured from ``LLMOPS_*``
variables (``capture_content``, ``redact_*``, ``content_max_chars``,
``max_queue_bytes``...; the LLM ones are the process's while it serves, when
the process runs no monitoring of its own). A JSON Lines store is only read: no OTLP there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamonitor.server._ingest import Ingestor
from llamonitor.server._settings import ServerConfig

logger = logging.getLogger("llamonitor.server")

INGEST_BATCH_SIZE = 5000
"""Rows that wake the receiver's own writer (fewer, larger Parquet files)."""

INGEST_FLUSH_INTERVAL_SECONDS = 1.0
"""Longest time a received span waits in the receiver's own writer."""

WRITER_STOP_SECONDS = 30.0
"""How long stopping flushes the receiver's own writer."""


def own_writer(directory: Path, dsn: str | None, table: str | None) -> Any:
    """A started ``MonitoringWriter`` into the store (not the process's writer),
    or ``None`` for a JSON Lines store.

    Raises:
        ConfigurationError: the store cannot be written (names the setting).
    """
    from llamonitor.schema.config import MonitorConfig
    from llamonitor.transport.writer import MonitoringWriter

    storage: dict[str, Any] = {
        "batch_size": INGEST_BATCH_SIZE,
        "flush_interval_seconds": INGEST_FLUSH_INTERVAL_SECONDS,
    }
    if dsn:
        if table:
            schema, _, name = table.rpartition(".")
            storage["table_name"] = name
            if schema:
                storage["schema_name"] = schema
        config = MonitorConfig.for_production(dsn, **storage)
    else:
        if directory.is_file():
            return None
        config = MonitorConfig(storage={"backend": "parquet", "output_dir": directory, **storage})
    return MonitoringWriter(config).start()


@dataclass
class Receivers:
    """What receives OTLP for one server; :meth:`close` stops it all."""

    ingestor: Ingestor
    grpc: Any = None
    settings: Any = None
    """The process's LLM settings before the receiver's own writer's, restored at close."""

    def close(self) -> None:
        grpc, self.grpc = self.grpc, None
        if grpc is not None:
            grpc.stop()
        self.ingestor.close(WRITER_STOP_SECONDS)
        settings, self.settings = self.settings, None
        if settings is not None:
            _restore_settings(settings)


def _own_settings(writer: Any) -> Any:
    """With no monitoring of the process's own, make the receiver's writer's
    ``LLMOPS_*`` settings the process's (what the mapping reads: the content
    cut, prices); returns the settings to restore, or ``None``."""
    from llamonitor.llm import _settings as llm_settings
    from llamonitor.transport.writer import MonitoringWriter

    config = getattr(writer, "config", None)
    if config is None or MonitoringWriter.get_instance_sync() is not None:
        return None
    before = llm_settings.SETTINGS
    llm_settings.configure(config)
    return before, llm_settings.SETTINGS


def _restore_settings(settings: Any) -> None:
    """Put the settings from before back -- unless monitoring started since made
    its own (``initialize_monitoring`` after the server): those stay."""
    from llamonitor.llm import _settings as llm_settings
    from llamonitor.llm import pricing
    from llamonitor.transport.writer import MonitoringWriter

    before, installed = settings
    if llm_settings.SETTINGS is not installed or MonitoringWriter.get_instance_sync() is not None:
        return
    llm_settings.SETTINGS = before
    pricing.reset()


def receivers(
    config: ServerConfig, writer: Any, owned: bool, grpc_port: int | None = None
) -> Receivers | None:
    """The ingestor over ``writer`` and, with a port, the gRPC server.

    Raises:
        ConfigurationError: the gRPC port cannot be bound (the writer, if
            owned, is stopped first).
    """
    if writer is None or not config.otlp:
        if owned and writer is not None:
            writer.stop(WRITER_STOP_SECONDS)
        return None
    ingestor = Ingestor(writer, owned, config.otlp_max_decompressed_bytes)
    out = Receivers(ingestor, settings=_own_settings(writer) if owned else None)
    port = config.otlp_grpc_port if grpc_port is None else grpc_port
    if port is not None:
        from llamonitor.server._otlp_grpc import start_grpc

        try:
            out.grpc = start_grpc(
                ingestor, config.host, port, config.token_value, config.otlp_max_body_bytes
            )
        except BaseException:
            out.close()
            raise
    return out
