"""The local runtime: one process, an embedded store, an in-process worker pool.

It runs executions through the shared `Orchestrator` and their commands on the shared
`CommandRunner`. Reported events flow through a single pump: a batch of worker events is handed
to the orchestrator, which folds them into the engines, writes them with the engines' decisions
in one transaction per execution, and only then hands new commands to the runner. Commands of
kind `playbook` never reach the runner: the orchestrator starts the child itself and reports the
child's result back into the parent when it ends, so a waiting parent holds no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.loops import DEFAULT_LOOP_WINDOW
from noetl.engine.machine import Engine
from noetl.errors import NoetlError
from noetl.ids import Snowflake, default_ids
from noetl.runtime.children import ChildWaiter
from noetl.runtime.nodes import RENEW_SECONDS, NodeLease
from noetl.runtime.orchestrator import Launch, Orchestrator
from noetl.runtime.resolver import source_dir
from noetl.status import COMPLETED
from noetl.store.ports import Store
from noetl.tools.resources import close_tool_resources
from noetl.worker.command import Command
from noetl.worker.credentials import local_store_credentials
from noetl.worker.runner import CommandRunner
from noetl.worker.slots import Hold

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
STARTED_REPORT_DELAY = 0.5  # a command running longer reports its claim and start at once
LOCAL_WORKER = "local-worker"


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


# Seconds a busy runtime lets deferred events wait, so one transaction takes more of them (a
# 3,000-item loop: ~10% less CPU per item than a write per turn of the loop).
WRITE_LINGER = 0.01


class LocalRuntime:
    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ids: Snowflake | None = None,
        on_event: Callable[[Event], None] | None = None,
        node_lease: NodeLease | None = None,
        loop_window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        """`node_lease`: the snowflake node this runtime's ids use, leased from the store for
        as long as it runs (several processes may share a SQLite file)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.concurrency = concurrency
        self.ids = ids or default_ids
        self.orchestrator = Orchestrator(store, ids=self.ids, dispatch=self, loop_window=loop_window)
        if on_event is not None:
            self.orchestrator.add_listener(on_event)
        self.children = ChildWaiter(self.orchestrator)
        self.credentials = local_store_credentials(store, store.url)
        self.runner: CommandRunner | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}  # executions `run` waits for
        self._roots: list[int] = []
        self._incoming: list[Event] = []
        self._wake: asyncio.Event | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self._slot_wait = False  # the dispatcher holds a command until a slot frees
        self._pump_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._lease = node_lease
        self._renew_task: asyncio.Task[None] | None = None
        self._writes = contextlib.ExitStack()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LocalRuntime:
        # One process owns this run's writes: the store may commit them a moment later, once
        # the commands they issue are on their way (see noetl.store.sqlite_behind).
        self._writes.enter_context(self.store.write_behind(self._schedule_write))
        if self._lease is not None:
            self._lease.acquire()
            self._renew_task = asyncio.create_task(self._renew(self._lease), name="noetl-node-lease")
        self._wake = asyncio.Event()
        self._queue = asyncio.Queue()
        self.runner = CommandRunner(
            concurrency=self.concurrency,
            ids=self.ids,
            worker_id=LOCAL_WORKER,
            credentials=self.credentials,
            children=self.children.run,
        )
        self._pump_task = asyncio.create_task(self._pump(), name="noetl-pump")
        self._dispatch_task = asyncio.create_task(self._dispatcher(), name="noetl-dispatch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        loops = [t for t in (self._pump_task, self._dispatch_task, self._renew_task) if t is not None]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self.runner is not None:
            await self.runner.close()
        try:
            if self._lease is not None:
                self._lease.release()
            await close_tool_resources()
        finally:
            self._writes.close()  # waits for the events still being written

    def _schedule_write(self, write: Callable[[], None]) -> None:
        """When the store writes the events it deferred: with one command running, right after
        this turn of the loop (two hops: the commands issued alongside take their first step,
        the send to their tool process, before it), so the commit overlaps that step; with
        more running, the loop is busy anyway and a write a little later takes more events at
        once (WRITE_LINGER)."""
        loop = asyncio.get_running_loop()
        if self.runner is not None and self.runner.active > 1:
            loop.call_later(WRITE_LINGER, write)
        else:
            loop.call_soon(loop.call_soon, write)

    @staticmethod
    async def _renew(lease: NodeLease) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            lease.renew()

    # ------------------------------------------------------------------ running

    async def run(
        self,
        playbook: Playbook,
        workload: Mapping[str, Any] | None = None,
        *,
        catalog_id: int | None = None,
        strict: bool = False,
    ) -> RunOutcome:
        """Run a playbook to its end and report the outcome. `strict`: a template that reads an
        undefined name fails its step (recorded on the execution, inherited by its children)."""
        execution_id = self.ids()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[execution_id] = done
        self._roots.append(execution_id)
        try:
            metadata = {"strict": True} if strict else None
            launch = Launch(
                playbook, catalog_id, workload or {}, metadata=metadata, execution_id=execution_id
            )
            started = self.orchestrator.start(launch)
            if not started.engine.state.terminal:
                await done
        finally:
            self._waiting.pop(execution_id, None)
        return self.outcome(started.engine)

    def outcome(self, engine: Engine) -> RunOutcome:
        state = engine.state
        steps = {
            name: StepOutcome(status=step.status.upper(), result=engine.step_data(name))
            for name, step in state.steps.items()
        }
        return RunOutcome(
            execution_id=state.execution_id,
            status=state.status,
            error=state.error if state.status != COMPLETED else None,
            steps=steps,
            result=engine.result(),
        )

    def root_execution(self) -> int | None:
        """The first execution this runtime started (the one `noetl run` waits for)."""
        return self._roots[0] if self._roots else None

    def cancel(self, execution_id: int, reason: str = "cancelled by user") -> None:
        """Cancel an execution and its running children: nothing new is dispatched and the
        tools still running are told to stop."""
        try:
            self.orchestrator.cancel(execution_id, reason)
        except NoetlError as exc:  # unknown, or it ended meanwhile
            log.debug("cancel of %s ignored: %s", execution_id, exc)

    # ------------------------------------------------------------------ Dispatch

    def committed(self, engine: Engine, events: Sequence[Event]) -> None:
        for event in events:
            kind = event.event_type
            if kind == ev.COMMAND_ISSUED:
                if (event.meta or {}).get("tool_kind") != "playbook":  # those run natively
                    self._offer(event)
            elif kind in ev.TERMINAL_TYPES:
                if self.runner is not None:
                    self.runner.stop_execution(event.execution_id)
                waiting = self._waiting.get(event.execution_id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)

    # ------------------------------------------------------------------ the pump

    def _report(self, event: Event) -> None:
        self._incoming.append(event)
        assert self._wake is not None
        self._wake.set()

    async def _pump(self) -> None:
        assert self._wake is not None and self.runner is not None
        while True:
            await self._wake.wait()
            if self.runner.active > 1:
                # Other commands are running: one more turn of the loop lets outcomes that are
                # already on their way join this batch (one transaction for more of them).
                await asyncio.sleep(0)
            self._wake.clear()
            while self._incoming:
                batch, self._incoming = self._incoming, []
                try:
                    self.orchestrator.ingest(batch)
                except NoetlError:
                    log.exception("the local runtime could not take %d event(s)", len(batch))

    # ------------------------------------------------------------------ commands

    def _offer(self, event: Event) -> None:
        """Launch the command now when a slot is free and none waits before it (a turn of the
        loop saved per command); else it queues for the dispatcher."""
        assert self._queue is not None and self.runner is not None
        if not self._slot_wait and self._queue.empty() and self.runner.slots.try_take():
            self._launch(event)
        else:
            self._queue.put_nowait(event)

    def _launch(self, event: Event) -> None:
        """Run a command in a slot already taken (given back when it runs here already)."""
        assert self.runner is not None
        command_id = str((event.meta or {}).get("command_id"))
        if self.runner.launch(command_id, event.execution_id, self._work(event), holding=True) is None:
            self.runner.slots.release()

    async def _dispatcher(self) -> None:
        assert self._queue is not None and self.runner is not None
        runner = self.runner
        slots = runner.slots
        while True:
            event = await self._queue.get()
            self._slot_wait = True  # `_offer` queues behind this command meanwhile
            try:
                while not slots.try_take():  # a command resuming after its child goes first
                    slots.freed.clear()
                    await slots.freed.wait()
            finally:
                self._slot_wait = False
            self._launch(event)

    def _work(self, event: Event) -> Callable[[Hold], Any]:
        async def work(hold: Hold) -> None:
            try:
                await self._run_command(event, hold)
            except asyncio.CancelledError:
                raise
            except Exception:  # never lose the pool to a bug; the engine sees no completion
                log.exception("worker crashed running %s", event.event_id)

        return work

    async def _run_command(self, event: Event, hold: Hold) -> None:
        """Run one command. Its claim and start are reported with its outcome, in one write (or
        after STARTED_REPORT_DELAY, for a command still running then); meanwhile the command is
        handed over, so a failing run waits for it as for a claimed one."""
        runner = self.runner
        assert runner is not None
        command = Command.from_event(event)
        engine = self.orchestrator.engines.cached(command.execution_id)
        if engine is None or not engine.accepts(command.command_id):
            return
        engine.hand_over(command.command_id)
        base = source_dir(engine.playbook)
        executor = runner.executor(command, hold, base_path=str(base) if base else None)
        opening = [executor.events.claimed(command), executor.events.started(command)]

        def report(event: Event) -> None:
            while opening:  # the claim goes first
                self._report(opening.pop(0))
            self._report(event)

        early = asyncio.get_running_loop().call_later(STARTED_REPORT_DELAY, self._report_opening, opening)
        try:
            outcome = await runner.execute(executor, command, report=report)
        finally:
            early.cancel()
        for done in outcome:
            report(done)

    def _report_opening(self, opening: list[Event]) -> None:
        """A command still running: its claim and start are recorded now."""
        while opening:
            self._report(opening.pop(0))


__all__ = ["LocalRuntime", "NoetlError", "RunOutcome"]
