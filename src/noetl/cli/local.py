"""`noetl run`: a playbook run to its end in this process, on the embedded store.

Free of typer and rich, so the fast entry (`noetl.cli.entry`) runs a playbook without importing
the rest of the command line; the typer command calls the same function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from noetl import status
from noetl.cli import common
from noetl.cli.common import EXIT_FAILED, EXIT_OK


def run_local(
    file: Path,
    assignments: list[str],
    payload: str | None,
    store: str | None,
    *,
    as_json: bool = False,
    concurrency: int = 16,
    quiet: bool = False,
    strict: bool = False,
    log_level: str | None = None,
) -> int:
    """Run the playbook in `file`; the exit code (0 COMPLETED, 1 FAILED/CANCELLED). Bad input
    ends the command with exit 2 (`common.die`). `strict`: a template reading an undefined name
    fails its step."""
    common.setup_logging(log_level, "WARNING")  # first: a bad setting ends the command here
    from noetl.dsl import load_playbook
    from noetl.errors import PlaybookError

    try:
        playbook = load_playbook(file)
    except PlaybookError as exc:
        common.die(str(exc))
    workload = common.build_workload(payload, assignments)
    store_obj = common.open_store(store)
    common.fork_tool_zygote()
    outcome = _run(playbook, workload, store_obj, concurrency=concurrency, quiet=quiet, strict=strict)
    if as_json:
        common.print_json(outcome.to_json())
    else:
        _print_outcome(outcome)
    return EXIT_OK if outcome.status == status.COMPLETED else EXIT_FAILED


def _run(
    playbook: Any, workload: dict[str, Any], store: Any, *, concurrency: int, quiet: bool, strict: bool
) -> Any:
    """The run's masked `noetl.sdk.RunResult` (the runtime is the Python API's)."""
    import asyncio

    from noetl.sdk import cancel_and_wait, local_runtime, to_result

    async def main() -> Any:
        progress = None
        if not quiet:
            from noetl.cli.progress import Progress

            progress = Progress()
        async with local_runtime(store, concurrency=concurrency, on_event=progress) as runtime:
            task = asyncio.create_task(runtime.run(playbook, workload, strict=strict))
            try:
                if progress is None:
                    return await asyncio.shield(task)
                with progress:
                    return await asyncio.shield(task)
            except asyncio.CancelledError:
                # Ctrl-C: record the cancellation in the log, then report the outcome.
                if await cancel_and_wait(runtime, task, "interrupted (Ctrl-C)"):
                    return task.result()
                raise

    try:
        return to_result(asyncio.run(main()))
    except KeyboardInterrupt:
        common.die("interrupted before the execution started", EXIT_FAILED)
    finally:
        store.close()


def _print_outcome(outcome: Any) -> None:
    """A run's end for people (`outcome` is already masked)."""
    out = sys.stdout
    out.write(f"execution {outcome.execution_id}: {outcome.status}\n")
    if outcome.error:
        out.write(f"error: {outcome.error}\n")
    if outcome.status == status.COMPLETED:
        out.write("result: " + common.pretty(outcome.result) + "\n")
    out.flush()
