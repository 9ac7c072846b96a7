"""`noetl server start`: the control-plane HTTP API (FastAPI/uvicorn are imported only here, when
the command runs, so `noetl run` starts fast)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

app = typer.Typer(help="Run the control-plane HTTP server.", no_args_is_help=True)


@app.callback()
def _server() -> None:
    """Run the control-plane HTTP server."""


def redact(url: str) -> str:
    """A store URL fit to print: the password (if any) replaced by ***."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


@app.command("start")
def start(
    host: Annotated[str, typer.Option("--host", envvar="NOETL_HOST", help="Address to bind.")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option("--port", envvar="NOETL_PORT", min=1, max=65535, help="Port to listen on.")
    ] = 8082,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="NOETL_STORE_URL",
            help="Store URL (sqlite:///file.db, postgresql://...); default: a file in the user data dir.",
        ),
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            envvar="NOETL_BUS_URL",
            help="Command bus URL: inproc:// (default); nats:// is not supported yet.",
        ),
    ] = None,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Also run commands in this process.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Commands the in-process worker runs at once.")
    ] = 8,
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = None,
) -> None:
    """Serve the control-plane API (OpenAPI docs at /docs) until interrupted."""
    from noetl import logs
    from noetl.errors import NoetlError
    from noetl.store import default_store_url

    logs.setup(log_level)
    try:
        from noetl.api.server import public_url, serve
    except ImportError as exc:
        typer.echo(
            f"error: the server needs the 'server' extra (pip install 'noetl[server]'): {exc}", err=True
        )
        raise typer.Exit(2) from exc
    store_url = store or default_store_url()
    worker_text = f"in-process worker x{workers}" if with_worker else "no in-process worker"
    typer.echo(
        f"noetl server on {public_url(host, port)} (store {redact(store_url)}, {worker_text})", err=True
    )
    try:
        serve(store_url, host, port, with_worker=with_worker, workers=workers, bus_url=bus)
    except NoetlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
