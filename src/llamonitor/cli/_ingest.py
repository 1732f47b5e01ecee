"""``llamonitor ingest``: a worker moving spans from a broker into a store.

Imported by ``llamonitor --help``: the broker clients and the store are
imported when the command runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

DEFAULT_GROUP = "llamonitor-ingest"
EXIT_SOURCE_GONE = 3


def target_config(to: str, table: str | None) -> Any:
    """The ``StorageConfig`` of a ``--to`` (a connection string, or a directory
    for Parquet files).

    Raises:
        ConfigurationError: an unsupported scheme.
    """
    from pydantic import SecretStr

    from llamonitor.schema.config import DSN_SCHEMES, ConfigurationError, StorageConfig

    extra: dict[str, Any] = {"table_name": table} if table else {}
    if "://" not in to:
        return StorageConfig(backend="parquet", output_dir=Path(to), **extra)
    scheme = to.split(":", 1)[0].split("+", 1)[0].lower()
    backend = DSN_SCHEMES.get(scheme)
    if backend is None:
        raise ConfigurationError(
            "--to", f"unsupported scheme {scheme!r}; use postgresql://, mysql://, sqlite:/// "
            "or a directory (Parquet files)"
        )
    return StorageConfig(backend=backend, connection_string=SecretStr(to), **extra)


def build_worker(
    source_url: str,
    to: str,
    *,
    table: str | None = None,
    group: str = DEFAULT_GROUP,
    consumer: str | None = None,
    claim_idle_seconds: float = 30.0,
    **settings: Any,
) -> Any:
    """An :class:`~llamonitor.cli._ingest_worker.IngestWorker` for the command's arguments."""
    from llamonitor.cli._ingest_source import open_source
    from llamonitor.cli._ingest_worker import IngestWorker
    from llamonitor.storage.base import create_backend

    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    source = open_source(source_url, group, name, claim_idle_seconds)
    target = create_backend(target_config(to, table), "--to")
    return IngestWorker(
        source, target, keep_every_seconds=max(0.5, claim_idle_seconds / 3), **settings
    )


@click.command("ingest")
@click.option("--from", "source", required=True, metavar="URL",
              help="redis://host:6379[/db]/STREAM or nats://host:4222/STREAM[?subject=SUBJECT].")
@click.option("--to", "to", required=True, metavar="DSN|DIR",
              help="postgresql://..., mysql://..., sqlite:///file, or a directory (Parquet).")
@click.option("--table", default=None, help="The target's table (default metric_events).")
@click.option("--group", default=DEFAULT_GROUP, show_default=True,
              help="Consumer group (Redis) or durable consumer (NATS) the workers share.")
@click.option("--consumer", default=None, help="This worker's name (default host-pid).")
@click.option("--batch", "batch_messages", type=click.IntRange(min=1), default=64,
              show_default=True, help="Messages fetched and written together.")
@click.option("--claim-idle", "claim_idle_seconds", type=click.FloatRange(min=0.1),
              default=30.0, show_default=True,
              help="Seconds before another worker's unacknowledged messages are taken over.")
@click.option("--grace", "shutdown_grace_seconds", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="On SIGTERM, seconds to finish the batch in hand.")
@click.option("--idle-exit", "idle_exit_seconds", type=click.FloatRange(min=0), default=None,
              help="Exit once nothing arrived for this many seconds (batch jobs, tests).")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics ([prometheus] extra).")
def ingest(
    source: str,
    to: str,
    table: str | None,
    group: str,
    consumer: str | None,
    batch_messages: int,
    claim_idle_seconds: float,
    shutdown_grace_seconds: float,
    idle_exit_seconds: float | None,
    metrics_port: int | None,
) -> None:
    """Move spans from a broker (Redis Streams, NATS JetStream) into a store.

    Run as many workers as you like on one stream: they share the work;
    messages are acknowledged only once their rows are committed, a dead
    worker's messages are taken over, and a redelivered span is never
    written twice. Undecodable messages go to the dead-letter stream.
    """
    from llamonitor.cli._ingest_source import SourceGone
    from llamonitor.schema.config import ConfigurationError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        worker = build_worker(
            source, to, table=table, group=group, consumer=consumer,
            claim_idle_seconds=claim_idle_seconds, batch_messages=batch_messages,
            shutdown_grace_seconds=shutdown_grace_seconds, idle_exit_seconds=idle_exit_seconds,
        )
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    server = None
    if metrics_port is not None:
        from llamonitor.cli._ingest_metrics import serve_metrics

        server = serve_metrics(worker, metrics_port)
        click.echo(f"metrics at {server.url}", err=True)

    import asyncio  # only when the command runs (--help stays light)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        await worker.run()

    code = 0
    try:
        asyncio.run(main())
    except SourceGone as exc:
        click.echo(f"llamonitor ingest: {exc}", err=True)
        code = EXIT_SOURCE_GONE
    finally:
        if server is not None:
            server.stop()
    h = worker.health()
    click.echo(
        f"ingested {h['spans']:,} spans from {h['messages']:,} messages "
        f"({h['redeliveries']} redelivered, {h['dead_letters']} dead-lettered, "
        f"{h['duplicates']} duplicates skipped)",
        err=True,
    )
    sys.exit(code)
