"""`noetl credential add|list|show|rm`: credentials stored encrypted in the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from noetl.cli import common
from noetl.cli.common import EXIT_FAILED, StoreOption

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
    return doc


@app.command("add")
def add(
    name: Annotated[
        str | None, typer.Argument(help="Credential name (the alias playbooks use in `auth:`).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="postgres, http_bearer, api_key, basic, ...")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="The secret fields as a JSON object.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Upstream-shaped JSON file {name, type, data}.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    store: StoreOption = None,
) -> None:
    """Add or replace a credential."""
    from noetl.store.ports import StoredCredential

    doc = parse_credential(name, type_, data, file, description)
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
def list_(store: StoreOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List credentials (names and types, never secrets)."""
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
) -> None:
    """Show one credential; secret fields are masked unless --reveal."""
    from noetl.secrets import MASK

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
def rm(name: Annotated[str, typer.Argument()], store: StoreOption = None) -> None:
    """Delete a credential."""
    target = common.open_store(store)
    try:
        deleted = target.delete_credential(name)
    finally:
        target.close()
    if not deleted:
        common.die(f"credential '{name}' not found", EXIT_FAILED)
    typer.echo(f"credential '{name}' deleted")
