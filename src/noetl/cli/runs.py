"""Run history on the command line, from a server or a local store:

    noetl runs [--status S] [--playbook PATH] [--limit N]   recent runs, newest first
    noetl logs EXECUTION [STEP]                              stdout, stderr, errors, attempts
    noetl events EXECUTION --server URL                      the event log, from a server

`runs` and `logs` ask the server (`--server`, default NOETL_SERVER_URL) unless `--store` names a
local store; `events` reads the local store unless `--server` is given. Only typer and the
standard library are imported here; the store or the HTTP client is imported by the command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from noetl.cli import common
from noetl.cli.common import EXIT_FAILED, JsonOption, ServerOption

LocalStoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="Read a local store (sqlite:///file.db, postgresql://...) instead of a server."
    ),
]


def install(app: typer.Typer) -> None:
    panel = "History"
    app.command("runs", rich_help_panel=panel)(runs)
    app.command("logs", rich_help_panel=panel)(logs)


def runs(
    status: Annotated[
        str | None, typer.Option("--status", help="RUNNING, COMPLETED, FAILED or CANCELLED.")
    ] = None,
    playbook: Annotated[
        str | None, typer.Option("--playbook", help="Only runs of this playbook path.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="How many runs.")] = 20,
    server: ServerOption = None,
    store: LocalStoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List recent runs, newest first."""
    if store is not None:
        from noetl.observability.history import RunQuery, list_runs

        store_obj = common.open_store(store)
        try:
            page = list_runs(store_obj, RunQuery(status=status, playbook=playbook, limit=limit))
        finally:
            store_obj.close()
    else:
        page = _from_server(server, lambda c: c.runs(status=status, playbook=playbook, limit=limit))
    rows = page.get("runs") or []
    if as_json:
        common.print_json(rows)
        return
    if not rows:
        typer.echo("no runs")
        return
    typer.echo(f"{'EXECUTION':<20} {'STATUS':<10} {'STARTED':<24} {'DURATION':>10}  PLAYBOOK")
    for row in rows:
        typer.echo(
            f"{row['execution_id']:<20} {row['status']:<10} {row['started_at'] or '':<24} "
            f"{_duration(row.get('duration_ms')):>10}  {row.get('path') or ''}"
        )


def logs(
    execution_id: Annotated[str, typer.Argument(help="Execution id.")],
    step: Annotated[str | None, typer.Argument(help="Only this step.")] = None,
    server: ServerOption = None,
    store: LocalStoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what a run's steps printed: each attempt's stdout, stderr and errors."""
    if not execution_id.isdigit():
        common.die(f"an execution id is a number, got {execution_id!r}")
    if store is not None:
        from noetl.errors import NotFound
        from noetl.observability import history

        store_obj = common.open_store(store)
        try:
            body = history.logs(store_obj, int(execution_id), step)
        except NotFound as exc:
            common.die(str(exc), EXIT_FAILED)
        finally:
            store_obj.close()
    else:
        body = _from_server(server, lambda c: c.run_logs(execution_id, step))
    if as_json:
        common.print_json(body)
        return
    typer.echo(f"execution {execution_id}: {body.get('status')}")
    for attempt in body.get("attempts") or []:
        _print_attempt(attempt)


def _print_attempt(attempt: dict[str, Any]) -> None:
    where = f"[{attempt['iteration']}]" if attempt.get("iteration") is not None else ""
    typer.echo(
        f"\n== {attempt['step']}{where}  attempt {attempt['attempt']}  {attempt['status']}"
        f"  {_duration(attempt.get('duration_ms'))}  worker {attempt.get('worker_id') or '-'}"
        f"  ({attempt['command_id']})"
    )
    for name in ("stdout", "stderr"):
        text = attempt.get(name)
        if text:
            typer.echo(f"-- {name}:")
            typer.echo(text.rstrip("\n"))
    for error in attempt.get("errors") or []:
        typer.echo(f"-- error: {error}")


def events_from_server(execution_id: int, server: str) -> list[dict[str, Any]]:
    """`noetl events ID --server URL`: the event log as the server has it (a 404 is an error)."""
    rows: list[dict[str, Any]] = _from_server(server, lambda c: c.events(execution_id))
    return rows


def _from_server(server: str | None, ask: Any) -> Any:
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            return ask(client)
        except NoetlError as exc:
            common.fail(exc)


def _duration(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "-"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


__all__ = ["events_from_server", "install", "logs", "runs"]
