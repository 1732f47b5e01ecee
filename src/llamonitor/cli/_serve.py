"""``llamonitor serve``: the web UI and the REST API over a store.

Imported by ``llamonitor --help``: the server's packages are imported when
the command runs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from llamonitor.cli._options import dir_option, dsn_options, store_errors


@click.command()
@dir_option
@dsn_options
@click.option(
    "--host", envvar="LLMOPS_SERVER__HOST", show_envvar=True, default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any address but loopback needs --token.",
)
@click.option(
    "--port", envvar="LLMOPS_SERVER__PORT", show_envvar=True, type=click.IntRange(0, 65535),
    default=8585, show_default=True, help="Port to listen on (0: any free port).",
)
@click.option(
    "--token", envvar="LLMOPS_SERVER__TOKEN", show_envvar=True, metavar="SECRET",
    help="Require this token (at least 16 characters) on every request.",
)
@click.option(
    "--demo", "with_demo", is_flag=True,
    help="Serve a fresh demo store (in a temporary directory) instead of --dir.",
)
@click.option(
    "--otlp/--no-otlp", envvar="LLMOPS_SERVER__OTLP", show_envvar=True, default=True,
    show_default=True,
    help="Receive OTLP/HTTP traces at /v1/traces into the store (same port and token).",
)
@click.option(
    "--otlp-grpc-port", envvar="LLMOPS_SERVER__OTLP_GRPC_PORT", show_envvar=True,
    type=click.IntRange(0, 65535), default=None,
    help="Also receive OTLP/gRPC on this port (on --host; 4317 is OTLP's); off by default.",
)
@click.option(
    "--rules", "alert_rules", envvar="LLMOPS_SERVER__ALERT_RULES", show_envvar=True,
    metavar="FILE", help="Evaluate these alert rules while serving (see docs/alerts.md).",
)
@store_errors(ImportError)
def serve(
    directory: Path,
    dsn: str | None,
    table: str | None,
    host: str,
    port: int,
    token: str | None,
    with_demo: bool,
    otlp: bool,
    otlp_grpc_port: int | None,
    alert_rules: str | None = None,
) -> None:
    """Serve the web UI and the REST API over the store, and receive OTLP traces.

    Opens on http://127.0.0.1:8585/ by default: dashboard, traces, sessions,
    report and a live tail of the spans as they land. The API's schema is
    at /api/openapi.json. OpenTelemetry spans sent to /v1/traces (OTLP/HTTP,
    protobuf or JSON) are written into the store: point an OTLP exporter at
    http://127.0.0.1:8585 (see docs/otel-ingest.md).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "llamonitor serve needs the server extra: pip install 'llamonitor[server]'"
        ) from None
    from llamonitor.server._run import serve_forever
    from llamonitor.server._settings import ServerConfig
    from llamonitor.server._store import open_server_store

    config = ServerConfig(
        host=host, port=port, token=token, otlp=otlp, otlp_grpc_port=otlp_grpc_port,
        alert_rules=alert_rules,
    ).check()
    if alert_rules:
        from llamonitor.quality._alert_rules import load_rules

        load_rules(alert_rules)  # a bad rule file fails now, naming the line
    if with_demo:
        from llamonitor.cli._demo import run_demo

        directory = Path(tempfile.mkdtemp(prefix="llamonitor-demo-"))
        dsn = None
        run_demo(directory, 7, first_run=True)
    store = open_server_store(
        directory, dsn, table, config.query_workers, config.query_timeout_seconds
    )

    receive = None
    if config.otlp:
        from llamonitor.cli._options import _use_dsn
        from llamonitor.server._receive import own_writer, receivers

        try:
            writer = own_writer(directory, dsn if _use_dsn(dsn) else None, table)
            receive = receivers(config, writer, owned=True)
        except BaseException:
            store.close()
            raise

    def announce(url: str) -> None:
        click.echo(f"llamonitor serving {store.info.label} at {url}")
        if receive is not None:
            click.echo(f"receiving OTLP/HTTP traces at {url}v1/traces")
            if receive.grpc is not None:
                click.echo(f"receiving OTLP/gRPC traces on {config.host}:{receive.grpc.port}")
        if config.token is not None:
            click.echo("every request needs the token: open the page once with ?token=<token>")
        click.echo("press Ctrl-C to stop", err=True)

    try:
        serve_forever(store, config, announce, receive)
    finally:
        store.close()
        if with_demo:
            shutil.rmtree(directory, ignore_errors=True)
