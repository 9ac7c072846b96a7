"""`noetl schedule ...`: schedules on a server (`/api/schedules`).

    noetl schedule add NAME PATH --cron '0 3 * * *' [--timezone Europe/Paris] [--payload JSON]
    noetl schedule add NAME PATH --every 5m [--catchup skip|one|all] [--max-active N --overlap queue]
    noetl schedule list | show ID | pause ID | resume ID | rm ID | trigger ID

An ID is a schedule id or a schedule name. Every command takes `--server` and sends the token
the other remote commands send (NOETL_API_TOKEN, else the local token file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noetl.cli import common
from noetl.cli.common import JsonOption, ServerOption

if TYPE_CHECKING:
    from noetl.triggers.client import TriggerClient

app = typer.Typer(help="Cron and interval schedules on a server.", no_args_is_help=True)
KIND = "schedules"
IdArgument = Annotated[str, typer.Argument(help="Schedule id or name.")]


def trigger_client(server: str | None) -> TriggerClient:
    """A client for `--server` with the API token (as `common.server_client`)."""
    from noetl.tokens import client_token
    from noetl.triggers.client import TriggerClient

    config = common.load_settings()
    return TriggerClient(server or config.server_url, token=client_token(config.api_token, config.token_file))


def call(server: str | None, work: Callable[[TriggerClient], Any]) -> Any:
    """Run `work` with a client; a server error ends the command (exit 1, 2 for bad input)."""
    from noetl.errors import NoetlError, NotFound, ValidationFailed

    client = trigger_client(server)
    try:
        return work(client)
    except NoetlError as exc:
        common.fail(exc, invalid=(ValidationFailed, NotFound))
    finally:
        client.close()


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Schedule name (unique).")],
    path: Annotated[str, typer.Argument(help="Catalog path of the playbook.")],
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron expression (5 fields, or 6 with seconds first).")
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help="Interval: 30s, 5m, 1h30m, 1d.")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of --cron.")] = "UTC",
    payload: Annotated[
        str | None, typer.Option("--payload", help="Workload of each run (JSON object).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Workload value key=value (repeatable).")
    ] = None,
    catchup: Annotated[str, typer.Option("--catchup", help="Missed ticks: skip, one or all.")] = "one",
    max_active: Annotated[
        int | None, typer.Option("--max-active", min=1, help="Runs allowed at once.")
    ] = None,
    overlap: Annotated[
        str, typer.Option("--overlap", help="A tick at --max-active: skip or queue.")
    ] = "skip",
    pool: Annotated[str | None, typer.Option("--pool", help="Execution pool of the runs.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Create a schedule of a registered playbook."""
    if (cron is None) == (every is None):
        common.die("give exactly one of --cron and --every")
    body: dict[str, Any] = {
        "name": name,
        "path": path,
        "timezone": timezone,
        "payload": common.build_workload(payload, set_ or []),
        "catchup": catchup,
        "overlap": overlap,
        "enabled": not paused,
    }
    body.update(
        {k: v for k, v in (("cron", cron), ("every", every), ("max_active", max_active)) if v is not None}
    )
    if pool:
        body["execution_pool"] = pool
    show_one(call(server, lambda c: c.create(KIND, body)), as_json)


@app.command("list")
def list_(as_json: JsonOption = False, server: ServerOption = None) -> None:
    """List schedules with their next run and latest tick."""
    items = call(server, lambda c: c.items(KIND))
    if as_json:
        common.print_json({"items": items})
        return
    if not items:
        typer.echo("no schedules", err=True)
    for item in items:
        typer.echo(summary(item))


@app.command("show")
def show(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """One schedule and its latest ticks."""

    def work(client: TriggerClient) -> dict[str, Any]:
        item_id = client.resolve(KIND, ref)
        return {
            **client.one(KIND, item_id),
            "ticks": client.listing(KIND, item_id, "ticks", limit=10)["items"],
        }

    item = call(server, work)
    if as_json:
        common.print_json(item)
        return
    typer.echo(summary(item))
    for tick in item["ticks"]:
        typer.echo(
            f"  {tick['tick_at']}  {tick['status']:<8} {tick.get('execution_id') or ''} {tick.get('error') or ''}"
        )


def _set_enabled(ref: str, enabled: bool, as_json: bool, server: str | None) -> None:
    item = call(server, lambda c: c.change(KIND, c.resolve(KIND, ref), {"enabled": enabled}))
    show_one(item, as_json)


@app.command("pause")
def pause(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Stop starting runs (ticks while paused are not caught up)."""
    _set_enabled(ref, False, as_json, server)


@app.command("resume")
def resume(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Start runs again from the next tick."""
    _set_enabled(ref, True, as_json, server)


@app.command("rm")
def rm(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Delete a schedule (its runs are kept)."""
    answer = call(server, lambda c: c.remove(KIND, c.resolve(KIND, ref)))
    if as_json:
        common.print_json(answer)
    else:
        typer.echo(f"deleted schedule {answer.get('schedule_id')}")


@app.command("trigger")
def trigger(ref: IdArgument, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Run the schedule now."""
    tick = call(server, lambda c: c.action(KIND, c.resolve(KIND, ref), "trigger"))
    if as_json:
        common.print_json(tick)
    else:
        typer.echo(f"execution {tick.get('execution_id')} {tick.get('status')}")


def show_one(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        common.print_json(item)
    else:
        typer.echo(summary(item))


def summary(item: dict[str, Any]) -> str:
    timing = (
        f"cron {item.get('cron')} {item.get('timezone')}"
        if item.get("cron")
        else f"every {item.get('every')}s"
    )
    state = "enabled" if item.get("enabled") else "paused"
    last = item.get("last_tick") or {}
    last_text = f"last {last.get('tick_at')} {last.get('status')}" if last else "never ran"
    return (
        f"{item.get('schedule_id')}  {item.get('name')}  {item.get('path')}  {timing}  {state}"
        f"  next {item.get('next_run_at') or '-'}  {last_text}"
    )
