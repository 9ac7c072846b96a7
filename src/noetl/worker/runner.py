"""The command runner every mode uses: the local runtime, the server's in-process worker and
the remote worker all run commands through one `CommandRunner`.

It owns the slots (how many commands run their tools at once), tracks each command's task (a
command runs at most once here; tasks are drained or cancelled on stop), builds the executor of
a command (its events carry the runner's worker id; a nested playbook it starts lets its slot
go while it waits), and stops commands: one, or every command of an execution.

What differs between modes is only how a command arrives and where its events go; each mode
passes that in as the `work` of `launch`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from noetl.engine.events import Event
from noetl.tools.base import ChildRequest, ChildResult, ToolLimits
from noetl.worker.command import Command, CommandEvents
from noetl.worker.executor import Executor
from noetl.worker.slots import Hold, Slots

log = logging.getLogger(__name__)

T = TypeVar("T")
# Starts a nested playbook for a command (a pipeline task of kind playbook) and waits for its end.
ChildRunner = Callable[[ChildRequest, Command], Awaitable[ChildResult]]


class CommandRunner:
    def __init__(
        self,
        *,
        concurrency: int,
        ids: Callable[[], int],
        worker_id: str,
        credentials: Any = None,
        children: ChildRunner | None = None,
        limits: ToolLimits | None = None,
    ) -> None:
        """`limits`: of tool calls that set none (default: read from the settings now)."""
        self.slots = Slots(concurrency)
        self.limits = limits or ToolLimits.from_settings()
        self.ids = ids
        self.worker_id = worker_id
        self.credentials = credentials
        self.children = children
        self._tasks: set[asyncio.Task[Any]] = set()
        self._commands: dict[str, asyncio.Task[Any]] = {}  # command id -> the task running it
        self._executions: dict[int, set[str]] = {}  # execution -> its commands running here
        self._executing: dict[str, asyncio.Task[Any]] = {}  # running their tool now (stoppable)

    # ------------------------------------------------------------------ tasks

    def spawn(self, work: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """A task the runner keeps track of (drained or cancelled on stop)."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def running(self, command_id: str) -> bool:
        return command_id in self._commands

    def running_ids(self) -> list[str]:
        return sorted(self._commands)

    @property
    def active(self) -> int:
        """How many commands run here (running their tool, waiting for a slot or a child, or
        reporting)."""
        return len(self._commands)

    @property
    def executing(self) -> int:
        """How many commands are running their tools right now."""
        return len(self._executing)

    def launch(
        self,
        command_id: str,
        execution_id: int,
        work: Callable[[Hold], Awaitable[None]],
        *,
        holding: bool,
    ) -> asyncio.Task[None] | None:
        """Run `work` for a command in a tracked task, holding a slot (`holding`: one taken
        already; else it waits for one). None when the command runs here already (a repeated
        notification): the caller gives back the slot it took."""
        if command_id in self._commands:
            return None
        task = self.spawn(self._hold(command_id, execution_id, work, holding))
        self._commands[command_id] = task
        self._executions.setdefault(execution_id, set()).add(command_id)
        return task

    async def _hold(
        self, command_id: str, execution_id: int, work: Callable[[Hold], Awaitable[None]], holding: bool
    ) -> None:
        hold = Hold(self.slots, holding=holding)
        try:
            await hold.take()
            await work(hold)
        finally:
            hold.release()
            self._forget(command_id, execution_id)

    def _forget(self, command_id: str, execution_id: int) -> None:
        self._commands.pop(command_id, None)
        running = self._executions.get(execution_id)
        if running is not None:
            running.discard(command_id)
            if not running:
                del self._executions[execution_id]

    # ------------------------------------------------------------------ one command

    def events(self, worker_id: str | None = None) -> CommandEvents:
        """The builder of the events this runner reports (`command.claimed`, ...)."""
        return CommandEvents(ids=self.ids, worker_id=worker_id or self.worker_id)

    def executor(
        self,
        command: Command,
        hold: Hold,
        *,
        worker_id: str | None = None,
        base_path: str | None = None,
        credentials: Any = None,
    ) -> Executor:
        """The executor of one command. A nested playbook it starts waits without the slot."""
        children = self.children

        async def run_child(request: ChildRequest) -> ChildResult:
            assert children is not None
            async with hold:
                return await children(request, command)

        return Executor(
            ids=self.ids,
            worker_id=worker_id or self.worker_id,
            credentials=credentials if credentials is not None else self.credentials,
            run_child=run_child if children is not None else None,
            base_path=base_path,
            limits=self.limits,
        )

    async def execute(
        self, executor: Executor, command: Command, report: Callable[[Event], None] | None = None
    ) -> list[Event]:
        """Run the command's tool (stoppable meanwhile); the events that finish it."""
        command_id = command.command_id
        current = asyncio.current_task()
        if current is not None:
            self._executing[command_id] = current
        try:
            return await executor.execute(command, report=report)
        finally:
            self._executing.pop(command_id, None)

    # ------------------------------------------------------------------ stopping

    def stop_command(self, command_id: str) -> bool:
        """Stop a command while it runs its tool (its run ended or refused it)."""
        task = self._executing.get(command_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def stop_execution(self, execution_id: int) -> int:
        """Stop every command of an execution that is running its tool here."""
        return sum(
            self.stop_command(command_id) for command_id in list(self._executions.get(execution_id, ()))
        )

    async def drain(self, grace: float) -> int:
        """Let tracked tasks finish (up to `grace` seconds), then cancel the rest; how many were
        cancelled."""
        if not self._tasks:
            return 0
        _, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    async def close(self) -> None:
        """Cancel every tracked task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
