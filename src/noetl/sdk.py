"""The Python API: run a playbook from a program, as `noetl run` runs it.

    import noetl

    result = noetl.run("flow.yaml", workload={"who": "world"})
    if result.ok:
        print(result.steps["end"].result)

    result = await noetl.run_async("flow.yaml", sets=["n=5"])   # inside an event loop

The semantics are those of `noetl run`: the same store (`store=` a URL, else NOETL_STORE_URL, else
the file in the user data dir, where `noetl credential add` puts credentials), the same workload
merge (the playbook's `workload`, overlaid by `workload=` as `--payload` is, then by `sets=` as
`--set key=value` is: JSON when the text parses as JSON), and the same outcome: `status`
COMPLETED/FAILED/CANCELLED, `error`, each step's status and result, secrets masked. A failed run is
a result, not an exception; an invalid playbook raises `PlaybookError` (the CLI's exit 2), a bad
argument `ArgumentError`, an unusable store `StoreError` (all `NoetlError`).

Python steps still run in processes of their own. Unlike the CLI, which forks its tool fork server
from itself at start-up, the API never forks the calling program (its threads, open sockets and
files must not leak into step processes): the fork server starts as a fresh interpreter on the
first python step of each run. `run` may be called from a thread that runs an event loop (a
notebook): it then runs the playbook on a loop of its own in another thread.

Only the standard library is imported here; the engine is imported when a run starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from noetl.errors import ArgumentError

if TYPE_CHECKING:
    from noetl.dsl.model import Playbook
    from noetl.engine.events import Event
    from noetl.runtime.local import LocalRuntime, RunOutcome
    from noetl.store import Store

__all__ = ["DEFAULT_CONCURRENCY", "RunResult", "StepResult", "merge_workload", "run", "run_async"]

DEFAULT_CONCURRENCY = 16
PlaybookSource = str | os.PathLike[str]


@dataclass(frozen=True)
class StepResult:
    """One step's outcome: its status (COMPLETED, FAILED, SKIPPED, PENDING, ...) and its result."""

    status: str
    result: Any = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended: what `noetl run --json` prints, typed, plus the playbook's final `result`
    (what `noetl run` prints after "result:")."""

    execution_id: str
    status: str
    error: str | None
    steps: dict[str, StepResult] = field(default_factory=dict)
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    def to_json(self) -> dict[str, Any]:
        """Exactly the object `noetl run --json` prints."""
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "error": self.error,
            "steps": {name: {"status": s.status, "result": s.result} for name, s in self.steps.items()},
        }


# ---------------------------------------------------------------------- workloads


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` texts (`--set`): the value as JSON when it parses as JSON, else the text."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        if not sep or not key.strip():
            raise ArgumentError(f"--set expects key=value, got '{pair}'")
        try:
            values[key.strip()] = json.loads(text)
        except ValueError:
            values[key.strip()] = text
    return values


def parse_payload(payload: str) -> dict[str, Any]:
    """`--payload`: a JSON object."""
    try:
        parsed = json.loads(payload)
    except ValueError as exc:
        raise ArgumentError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ArgumentError("--payload must be a JSON object")
    return parsed


def merge_workload(workload: Mapping[str, Any] | None, sets: Iterable[str] = ()) -> dict[str, Any]:
    """The workload overrides of a run: `workload` (the `--payload` object) overlaid by `sets`
    (the `--set key=value` texts). The engine lays them over the playbook's own `workload`."""
    if workload is not None and not isinstance(workload, Mapping):
        raise ArgumentError(f"workload must be a mapping, got {type(workload).__name__}")
    if isinstance(sets, str):
        raise ArgumentError("sets must be a list of 'key=value' texts, not one string")
    merged = dict(workload or {})
    merged.update(parse_assignments(sets))
    return merged


# ---------------------------------------------------------------------- running


def local_runtime(
    store: Store, *, concurrency: int = DEFAULT_CONCURRENCY, on_event: Callable[[Event], None] | None = None
) -> LocalRuntime:
    """The runtime `noetl run` and this API use: a leased snowflake node (unless one is pinned
    with NOETL_SNOWFLAKE_NODE_ID) and the configured loop window."""
    from noetl.ids import default_ids
    from noetl.runtime.local import LocalRuntime
    from noetl.runtime.nodes import NodeLease, process_owner
    from noetl.settings import settings

    config = settings()
    lease = None
    if config.snowflake_node_id is None:  # a pinned node is not leased
        lease = NodeLease(store, default_ids, process_owner("run"))
    return LocalRuntime(
        store, concurrency=concurrency, on_event=on_event, node_lease=lease, loop_window=config.loop_window
    )


async def cancel_and_wait(runtime: LocalRuntime, task: asyncio.Task[Any], reason: str) -> bool:
    """Record the cancellation of the running execution in its log and wait for `task` (the run)
    to end; False when no execution had started yet."""
    root = runtime.root_execution()
    if root is None:
        return False
    runtime.cancel(root, reason)
    await asyncio.wait({task})
    return True


def to_result(outcome: RunOutcome) -> RunResult:
    """The typed, masked result of a run (secrets resolved during the run never show)."""
    from noetl.secrets import masker

    steps = {
        name: StepResult(status=step.status, result=masker.mask(step.result))
        for name, step in outcome.steps.items()
    }
    return RunResult(
        execution_id=str(outcome.execution_id),
        status=outcome.status,
        error=masker.mask_text(outcome.error) if outcome.error else None,
        steps=steps,
        result=masker.mask(outcome.result),
    )


def _load(playbook: PlaybookSource | Playbook) -> Playbook:
    from noetl.dsl import load_playbook
    from noetl.dsl.model import Playbook

    if isinstance(playbook, Playbook):
        return playbook
    if not isinstance(playbook, str | os.PathLike):
        raise ArgumentError(f"playbook must be a file path, got {type(playbook).__name__}")
    return load_playbook(os.fspath(playbook))


async def run_async(
    playbook: PlaybookSource | Playbook,
    workload: Mapping[str, Any] | None = None,
    *,
    sets: Iterable[str] = (),
    store: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    strict: bool = False,
) -> RunResult:
    """Run a playbook file to its end on the current event loop; see the module docstring.
    `strict`: a template reading an undefined name fails its step (`noetl run --strict`)."""
    from noetl.store import open_store

    parsed = _load(playbook)
    overrides = merge_workload(workload, sets)
    if concurrency < 1:
        raise ArgumentError(f"concurrency must be at least 1, got {concurrency}")
    target = open_store(store)
    try:
        async with local_runtime(target, concurrency=concurrency) as runtime:
            task = asyncio.create_task(runtime.run(parsed, overrides, strict=strict))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                # The caller gave up (task cancelled, Ctrl-C): record the cancellation in the
                # execution's log, as `noetl run` does, before passing the cancellation on.
                await cancel_and_wait(runtime, task, "cancelled by the calling program")
                raise
    finally:
        target.close()
    return to_result(outcome)


def run(
    playbook: PlaybookSource | Playbook,
    workload: Mapping[str, Any] | None = None,
    *,
    sets: Iterable[str] = (),
    store: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    strict: bool = False,
) -> RunResult:
    """Run a playbook file to its end and return how it ended (blocking); see the module docstring."""
    call = run_async(playbook, workload, sets=sets, store=store, concurrency=concurrency, strict=strict)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: the usual case
        return asyncio.run(call)
    # Called from a running loop (a notebook cell, an async framework's sync hook): that loop
    # cannot be blocked on itself, so the run gets a loop of its own in another thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="noetl-run") as executor:
        return executor.submit(asyncio.run, call).result()
