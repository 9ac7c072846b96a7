"""The local runtime: one process, an embedded store, an in-process worker pool.

Reported events flow through a single pump: a batch of worker events is folded into the engines,
the engines' decisions are appended to the same batch, the batch is written to the store in one
transaction, and only then are the new commands handed to workers. Commands of kind `playbook`
never reach a worker: the runtime starts the child execution itself and reports the child's result
back into the parent when it ends, so a waiting parent holds no worker slot.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.machine import Engine
from noetl.errors import NoetlError, PlaybookError
from noetl.ids import Snowflake, default_ids
from noetl.runtime.resolver import PlaybookResolver
from noetl.secrets import masked
from noetl.store.ports import Store
from noetl.tools.base import ChildRequest, ChildResult
from noetl.worker.credentials import StoreCredentials
from noetl.worker.executor import Command, Executor

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16


@dataclass
class StepOutcome:
    status: str
    result: Any


@dataclass
class RunOutcome:
    execution_id: int
    status: str
    error: str | None
    steps: dict[str, StepOutcome] = field(default_factory=dict)
    result: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": str(self.execution_id),
            "status": self.status,
            "error": self.error,
            "steps": {name: {"status": s.status, "result": s.result} for name, s in self.steps.items()},
        }


@dataclass
class _Execution:
    engine: Engine
    future: asyncio.Future[None]
    base_dir: Path | None
    return_step: str | None = None


class LocalRuntime:
    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ids: Snowflake | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.concurrency = concurrency
        self.ids = ids or default_ids
        self.on_event = on_event
        self.credentials = StoreCredentials(store)
        self._executions: dict[int, _Execution] = {}
        self._children: dict[int, set[int]] = {}  # parent execution -> nested executions
        self._running: dict[int, set[asyncio.Task[Any]]] = {}  # execution -> its command tasks
        self._incoming: list[Event] = []
        self._wake: asyncio.Event | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LocalRuntime:
        self._wake = asyncio.Event()
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._pump_task = asyncio.create_task(self._pump(), name="noetl-pump")
        self._dispatch_task = asyncio.create_task(self._dispatcher(), name="noetl-dispatch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._pump_task, self._dispatch_task, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._pump_task, self._dispatch_task, *self._tasks) if t is not None),
            return_exceptions=True,
        )
        await _close_tool_resources()

    # ------------------------------------------------------------------ running

    async def run(
        self,
        playbook: Playbook,
        workload: Mapping[str, Any] | None = None,
        *,
        catalog_id: int | None = None,
    ) -> RunOutcome:
        """Run a playbook to its end and report the outcome."""
        execution = self._start(playbook, workload, catalog_id=catalog_id)
        await execution.future
        return self.outcome(execution.engine)

    def outcome(self, engine: Engine) -> RunOutcome:
        state = engine.state
        steps = {
            name: StepOutcome(status=step.status.upper(), result=engine.step_data(name))
            for name, step in state.steps.items()
        }
        return RunOutcome(
            execution_id=state.execution_id,
            status=state.status,
            error=state.error if state.status != "COMPLETED" else None,
            steps=steps,
            result=engine.result(),
        )

    def _start(
        self,
        playbook: Playbook,
        workload: Mapping[str, Any] | None,
        *,
        catalog_id: int | None = None,
        parent_execution_id: int | None = None,
        stamp: Mapping[str, Any] | None = None,
        start_meta: Mapping[str, Any] | None = None,
        return_step: str | None = None,
    ) -> _Execution:
        execution_id = self.ids()
        engine = Engine(
            playbook,
            execution_id,
            ids=self.ids,
            catalog_id=catalog_id,
            parent_execution_id=parent_execution_id,
            stamp=stamp,
        )
        loop = asyncio.get_running_loop()
        base_dir = Path(playbook.source).resolve().parent if playbook.source else None
        execution = _Execution(engine, loop.create_future(), base_dir, return_step)
        self._executions[execution_id] = execution
        self._commit(engine.start(workload, meta={**(start_meta or {}), **(stamp or {})}))
        return execution

    # ------------------------------------------------------------------ the pump

    def _report(self, event: Event) -> None:
        self._incoming.append(event)
        assert self._wake is not None
        self._wake.set()

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if len(self._tasks) > 1:
                # Other commands are running: one more turn of the loop lets outcomes that are
                # already on their way join this batch (one transaction for more of them).
                await asyncio.sleep(0)
            self._wake.clear()
            while self._incoming:
                batch, self._incoming = self._incoming, []
                out: list[Event] = []
                for event in batch:
                    execution = self._executions.get(event.execution_id)
                    if execution is None:
                        out.append(event)
                        continue
                    self._stamp(execution.engine, event)
                    out.append(event)
                    out.extend(execution.engine.react(event))
                    if execution.engine.state.failing:
                        out.extend(self._cancel_children(event.execution_id, "the parent execution failed"))
                self._commit(out)

    def _stamp(self, engine: Engine, event: Event) -> None:
        if engine.state.parent_execution_id is not None and event.parent_execution_id is None:
            event.parent_execution_id = engine.state.parent_execution_id
        if event.catalog_id is None:
            event.catalog_id = engine.state.catalog_id
        if engine.stamp:
            event.meta = {**(event.meta or {}), **engine.stamp}

    def _commit(self, events: list[Event]) -> None:
        """Persist, then act: notify, dispatch new commands, settle finished executions."""
        if not events:
            return
        self.store.append([masked(e) for e in events])
        observer = self.on_event
        for event in events:
            kind = event.event_type
            if observer is not None:
                observer(event)
            if kind == ev.COMMAND_ISSUED:
                self._dispatch(event)
            elif kind in ev.TERMINAL_TYPES:
                execution = self._executions.get(event.execution_id)
                if execution is not None and not execution.future.done():
                    execution.future.set_result(None)

    # ------------------------------------------------------------------ workers

    def _dispatch(self, event: Event) -> None:
        kind = (event.meta or {}).get("tool_kind")
        if kind == "playbook":
            self._spawn(self._run_native_child(event))
        else:
            assert self._queue is not None
            self._queue.put_nowait(event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatcher(self) -> None:
        assert self._queue is not None and self._slots is not None
        while True:
            event = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._run_command(event))
            self._tasks.add(task)
            running = self._running.setdefault(event.execution_id, set())
            running.add(task)

            def done(t: asyncio.Task[Any], running: set[asyncio.Task[Any]] = running) -> None:
                self._tasks.discard(t)
                running.discard(t)

            task.add_done_callback(done)

    def _executor(self, command: Command, *, worker_id: str, holds_slot: bool) -> Executor:
        async def run_child(request: ChildRequest) -> ChildResult:
            if holds_slot and self._slots is not None:
                self._slots.release()  # waiting for a child must not hold a worker slot
                try:
                    return await self._run_child(request, command)
                finally:
                    await self._slots.acquire()
            return await self._run_child(request, command)

        execution = self._executions.get(command.execution_id)
        base = execution.base_dir if execution else None
        return Executor(
            ids=self.ids,
            worker_id=worker_id,
            credentials=self.credentials,
            run_child=run_child,
            base_path=str(base) if base else None,
        )

    async def _run_command(self, event: Event) -> None:
        assert self._slots is not None
        try:
            command = Command.from_event(event)
            execution = self._executions.get(command.execution_id)
            if execution is None or not execution.engine.accepts(command.command_id):
                return
            executor = self._executor(command, worker_id="local-worker", holds_slot=True)
            self._report(executor.claimed(command))
            self._report(executor.started(command))
            for done in await executor.execute(command, report=self._report):
                self._report(done)
        except Exception:  # never lose the pool to a bug; the engine sees no completion
            log.exception("worker crashed running %s", event.event_id)
        finally:
            self._slots.release()

    async def _run_native_child(self, event: Event) -> None:
        command = Command.from_event(event)
        execution = self._executions.get(command.execution_id)
        if execution is None or not execution.engine.accepts(command.command_id):
            return
        executor = self._executor(command, worker_id="engine", holds_slot=False)
        self._report(executor.claimed(command))
        self._report(executor.started(command))
        for done in await executor.execute(command, report=self._report):
            self._report(done)

    def root_execution(self) -> int | None:
        """The first execution this runtime started (the one `noetl run` waits for)."""
        for execution_id, execution in self._executions.items():
            if execution.engine.state.parent_execution_id is None:
                return execution_id
        return None

    def cancel(self, execution_id: int, reason: str = "cancelled by user") -> None:
        """Cancel an execution and its running children: nothing new is dispatched and the
        tools still running are told to stop."""
        execution = self._executions.get(execution_id)
        if execution is None:
            return
        events = execution.engine.cancel(reason)
        events.extend(self._cancel_children(execution_id, f"parent execution {execution_id} was cancelled"))
        self._commit(events)
        for event in events:
            for task in self._running.pop(event.execution_id, set()):
                task.cancel()

    def _cancel_children(self, parent_id: int, reason: str) -> list[Event]:
        events: list[Event] = []
        for child_id in list(self._children.get(parent_id, ())):
            child = self._executions.get(child_id)
            if child is not None and not child.engine.state.terminal:
                events.extend(child.engine.cancel(reason))
                events.extend(self._cancel_children(child_id, reason))
        return events

    async def _run_child(self, request: ChildRequest, command: Command) -> ChildResult:
        parent = self._executions.get(command.execution_id)
        base_dir = parent.base_dir if parent else None
        try:
            playbook, catalog_id = PlaybookResolver(self.store, base_dir).resolve(
                path=request.path, catalog_id=request.catalog_id, version=request.version
            )
        except PlaybookError as exc:
            return ChildResult(execution_id=0, status="FAILED", result=None, error=str(exc))
        stamp: dict[str, Any] = {"parent_execution_id": str(command.execution_id)}
        meta = command.meta
        if "iteration_index" in meta:
            stamp["iterator_index"] = meta["iteration_index"]
            stamp["iterator_count"] = meta.get("iteration_total")
            stamp["iterator_item"] = meta.get("iterator_item")
        if parent is not None and parent.engine.state.meta.get("trace"):
            stamp["trace"] = parent.engine.state.meta["trace"]
        child = self._start(
            playbook,
            request.workload,
            catalog_id=catalog_id,
            parent_execution_id=command.execution_id,
            stamp=stamp,
            start_meta={"parent_step": command.step, "parent_command_id": command.command_id},
            return_step=request.return_step,
        )
        self._children.setdefault(command.execution_id, set()).add(child.engine.execution_id)
        await child.future
        engine = child.engine
        state = engine.state
        result = engine.result(request.return_step)
        return ChildResult(
            execution_id=state.execution_id, status=state.status, result=result, error=state.error
        )


async def _close_tool_resources() -> None:
    """Close pools the network tools opened (only if they were imported)."""
    for module_name in ("noetl.tools.postgres", "noetl.tools.http"):
        module = sys.modules.get(module_name)
        closer = getattr(module, "close_pools", None) or getattr(module, "close_clients", None)
        if closer is not None:
            try:
                await closer()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", module_name, exc_info=True)


__all__ = ["LocalRuntime", "NoetlError", "RunOutcome"]
