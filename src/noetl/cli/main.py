"""`noetl` command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noetl import __version__
from noetl.cli import common, credential, remote, runs, schedule, server, subscription, token
from noetl.cli.common import EXIT_FAILED, EXIT_OK, LogLevelOption, ServerOption, StoreOption

app = typer.Typer(
    name="noetl",
    help="NoETL: run declarative, event-sourced workflow playbooks.",
    no_args_is_help=True,
    add_completion=True,  # `noetl --install-completion` (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
)
app.add_typer(credential.app, name="credential")
app.add_typer(server.app, name="server")
app.add_typer(schedule.app, name="schedule", rich_help_panel="Server")
app.add_typer(subscription.app, name="subscription", rich_help_panel="Server")
app.add_typer(token.app, name="token", rich_help_panel="Server")
remote.install(app)  # register, exec, status, cancel, catalog, worker
runs.install(app)  # runs, logs


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"noetl {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """NoETL: run declarative, event-sourced workflow playbooks."""


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Playbook YAML file.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Workload value key=value (repeatable; JSON values allowed)."),
    ] = None,
    payload: Annotated[
        str | None, typer.Option("--payload", help="Workload overrides as a JSON object.")
    ] = None,
    store: StoreOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object with the outcome.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Commands run at the same time.")
    ] = 16,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="A template reading an undefined name fails its step (not just null)."),
    ] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Run a playbook locally on the embedded store."""
    from noetl.cli.local import run_local

    code = run_local(
        file,
        set_ or [],
        payload,
        store,
        as_json=as_json,
        concurrency=concurrency,
        quiet=quiet,
        strict=strict,
        log_level=log_level,
    )
    raise typer.Exit(code)


@app.command()
def events(
    execution_id: Annotated[int, typer.Argument(help="Execution id.")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as one JSON array.")] = False,
    server: ServerOption = None,
) -> None:
    """Show the event log of one execution, oldest first (local store; a server with --server)."""
    if server is not None:
        rows = runs.events_from_server(execution_id, server)
    else:
        store_obj = common.open_store(store)
        try:
            rows = [e.to_dict() for e in store_obj.read(execution_id)]
        finally:
            store_obj.close()
    if not rows:
        common.die(f"no events for execution {execution_id}", EXIT_FAILED)
    if as_json:
        common.print_json(rows)
        return
    for event in rows:
        typer.echo(
            f"{event['created_at']}  {event['event_id']}  {event['event_type']:<20} "
            f"{event.get('node_name') or '':<28} {event.get('status') or ''}"
        )


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Playbook YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as one JSON array.")] = False,
) -> None:
    """Check a playbook without running it: its structure, unknown keys, every template and the
    names it reads, and steps that can never run. Exits 2 on errors (warnings alone exit 0)."""
    from noetl.dsl.lint import ERROR, lint_file

    findings = lint_file(file)
    errors = sum(1 for f in findings if f.severity == ERROR)
    if as_json:
        common.print_json([f.to_json() for f in findings])
    else:
        for finding in findings:
            typer.echo(str(finding))
        warnings = len(findings) - errors
        if errors:
            typer.echo(f"{file}: {errors} error(s), {warnings} warning(s)", err=True)
        else:
            suffix = f", {warnings} warning(s)" if warnings else ""
            typer.echo(f"ok: {file}{suffix}")
    if errors:
        raise typer.Exit(common.EXIT_INVALID)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
