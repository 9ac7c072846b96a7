"""The server's in-process worker (`noetl server start --with-worker`).

It runs inside the server's event loop and behaves like a remote worker that skips HTTP: it takes
unclaimed commands from `ControlPlane.pending`, claims each one, runs it on the shared
`CommandRunner`, and hands the resulting events to `ControlPlane.ingest`. Blocking control-plane
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
from noetl.runtime.children import ChildWaiter
from noetl.runtime.control import ControlPlane
from noetl.worker.command import Command
from noetl.worker.credentials import server_store_credentials
from noetl.worker.runner import CommandRunner
from noetl.worker.slots import Hold

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
POLL_INTERVAL = 0.2


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
        self.children = ChildWaiter(control.orchestrator, threaded=True)
        self.runner: CommandRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._listening = False
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the polling loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.runner = CommandRunner(
            concurrency=self.workers,
            ids=self.control.ids,
            worker_id=self.names[0],
            children=self.children.run,
        )
        self._stopped = False
        if not self._listening:
            self.control.add_listener(self._on_event)
            self._listening = True
        self._main = asyncio.create_task(self._run(), name="noetl-server-worker")
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="noetl-server-worker-heartbeat")

    async def stop(self) -> None:
        """Stop taking commands and cancel the ones running (their commands stay unfinished)."""
        self._stopped = True
        tasks = [t for t in (self._main, self._heartbeat) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.close()
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
        loop, wake, runner = self._loop, self._wake, self.runner
        if loop is None or wake is None or runner is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            if event.event_type == ev.COMMAND_ISSUED:
                loop.call_soon_threadsafe(wake.set)
            else:
                loop.call_soon_threadsafe(runner.stop_execution, event.execution_id)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                self._fill()
            except Exception:  # never lose the worker to a bug
                log.exception("in-process worker: taking commands failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _fill(self) -> None:
        runner = self.runner
        assert runner is not None
        slots = runner.slots
        if slots.free <= 0:
            return
        for item in self.control.pending(self.pools, limit=self.workers + runner.active):
            command_id = str(item.get("command_id"))
            if runner.running(command_id):
                continue
            if not slots.try_take():
                break
            work = self._work(int(item["event_id"]), next(self._names))
            if runner.launch(command_id, int(item["execution_id"]), work, holding=True) is None:
                slots.release()

    # ------------------------------------------------------------------ one command

    def _work(self, event_id: int, worker_id: str) -> Callable[[Hold], Coroutine[Any, Any, None]]:
        async def work(hold: Hold) -> None:
            try:
                await self._run_command(event_id, worker_id, hold)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("in-process worker crashed running %s", event_id)
            finally:
                if self._wake is not None:
                    self._wake.set()  # a slot is free: look for more work now

        return work

    async def _run_command(self, event_id: int, worker_id: str, hold: Hold) -> None:
        runner = self.runner
        assert runner is not None
        try:
            await asyncio.to_thread(self.control.claim, event_id, worker_id)
        except (Conflict, NotFound) as exc:
            log.debug("in-process worker: skipping %s: %s", event_id, exc)
            return
        issued = await asyncio.to_thread(self.control.store.get_event, event_id)
        if issued is None:
            return
        command = Command.from_event(issued)
        executor = runner.executor(
            command,
            hold,
            worker_id=worker_id,
            # per command: sees updates
            credentials=server_store_credentials(self.control.store, self.control.server_url),
        )
        reporter = _Reporter(self._ingest, runner.spawn)
        reporter(executor.events.started(command))
        done = await runner.execute(executor, command, report=reporter)
        await reporter.flush(done)

    async def _ingest(self, events: list[Event]) -> None:
        try:
            await asyncio.to_thread(self.control.ingest, events)
        except NoetlError as exc:
            log.warning("in-process worker: reporting %d event(s) failed: %s", len(events), exc)


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
