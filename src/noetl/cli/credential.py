"""`noetl credential add|list|show|rm`: credentials stored encrypted, in the local store (`--store`,
else NOETL_STORE_URL, else the default file) or on a server through its API (`--server URL`, or
NOETL_SERVER_URL when it is set and `--store` is not given), with the API token.

`--type` is one of the types the tools accept (`noetl.credtypes`); anything else is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noetl.cli import common
from noetl.cli.common import EXIT_FAILED, StoreOption
from noetl.credtypes import credential_type, credential_types_text

if TYPE_CHECKING:
    from noetl.client import ServerClient

app = typer.Typer(help="Manage credentials (stored encrypted at rest).", no_args_is_help=True)

_SHOWN = frozenset(
    {
        "db_host",
        "host",
        "db_port",
        "port",
        "db_name",
        "database",
        "dbname",
        "db_user",
        "user",
        "username",
        "header",
        "region",
        "account",
        "warehouse",
        "schema",
        "role",
    }
)


def parse_credential(
    name: str | None, type_: str | None, data: str | None, file: Path | None, description: str | None
) -> dict[str, Any]:
    """A credential document from the flags or from an upstream-shaped JSON file
    `{name, type, data: {...}, description?, tags?}`."""
    doc: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            common.die(f"cannot read credential file {file}: {exc}")
        if not isinstance(loaded, dict):
            common.die(f"credential file {file} must hold a JSON object")
        doc.update(loaded)
    if name:
        doc["name"] = name
    if type_:
        doc["type"] = type_
    if data is not None:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            common.die(f"--data is not valid JSON: {exc}")
        if not isinstance(parsed, dict):
            common.die("--data must be a JSON object")
        doc["data"] = parsed
    if description:
        doc["description"] = description
    for key in ("name", "type"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            common.die(f"a credential needs a '{key}' (give it as an argument/option or in the file)")
    if not isinstance(doc.get("data"), dict):
        common.die("a credential needs 'data', a JSON object (--data '{...}' or a file with a 'data' key)")
    canonical = credential_type(doc["type"])
    if canonical is None:
        common.die(f"unknown credential type '{doc['type']}': the tools accept {credential_types_text()}")
    doc["type"] = canonical
    return doc


ServerFlag = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Manage the credentials of this server (its API, with the API token); "
        "default: NOETL_SERVER_URL when set, else the local store.",
    ),
]


def _server(server: str | None, store: str | None) -> ServerClient | None:
    """The server client when the command acts on a server, None for the local store."""
    from noetl.settings import explicit_server_url

    if server is not None and store is not None:
        common.die("--server and --store name two different places: give one")
    if server is None and store is None:
        common.load_settings()  # a bad setting ends the command here
        server = explicit_server_url()
    return common.server_client(server) if server is not None else None


def _call(client: ServerClient, action: Any) -> Any:
    """`action(client)`, a server error ending the command (not found: exit 1)."""
    from noetl.errors import NoetlError, ValidationFailed

    with client:
        try:
            return action(client)
        except NoetlError as exc:
            common.fail(exc, invalid=(ValidationFailed,))


@app.command("add")
def add(
    name: Annotated[
        str | None, typer.Argument(help="Credential name (the alias playbooks use in `auth:`).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help=f"The credential type; one of {credential_types_text()}.")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="The secret fields as a JSON object.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Upstream-shaped JSON file {name, type, data}.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    store: StoreOption = None,
    server: ServerFlag = None,
) -> None:
    """Add or replace a credential."""
    from noetl.store.ports import StoredCredential

    doc = parse_credential(name, type_, data, file, description)
    client = _server(server, store)
    if client is not None:
        body = {k: doc[k] for k in ("name", "type", "data", "description", "tags") if doc.get(k) is not None}
        _call(client, lambda c: c.credential_put(body))
        typer.echo(f"credential '{doc['name']}' ({doc['type']}) saved on {client.base_url}")
        return
    tags = doc.get("tags") or ()
    credential = StoredCredential(
        name=doc["name"],
        type=doc["type"],
        data=doc["data"],
        description=doc.get("description"),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
    )
    target = common.open_store(store)
    try:
        target.put_credential(credential)
    finally:
        target.close()
    typer.echo(f"credential '{credential.name}' ({credential.type}) saved")


@app.command("list")
def list_(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: ServerFlag = None,
) -> None:
    """List credentials (names and types, never secrets)."""
    client = _server(server, store)
    if client is not None:
        found = _call(client, lambda c: c.credentials())
        rows = [{k: item.get(k) for k in ("name", "type", "description")} for item in found]
    else:
        target = common.open_store(store)
        try:
            items = target.list_credentials()
        finally:
            target.close()
        rows = [{"name": c.name, "type": c.type, "description": c.description} for c in items]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['name']:<30} {row['type']:<14} {row['description'] or ''}")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument()],
    reveal: Annotated[bool, typer.Option("--reveal", help="Print secret values in clear text.")] = False,
    store: StoreOption = None,
    server: ServerFlag = None,
) -> None:
    """Show one credential; secret fields are masked unless --reveal (local store only: a server
    never returns secret data)."""
    from noetl.secrets import MASK

    client = _server(server, store)
    if client is not None:
        if reveal:
            common.die("a server never returns secret data; --reveal works on a local store only")
        body = _call(client, lambda c: c.credential(name))
        doc = {k: body.get(k) for k in ("name", "type", "description", "created_at", "updated_at")}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    target = common.open_store(store)
    try:
        credential = target.get_credential(name)
    finally:
        target.close()
    if credential is None:
        common.die(f"credential '{name}' not found", EXIT_FAILED)
    data = {k: (v if reveal or k in _SHOWN else MASK) for k, v in credential.data.items()}
    doc = {
        "name": credential.name,
        "type": credential.type,
        "description": credential.description,
        "data": data,
    }
    typer.echo(json.dumps(doc, indent=2, default=str))


@app.command("rm")
def rm(name: Annotated[str, typer.Argument()], store: StoreOption = None, server: ServerFlag = None) -> None:
    """Delete a credential."""
    client = _server(server, store)
    if client is not None:
        _call(client, lambda c: c.credential_delete(name))
        typer.echo(f"credential '{name}' deleted on {client.base_url}")
        return
    target = common.open_store(store)
    try:
        deleted = target.delete_credential(name)
    finally:
        target.close()
    if not deleted:
        common.die(f"credential '{name}' not found", EXIT_FAILED)
    typer.echo(f"credential '{name}' deleted")
