"""The server's in-process worker (`noetl server start --with-worker`).

It runs inside the server's event loop and behaves like a remote worker that skips HTTP: it takes
unclaimed commands from `ControlPlane.pending`, claims each one, runs it with the same `Executor`
remote workers use, and hands the resulting events to `ControlPlane.ingest`. Blocking control-plane
calls go through `asyncio.to_thread`. A listener on the control plane wakes the loop as soon as a
command is issued; a short poll interval is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.errors import Conflict, NoetlError, NotFound
from noetl.runtime.control import ControlPlane, ExecuteRequest
from noetl.tools.base import ChildRequest, ChildResult
from noetl.worker.credentials import StoreCredentials
from noetl.worker.executor import Command, Executor

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
POLL_INTERVAL = 0.2
CHILD_POLL_INTERVAL = 0.05
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class InProcessWorker:
    def __init__(
        self,
        control: ControlPlane,
        *,
        workers: int = DEFAULT_WORKERS,
        pools: list[str] | None = None,
        poll_interval: float = POLL_INTERVAL,
        worker_prefix: str = "server-worker",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.control = control
        self.workers = workers
        self.pools = pools
        self.poll_interval = poll_interval
        # Unique per process: after a restart, leases of the old process's commands must expire
        # (and be issued again), not be renewed by a namesake.
        instance = secrets.token_hex(3)
        self.names = [f"{worker_prefix}-{n}-{instance}" for n in range(1, workers + 1)]
        self._names = itertools.cycle(self.names)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_execution: dict[int, set[asyncio.Task[Any]]] = {}  # execution -> its command tasks
        self._main: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._listening = False
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the polling loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._stopped = False
        if not self._listening:
            self.control.add_listener(self._on_event)
            self._listening = True
        self._main = asyncio.create_task(self._run(), name="noetl-server-worker")
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="noetl-server-worker-heartbeat")

    async def stop(self) -> None:
        """Stop taking commands and cancel the ones running (their commands stay unfinished)."""
        self._stopped = True
        tasks = [t for t in (self._main, self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main = self._heartbeat = None

    async def _renew_leases(self) -> None:
        """Renew the leases of the commands this worker runs (a third of the lease period)."""
        interval = max(self.control.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for name in self.names:
                self.control.heartbeat(name)

    def _on_event(self, event: Event) -> None:
        """Control-plane listener; runs on whatever thread committed the event. A new command
        wakes the loop; a cancelled execution's running commands are stopped."""
        if self._stopped or event.event_type not in (ev.COMMAND_ISSUED, ev.PLAYBOOK_CANCELLED):
            return
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            if event.event_type == ev.COMMAND_ISSUED:
                loop.call_soon_threadsafe(wake.set)
            else:
                loop.call_soon_threadsafe(self._stop_execution, event.execution_id)

    def _stop_execution(self, execution_id: int) -> None:
        for task in list(self._by_execution.pop(execution_id, ())):
            task.cancel()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self._fill()
            except Exception:  # never lose the worker to a bug
                log.exception("in-process worker: taking commands failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _fill(self) -> None:
        slots = self._slots
        assert slots is not None
        if slots.locked():
            return
        pending = self.control.pending(self.pools, limit=self.workers + len(self._inflight))
        for item in pending:
            event_id = int(item["event_id"])
            if event_id in self._inflight:
                continue
            if slots.locked():
                break
            await slots.acquire()
            self._inflight.add(event_id)
            task = self._spawn(self._run_command(event_id, next(self._names)))
            running = self._by_execution.setdefault(int(item["execution_id"]), set())
            running.add(task)
            task.add_done_callback(running.discard)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ one command

    async def _run_command(self, event_id: int, worker_id: str) -> None:
        slots = self._slots
        assert slots is not None
        try:
            try:
                await asyncio.to_thread(self.control.claim, event_id, worker_id)
            except (Conflict, NotFound) as exc:
                log.debug("in-process worker: skipping %s: %s", event_id, exc)
                return
            issued = await asyncio.to_thread(self.control.store.get_event, event_id)
            if issued is None:
                return
            command = Command.from_event(issued)
            executor = Executor(
                ids=self.control.ids,
                worker_id=worker_id,
                credentials=StoreCredentials(self.control.store),  # per command: sees updates
                run_child=self._child_runner(command),
            )
            reporter = _Reporter(self._ingest, self._spawn)
            reporter(executor.started(command))
            done = await executor.execute(command, report=reporter)
            await reporter.flush(done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("in-process worker crashed running %s", event_id)
        finally:
            self._inflight.discard(event_id)
            slots.release()
            if self._wake is not None:
                self._wake.set()  # a slot is free: look for more work now

    async def _ingest(self, events: list[Event]) -> None:
        try:
            await asyncio.to_thread(self.control.ingest, events)
        except NoetlError as exc:
            log.warning("in-process worker: reporting %d event(s) failed: %s", len(events), exc)

    # ------------------------------------------------------------------ nested playbooks in pipelines

    def _child_runner(self, command: Command) -> Callable[[ChildRequest], Awaitable[ChildResult]]:
        async def run_child(request: ChildRequest) -> ChildResult:
            slots = self._slots
            assert slots is not None
            slots.release()  # waiting for a child must not hold a worker slot
            if self._wake is not None:
                self._wake.set()
            try:
                return await self._run_child(request, command)
            finally:
                await slots.acquire()

        return run_child

    async def _run_child(self, request: ChildRequest, command: Command) -> ChildResult:
        control = self.control
        try:
            catalog_id = request.catalog_id
            if catalog_id is None and request.path and request.version is not None:
                entry = await asyncio.to_thread(control.store.resource, request.path, request.version)
                if entry is None:
                    raise NotFound(f"Playbook not found: {request.path} version {request.version}")
                catalog_id = entry.catalog_id
            start = ExecuteRequest(
                path=request.path if catalog_id is None else None,
                catalog_id=catalog_id,
                payload=dict(request.workload),
                parent_execution_id=command.execution_id,
            )
            outcome = await asyncio.to_thread(control.execute, start)
        except NoetlError as exc:
            return ChildResult(
                execution_id=0, status="FAILED", result=None, error=f"cannot start child playbook: {exc}"
            )
        child = outcome.execution_id
        while True:
            status = await asyncio.to_thread(control.status, child)
            if status["status"] in TERMINAL:
                break
            await asyncio.sleep(CHILD_POLL_INTERVAL)
        engine = control.engine(child)
        return ChildResult(
            execution_id=child,
            status=str(status["status"]),
            result=engine.result(request.return_step),
            error=status.get("error"),
        )


class _Reporter:
    """Hands events to the control plane in the order they were reported, without waiting:
    each batch is a task that first waits for the previous one."""

    def __init__(
        self,
        ingest: Callable[[list[Event]], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self._ingest = ingest
        self._spawn = spawn
        self._tail: asyncio.Task[Any] | None = None

    def __call__(self, event: Event) -> None:
        self._tail = self._spawn(self._after(self._tail, [event]))

    async def flush(self, events: list[Event]) -> None:
        await self._after(self._tail, events)

    async def _after(self, previous: asyncio.Task[Any] | None, events: list[Event]) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is already logged by ingest
        if events:
            await self._ingest(events)
