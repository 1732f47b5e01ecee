"""``llamonitor collect``: an OTLP receiver with no UI, writing into a store.

OTLP/HTTP on 4318 (``/v1/traces``) and OTLP/gRPC on 4317, the ports OTLP
exporters default to, on 127.0.0.1 unless ``--host`` (which needs
``--token``). Ctrl-C or SIGTERM stops it after the last request, flushing
what was received into the store.

Imported by ``llamonitor --help``: the server's packages are imported when
the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from llamonitor.cli._options import dir_option, dsn_options, store_errors


@click.command()
@dir_option
@dsn_options
@click.option(
    "--host", envvar="LLMOPS_SERVER__HOST", show_envvar=True, default="127.0.0.1",
    show_default=True, help="Address to listen on. Any address but loopback needs --token.",
)
@click.option(
    "--http-port", type=click.IntRange(0, 65535), default=4318, show_default=True,
    help="OTLP/HTTP port (0: any free port).",
)
@click.option(
    "--grpc-port", type=click.IntRange(0, 65535), default=4317, show_default=True,
    help="OTLP/gRPC port (0: any free port).",
)
@click.option("--grpc/--no-grpc", "with_grpc", default=True, show_default=True,
              help="Receive OTLP/gRPC too.")
@click.option(
    "--token", envvar="LLMOPS_SERVER__TOKEN", show_envvar=True, metavar="SECRET",
    help="Require this token (at least 16 characters): Authorization: Bearer <token>.",
)
@store_errors(ImportError)
def collect(
    directory: Path,
    dsn: str | None,
    table: str | None,
    host: str,
    http_port: int,
    grpc_port: int,
    with_grpc: bool,
    token: str | None,
) -> None:
    """Receive OpenTelemetry traces (OTLP/HTTP and OTLP/gRPC) into the store.

    GenAI, OpenInference, OpenLLMetry and Logfire spans land as llamonitor
    rows (model, tokens, cost, hierarchy); /api/health counts what was
    received and rejected.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "llamonitor collect needs the server extra: pip install 'llamonitor[server,otlp]'"
        ) from None
    try:
        import opentelemetry.proto  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "llamonitor collect needs the otlp extra: pip install 'llamonitor[server,otlp]'"
        ) from None
    from llamonitor.cli._options import _use_dsn
    from llamonitor.server._app import COLLECT_ROUTERS
    from llamonitor.server._receive import own_writer, receivers
    from llamonitor.server._run import serve_forever
    from llamonitor.server._settings import ServerConfig
    from llamonitor.server._store import open_server_store

    config = ServerConfig(
        host=host, port=http_port, token=token, otlp=True,
        otlp_grpc_port=grpc_port if with_grpc else None,
    ).check()
    dsn = dsn if _use_dsn(dsn) else None
    if dsn is None and directory.is_file():
        raise click.ClickException(f"--dir: {directory} is a file; collect writes a directory")
    store = open_server_store(
        directory, dsn, table, config.query_workers, config.query_timeout_seconds
    )
    try:
        receive = receivers(config, own_writer(directory, dsn, table), owned=True)
    except BaseException:
        store.close()
        raise

    def announce(url: str) -> None:
        click.echo(f"llamonitor collecting into {store.info.label}")
        click.echo(f"OTLP/HTTP: {url}v1/traces")
        if receive is not None and receive.grpc is not None:
            click.echo(f"OTLP/gRPC: {config.host}:{receive.grpc.port}")
        click.echo("press Ctrl-C to stop (what was received is flushed first)", err=True)

    try:
        serve_forever(store, config, announce, receive, routers=COLLECT_ROUTERS)
    finally:
        store.close()
