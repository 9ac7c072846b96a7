"""Commands that talk to a NoETL server (`docs/api.md`):

    noetl register FILE                       register a playbook in the server's catalog
    noetl exec PATH [--wait] [--json]         start an execution of a catalog playbook
    noetl status ID / noetl cancel ID         follow or stop an execution
    noetl catalog list                        list catalog entries
    noetl worker start                        run a worker process that polls the server

Every command takes `--server URL` (default: NOETL_SERVER_URL, else http://localhost:8082).
Only typer and the standard library are imported here; the HTTP client is imported inside the
commands, so `noetl run` does not pay for it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from noetl.cli import common
from noetl.cli.common import EXIT_FAILED, EXIT_OK, JsonOption, ServerOption
from noetl.status import COMPLETED, TERMINAL

if TYPE_CHECKING:
    from noetl.client import ServerClient
    from noetl.settings import Settings
    from noetl.worker.remote import RemoteWorker

catalog_app = typer.Typer(help="The server's catalog of playbooks.", no_args_is_help=True)
worker_app = typer.Typer(help="Worker processes that run commands for a server.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    """Add the server commands to the `noetl` app."""
    panel = "Server"
    app.command("register", rich_help_panel=panel)(register)
    app.command("exec", rich_help_panel=panel)(exec_)
    app.command("status", rich_help_panel=panel)(status)
    app.command("cancel", rich_help_panel=panel)(cancel)
    app.add_typer(catalog_app, name="catalog", rich_help_panel=panel)
    app.add_typer(worker_app, name="worker", rich_help_panel=panel)


# ---------------------------------------------------------------------- register


def register(
    file: Annotated[Path, typer.Argument(help="Playbook YAML file.")],
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a playbook in the server's catalog (a new version when the path exists)."""
    import yaml

    from noetl.dsl.yaml_lines import load_yaml
    from noetl.errors import NoetlError, PlaybookError, ValidationFailed

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        common.die(f"cannot read {file}: {exc}")
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        common.die(f"{file}: invalid YAML: {exc}")
    if not isinstance(doc, dict):
        common.die(f"{file}: expected a YAML mapping (a playbook document)")
    kind = str(doc.get("kind") or "Playbook")
    if kind.lower() == "playbook":
        from noetl.dsl import parse_playbook

        try:
            parse_playbook(text, source=str(file))  # the same validation `noetl run` applies
        except PlaybookError as exc:
            common.die(str(exc))
    with common.server_client(server) as client:
        try:
            answer = client.register(text, resource_type=kind)
        except NoetlError as exc:
            common.fail(exc, invalid=(ValidationFailed,))
    if as_json:
        common.print_json(answer)
        return
    typer.echo(
        f"registered {answer.get('path')} version {answer.get('version')} catalog_id {answer.get('catalog_id')}"
    )


# ---------------------------------------------------------------------- exec


