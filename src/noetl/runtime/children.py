"""Waiting for nested playbooks in the process that orchestrates them: a pipeline task of kind
`playbook`, run by the local runtime or the server's in-process worker, starts its child through
the orchestrator and waits here for the child's end (a wake-up from the committed terminal
event, not a poll)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.errors import NoetlError
from noetl.runtime.orchestrator import Orchestrator
from noetl.status import FAILED
from noetl.tools.base import ChildRequest, ChildResult
from noetl.worker.command import Command, child_metadata

T = TypeVar("T")


class ChildWaiter:
    def __init__(self, orchestrator: Orchestrator, *, threaded: bool = False) -> None:
        self.orchestrator = orchestrator
        self.threaded = threaded  # orchestrator calls go to a thread (the server's event loop)
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._guard = threading.Lock()
        orchestrator.add_listener(self._on_event)

    async def run(self, request: ChildRequest, command: Command) -> ChildResult:
        """Start the child of `command` and wait for its end."""
        orchestrator = self.orchestrator
        child_id = orchestrator.ids()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._guard:
            self._waiting[child_id] = (loop, future)
        try:
            metadata = child_metadata(command, request)
            started = await self._blocking(
                lambda: orchestrator.start_child(command.execution_id, request, metadata, child_id)
            )
            engine = started.engine
            if not engine.state.terminal:
                await future
        except NoetlError as exc:
            return ChildResult(0, FAILED, None, f"cannot start child playbook: {exc}")
        finally:
            with self._guard:
                self._waiting.pop(child_id, None)
        state = engine.state
        return ChildResult(state.execution_id, state.status, engine.result(request.return_step), state.error)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn) if self.threaded else fn()

    def _on_event(self, event: Event) -> None:
        if not self._waiting or event.event_type not in ev.TERMINAL_TYPES:
            return
        with self._guard:
            waiting = self._waiting.get(event.execution_id)
        if waiting is None:
            return
        loop, future = waiting
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(_settle, future)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
