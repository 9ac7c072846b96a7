"""`noetl server start`: the control-plane HTTP API (FastAPI/uvicorn are imported only here, when
the command runs, so `noetl run` starts fast)."""

from __future__ import annotations

from typing import Annotated

import typer

from noetl.cli import common
from noetl.cli.common import LogLevelOption, StoreOption
from noetl.secrets import redact_url

app = typer.Typer(help="Run the control-plane HTTP server.", no_args_is_help=True)


@app.callback()
def _server() -> None:
    """Run the control-plane HTTP server."""


@app.command("start")
def start(
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to bind; default: NOETL_HOST or 127.0.0.1 (loopback only; 0.0.0.0 for every interface).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port to listen on; default: NOETL_PORT or 8082."),
    ] = None,
    store: StoreOption = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="Command bus URL (nats://host:4222); default: NOETL_BUS_URL, else in-process (inproc://).",
        ),
    ] = None,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Also run commands in this process.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Commands the in-process worker runs at once.")
    ] = 8,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help="File holding the admin token (created, mode 0600, when missing); "
            "default: NOETL_API_TOKEN, else NOETL_TOKEN_FILE, else api-token in the data dir.",
        ),
    ] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Serve the control-plane API (OpenAPI docs at /docs) until interrupted. Every /api route
    needs the admin token or a token made with `noetl token create`."""
    common.setup_logging(log_level, "WARNING")  # first: a bad setting ends the command here
    config = common.load_settings()
    from noetl.errors import NoetlError
    from noetl.store import default_store_url

    try:
        from noetl.api.server import public_url, serve
    except ImportError as exc:
        common.die(f"the server needs the 'server' extra (pip install 'noetl[server]'): {exc}")
    host = host if host is not None else config.host
    port = port if port is not None else config.port
    store_url = store or default_store_url()
    worker_text = f"in-process worker x{workers}" if with_worker else "no in-process worker"
    admin_token, where = admin_token_of(token_file, config.api_token, config.token_file)
    where_to = f"noetl server on {public_url(host, port)} (store {redact_url(store_url)}, {worker_text})"
    typer.echo(f"{where_to}; admin token: {where}; web UI: {public_url(host, port)}/ui", err=True)
    try:
        serve(store_url, host, port, with_worker=with_worker, workers=workers, bus_url=bus or config.bus_url,
              admin_token=admin_token)  # fmt: skip
    except NoetlError as exc:
        common.die(str(exc))


def admin_token_of(flag_file: str | None, api_token: str | None, env_file: str | None) -> tuple[str, str]:
    """The server's admin token and where it comes from: --token-file, else NOETL_API_TOKEN, else
    NOETL_TOKEN_FILE or the default token file (created with a new token on the first start)."""
    from pathlib import Path

    from noetl.tokens import default_token_file, ensure_token_file

    if api_token and not flag_file:
        return api_token, "NOETL_API_TOKEN"
    token_file = flag_file or env_file
    path = Path(token_file) if token_file else default_token_file()
    try:
        return ensure_token_file(path), f"in {path}"
    except OSError as exc:
        common.die(f"cannot read or create the admin token file {path}: {exc}")
