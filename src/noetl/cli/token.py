"""`noetl token create|list|revoke`: the server's API tokens, managed with the admin token.

A token is shown once, when it is made (`create` prints it alone on stdout, so
`TOKEN=$(noetl token create --scope worker)` works); the server keeps only its hash.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from noetl.cli import common
from noetl.cli.common import JsonOption, ServerOption

app = typer.Typer(help="API tokens of a server (needs its admin token).", no_args_is_help=True)
SCOPES = ("admin", "worker", "read")


@app.command("create")
def create(
    scope: Annotated[str, typer.Option("--scope", help="worker, read or admin.")],
    name: Annotated[
        str | None, typer.Option("--name", help="A unique name (default: <scope>-<random>).")
    ] = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token; it is printed once (stdout), keep it safe."""
    from noetl.errors import NoetlError, ValidationFailed

    if scope not in SCOPES:
        common.die(f"--scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    chosen = name or f"{scope}-{secrets.token_hex(4)}"
    with common.server_client(server) as client:
        try:
            answer = client.token_create(chosen, scope)
        except NoetlError as exc:
            common.fail(exc, invalid=(ValidationFailed,))
    if as_json:
        common.print_json(answer)
        return
    typer.echo(f"token '{answer.get('name')}' ({answer.get('scope')}); shown only now:", err=True)
    typer.echo(str(answer.get("token")))


@app.command("list")
def list_(server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Every token (revoked ones too), without the secrets."""
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            rows = client.tokens()
        except NoetlError as exc:
            common.fail(exc)
    if as_json:
        common.print_json(rows)
        return
    for row in rows:
        state = "active" if row.get("active") else f"revoked {row.get('revoked_at')}"
        typer.echo(f"{row.get('name')!s:<32} {row.get('scope')!s:<7} {row.get('created_at')!s:<26} {state}")


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    server: ServerOption = None,
) -> None:
    """Revoke a token: it stops working at once on this server (within seconds on others)."""
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            client.token_revoke(name)
        except NoetlError as exc:
            common.fail(exc)
    typer.echo(f"token '{name}' revoked")
