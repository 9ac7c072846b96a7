"""`noetl` command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from noetl import __version__, status
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
    common.setup_logging(log_level, "WARNING")  # first: a bad setting ends the command here
    from noetl.dsl import load_playbook
    from noetl.errors import PlaybookError

    try:
        playbook = load_playbook(file)
    except PlaybookError as exc:
        common.die(str(exc))
    workload = common.build_workload(payload, set_ or [])
    store_obj = common.open_store(store)
    common.fork_tool_zygote()
    outcome = _run_local(playbook, workload, store_obj, concurrency=concurrency, quiet=quiet, strict=strict)
    from noetl.secrets import masker

    if as_json:
        common.print_json(masker.mask(outcome.to_json()))
    else:
        _print_outcome(outcome)
    raise typer.Exit(EXIT_OK if outcome.status == status.COMPLETED else EXIT_FAILED)


def _run_local(
    playbook: Any, workload: dict[str, Any], store: Any, *, concurrency: int, quiet: bool, strict: bool
) -> Any:
    import asyncio

    from noetl.cli.progress import Progress
    from noetl.runtime.local import LocalRuntime

    lease = None
    if common.load_settings().snowflake_node_id is None:  # a pinned node is not leased
        from noetl.ids import default_ids
        from noetl.runtime.nodes import NodeLease, process_owner

        lease = NodeLease(store, default_ids, process_owner("run"))

    async def main() -> Any:
        progress = None if quiet else Progress()
        window = common.load_settings().loop_window
        async with LocalRuntime(
            store, concurrency=concurrency, on_event=progress, node_lease=lease, loop_window=window
        ) as runtime:
            task = asyncio.create_task(runtime.run(playbook, workload, strict=strict))
            try:
                if progress is None:
                    return await asyncio.shield(task)
                with progress:
                    return await asyncio.shield(task)
            except asyncio.CancelledError:
                # Ctrl-C: record the cancellation in the log, then report the outcome.
                root = runtime.root_execution()
                if root is not None:
                    runtime.cancel(root, "interrupted (Ctrl-C)")
                    return await task
                raise

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        common.die("interrupted before the execution started", EXIT_FAILED)
    finally:
        store.close()


def _print_outcome(outcome: Any) -> None:
    from noetl.secrets import masker

    typer.echo(f"execution {outcome.execution_id}: {outcome.status}")
    if outcome.error:
        typer.echo(masker.mask_text(f"error: {outcome.error}"))
    if outcome.status == status.COMPLETED:
        typer.echo("result: " + masker.mask_text(common.pretty(outcome.result)))


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