def exec_(
    path: Annotated[
        str, typer.Argument(help="Catalog path of a registered playbook (or a numeric catalog_id).")
    ],
    payload: Annotated[
        str | None, typer.Option("--payload", help="Workload overrides as a JSON object.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Workload value key=value (repeatable; JSON values allowed)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the execution to end; exit 0 when COMPLETED.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="With --wait: give up waiting after this many seconds."),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="Execution pool override (routes the commands).")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="A template reading an undefined name fails its step (not just null)."),
    ] = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Start an execution of a playbook registered on the server."""
    from noetl.errors import NoetlError, NotFound, ValidationFailed

    if path.endswith((".yaml", ".yml")) and Path(path).is_file():
        common.die(
            f"{path} is a file; the server runs catalog playbooks: `noetl register {path}`, then "
            f"`noetl exec <its metadata.path>` (or run it locally with `noetl run {path}`)"
        )
    workload = common.build_workload(payload, set_ or [])
    target: dict[str, Any] = {"catalog_id": path} if path.isdigit() else {"path": path}
    with common.server_client(server) as client:
        try:
            metadata = {"strict": True} if strict else None
            started = client.execute(payload=workload, execution_pool=pool, metadata=metadata, **target)
        except NoetlError as exc:
            common.fail(exc, invalid=(NotFound, ValidationFailed))
        execution_id = str(started.get("execution_id"))
        if not wait:
            _print_started(started, execution_id, as_json=as_json)
            return
        body = _wait(client, execution_id, timeout)
    _report_outcome(body, execution_id, timeout, as_json=as_json)


def _print_started(started: dict[str, Any], execution_id: str, *, as_json: bool) -> None:
    if as_json:
        common.print_json(started)
        return
    typer.echo(
        f"execution {execution_id} {started.get('status', 'started')} "
        f"({started.get('commands_generated', 0)} commands)"
    )
    typer.echo(f"follow it with: noetl status {execution_id}", err=True)


def _report_outcome(
    body: dict[str, Any], execution_id: str, timeout: float | None, *, as_json: bool
) -> NoReturn:
    """Print how a waited-for execution ended; exit 0 when it COMPLETED, else 1."""
    final = str(body.get("status") or "").upper()
    error = body.get("error") if final != COMPLETED else None
    if final not in TERMINAL:
        error = (
            f"timed out after {timeout:g}s waiting for execution {execution_id} (still {final or 'unknown'})"
        )
    # Exactly the object `noetl run --json` prints (SYSTEM.md section 5).
    outcome: dict[str, Any] = {
        "execution_id": execution_id,
        "status": final or "UNKNOWN",
        "error": error,
        "steps": body.get("steps") or {},
    }
    if as_json:
        common.print_json(outcome)
    else:
        typer.echo(f"execution {execution_id}: {outcome['status']}")
        if error:
            typer.echo(f"error: {error}")
        if final == COMPLETED:
            typer.echo("result: " + common.pretty(body.get("result")))
    raise typer.Exit(EXIT_OK if final == COMPLETED else EXIT_FAILED)


def _wait(client: ServerClient, execution_id: str, timeout: float | None) -> dict[str, Any]:
    """Poll the status until the execution ends (or `timeout` passes); progress goes to stderr."""
    from noetl.errors import NoetlError

    begin = time.monotonic()
    delay = 0.1
    last = ""
    body: dict[str, Any] = {}
    try:
        while True:
            try:
                body = client.status(execution_id)
            except NoetlError as exc:
                common.fail(exc)
            status = str(body.get("status") or "").upper()
            elapsed = time.monotonic() - begin
            line = _progress_line(body)
            if line != last:
                typer.echo(f"[{elapsed:6.1f}s] {line}", err=True)
                last = line
            if status in TERMINAL:
                return body
            if timeout is not None and elapsed >= timeout:
                return body
            pause = delay if timeout is None else max(0.0, min(delay, timeout - elapsed))
            time.sleep(pause)
            delay = min(delay * 1.5, 1.0)
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped waiting; execution {execution_id} goes on (noetl cancel {execution_id} stops it)",
            err=True,
        )
        raise typer.Exit(130) from None


def _progress_line(body: dict[str, Any]) -> str:
    status = str(body.get("status") or "?").upper()
    parts = [status]
    progress = body.get("progress")
    if isinstance(progress, dict) and progress:
        done = progress.get("completed_steps", 0)
        total = progress.get("total_steps", 0)
        parts.append(f"{done}/{total} steps done")
        if progress.get("running_steps"):
            parts.append(f"{progress['running_steps']} running")
        if progress.get("failed_steps"):
            parts.append(f"{progress['failed_steps']} failed")
    if body.get("current_step") and status not in TERMINAL:
        parts.append(f"current step: {body['current_step']}")
    return ", ".join(parts)


# ---------------------------------------------------------------------- status and cancel


def status(
    execution_id: Annotated[str, typer.Argument(help="Execution id.")],
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Show the status of an execution on the server."""
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            body = client.status(execution_id)
        except NoetlError as exc:
            common.fail(exc)
    if as_json:
        common.print_json(body)
        return
    state = str(body.get("status") or "?").upper()
    typer.echo(f"execution {body.get('execution_id', execution_id)}: {state}")
    if body.get("current_step") and state not in TERMINAL:
        typer.echo(f"current step: {body['current_step']}")
    progress = body.get("progress")
    if isinstance(progress, dict) and progress:
        typer.echo(
            f"steps: {progress.get('completed_steps', 0)} completed, {progress.get('running_steps', 0)} running, "
            f"{progress.get('failed_steps', 0)} failed"
        )
    if body.get("error"):
        typer.echo(f"error: {body['error']}")
    if body.get("result") is not None:
        typer.echo("result: " + common.pretty(body["result"]))


def cancel(
    execution_id: Annotated[str, typer.Argument(help="Execution id.")],
    cascade: Annotated[
        bool, typer.Option("--cascade/--no-cascade", help="Cancel child executions too.")
    ] = True,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded on the cancellation).")
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Cancel a running execution (and, by default, its children)."""
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            body = client.cancel(execution_id, cascade=cascade, reason=reason)
        except NoetlError as exc:
            common.fail(exc)
    if as_json:
        common.print_json(body)
        return
    typer.echo(
        f"execution {body.get('execution_id', execution_id)}: {body.get('status', 'cancelled')}"
        + (f" ({body['message']})" if body.get("message") else "")
    )


# ---------------------------------------------------------------------- catalog


@catalog_app.command("list")
def catalog_list(
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this resource kind (e.g. playbook).")
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """List catalog entries, newest first."""
    from noetl.errors import NoetlError

    with common.server_client(server) as client:
        try:
            entries = client.catalog_list(kind)
        except NoetlError as exc:
            common.fail(exc)
    if as_json:
        common.print_json({"entries": entries})
        return
    if not entries:
        typer.echo("the catalog is empty", err=True)
        return
    for entry in entries:
        typer.echo(
            f"{entry.get('path', '')!s:<50} v{entry.get('version', '')!s:<4} {entry.get('kind', '')!s:<10} "
            f"{entry.get('catalog_id', '')!s:<20} {entry.get('created_at') or ''}"
        )


# ---------------------------------------------------------------------- worker


@worker_app.command("start")
def worker_start(
    server: ServerOption = None,
    pool: Annotated[
        list[str] | None,
        typer.Option("--pool", help="Pool to take commands from (repeatable; default shared)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Commands run at the same time.")
    ] = 4,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Name to register as; default worker-<host>-<pid>.")
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="Command bus URL (nats://host:4222); default NOETL_BUS_URL. Without it (or while it is down) the worker polls the server.",
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between polls while busy.")
    ] = 0.2,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            "--heartbeat-interval",
            min=0.1,
            help="Seconds between heartbeats (they renew leases and bring cancels of running commands).",
        ),
    ] = 5.0,
    grace_period: Annotated[
        float,
        typer.Option("--grace-period", min=0, help="On stop, seconds in-flight commands get to finish."),
    ] = 30.0,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR; default: NOETL_LOG_LEVEL, else INFO."),
    ] = None,
) -> None:
    """Run a worker: poll the server for commands, run them, report the events. SIGTERM or
    Ctrl-C stops it gracefully (in-flight commands finish, then it deregisters)."""
    config, bus_url = _worker_settings(log_level, bus)
    from noetl.ids import default_ids
    from noetl.worker.remote import RemoteWorker, default_worker_id

    with common.server_client(server) as client:
        worker = RemoteWorker(
            client,
            worker_id=worker_id or default_worker_id(),
            pools=pool or ["shared"],
            concurrency=concurrency,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            ids=default_ids,  # a pinned node (NOETL_SNOWFLAKE_NODE_ID), else the one leased at registration
            leased_node=config.snowflake_node_id is None,
            bus_url=bus_url,
        )
        _serve_metrics(worker, config, client.base_url)
        _run_until_signalled(worker)


def _serve_metrics(worker: RemoteWorker, config: Settings, server_url: str) -> None:
    """`/metrics` of this worker on NOETL_WORKER_METRICS_HOST:NOETL_WORKER_METRICS_PORT (when set)."""
    if config.worker_metrics_port is None:
        return
    from noetl.observability.workermetrics import WorkerMetrics, serve_metrics
    from noetl.tokens import client_token

    metrics = WorkerMetrics()
    metrics.instrument(worker)
    host, port = config.worker_metrics_host, config.worker_metrics_port
    token = client_token(config.api_token, config.token_file)
    serve_metrics(metrics, host, int(port or 0), own_token=token, server_url=server_url)


def _worker_settings(log_level: str | None, bus: str | None) -> tuple[Settings, str | None]:
    """Logging set up, the settings, and the bus URL a worker uses."""
    import logging

    level = common.setup_logging(log_level, "INFO")  # first: a bad setting ends the command here
    if level != "DEBUG":  # one line per HTTP request is noise for a polling worker
        logging.getLogger("httpx").setLevel(logging.WARNING)
    config = common.load_settings()
    bus_url = bus or config.bus_url
    if bus_url and not bus_url.startswith(("nats://", "inproc")):
        common.die(f"unsupported bus URL {bus_url!r}: use nats://host:port")
    common.fork_tool_zygote()  # before any thread starts
    return config, bus_url


def _run_until_signalled(worker: RemoteWorker) -> None:
    """Run `worker` until SIGTERM or SIGINT asks it to stop."""
    import asyncio
    import logging
    import signal

    log = logging.getLogger("noetl.worker")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "worker %s polling %s (pools %s, concurrency %d)",
            worker.worker_id,
            worker.client.base_url,
            ",".join(worker.pools),
            worker.concurrency,
        )
        await worker.run(stop)
        log.info("worker %s stopped after %d command(s)", worker.worker_id, worker.completed)

    asyncio.run(main())
