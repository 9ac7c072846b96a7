"""`noetl subscription ...`: message subscriptions on a server (`/api/subscriptions`).

    noetl subscription add NAME PATH --subject orders.created [--dedup-field id] [--workload JSON]
    noetl subscription list | show ID | pause ID | resume ID | rm ID | events ID

An ID is a subscription id or name. The servers need a NATS bus (`--bus` / NOETL_BUS_URL).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from noetl.cli import common
from noetl.cli.common import JsonOption, ServerOption
from noetl.cli.schedule import call

app = typer.Typer(help="Runs started by messages on a NATS subject.", no_args_is_help=True)
KIND = "subscriptions"
IdArgument = Annotated[str, typer.Argument(help="Subscription id or name.")]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Subscription name (unique).")],
    path: Annotated[str, typer.Argument(help="Catalog path of the playbook.")],
    subject: Annotated[str, typer.Option("--subject", help="NATS subject (wildcards allowed).")],
    stream: Annotated[
        str | None, typer.Option("--stream", help="JetStream stream (default: found or made).")
    ] = None,
    workload: Annotated[
        str | None, typer.Option("--workload", help="JSON object of templates over `message`.")
    ] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Execution pool (default subscription).")] = None,
    dedup_field: Annotated[
        str | None, typer.Option("--dedup-field", help="Payload field holding the id.")
    ] = None,
    dedup_header: Annotated[str | None, typer.Option("--dedup-header", help="Header holding the id.")] = None,
    dedup_window: Annotated[
        float | None, typer.Option("--dedup-window", help="Seconds an id is kept.")
    ] = None,
    deliver: Annotated[str | None, typer.Option("--deliver", help="new (since created) or all.")] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Run a registered playbook for each message on a subject."""
    body: dict[str, Any] = {"name": name, "path": path, "subject": subject}
    if workload:
        try:
            body["workload"] = json.loads(workload)
        except ValueError as exc:
            common.die(f"--workload is not valid JSON: {exc}")
    dedup = {
        k: v
        for k, v in (("field", dedup_field), ("header", dedup_header), ("window_secs", dedup_window))
        if v
    }
    if dedup:
        body["dedup"] = dedup
    body.update({k: v for k, v in (("stream", stream), ("execution_pool", pool), ("deliver", deliver)) if v})
    show_one(call(server, lambda c: c.create(KIND, body)), as_json)


@app.command("list")
def list_(as_json: JsonOption = False, server: ServerOption = None) -> None:
    """List subscriptions."""
    items = call(server, lambda c: c.items(KIND))
    if as_json:
        common.print_json({"items": items})
        return
    if not items:
        typer.echo("no subscriptions", err=True)
    for item in items:
        typer.echo(summary(item))


@app.command("show")
def show(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """One subscription."""
    show_one(call(server, lambda c: c.one(KIND, c.resolve(KIND, ref))), as_json)


@app.command("pause")
def pause(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Stop taking messages (they wait in the stream)."""
    show_one(call(server, lambda c: c.change(KIND, c.resolve(KIND, ref), {"enabled": False})), as_json)


@app.command("resume")
def resume(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Take messages again (those that waited too)."""
    show_one(call(server, lambda c: c.change(KIND, c.resolve(KIND, ref), {"enabled": True})), as_json)


@app.command("rm")
def rm(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Delete a subscription (its runs and audit events are kept)."""
    answer = call(server, lambda c: c.remove(KIND, c.resolve(KIND, ref)))
    if as_json:
        common.print_json(answer)
    else:
        typer.echo(f"deleted subscription {answer.get('subscription_id')}")


@app.command("events")
def events(
    ref: IdArgument,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The latest N events.")] = 100,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """The subscription's audit events (deduplicated or failed messages)."""
    body = call(server, lambda c: c.listing(KIND, c.resolve(KIND, ref), "events", limit=limit))
    if as_json:
        common.print_json(body)
        return
    for event in body.get("events", []):
        context = event.get("context") or {}
        typer.echo(f"{event.get('created_at')}  {event.get('event_type')}  key={context.get('dedup_key')}")


def show_one(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        common.print_json(item)
    else:
        typer.echo(summary(item))


def summary(item: dict[str, Any]) -> str:
    state = "enabled" if item.get("enabled") else "paused"
    dedup = item.get("dedup") or {}
    key = f"field {dedup.get('field')}" if dedup.get("field") else f"header {dedup.get('header')}"
    return (
        f"{item.get('subscription_id')}  {item.get('name')}  {item.get('path')}  subject {item.get('subject')}"
        f"  {state}  dedup {key} {dedup.get('window_secs')}s"
    )
