"""The orchestration engine of one execution: fold events into state, decide what comes next.

`Engine.apply(event)` folds one event into the state; it is the only place state changes.
`Engine.react(event)` applies an event and, when it is a trigger (`command.completed`,
`command.failed`), decides: it emits new events (`ctx.updated`, `step.exit`, `step.skipped`,
`step.enter`, `command.issued`, `playbook.completed|failed`), applying each as it is emitted, and
returns them for the caller to persist. Decisions touch only what the trigger changed, so the cost
of one event does not grow with the length of the log.

The parts: `fold` (events into state), `context` (the render context), `routing` (step
completion and dead-path elimination), `loops`, `commands` (the `command.issued` events) and
`outbox` (the events of one decision). This module wires them and keeps the execution's life
cycle: start, trigger handling, leases, cancel, the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.commands import Commands, pool_for
from noetl.engine.context import RenderContext, iteration_context
from noetl.engine.events import Event, utcnow
from noetl.engine.fold import Fold
from noetl.engine.graph import Graph, analyse
from noetl.engine.loops import DEFAULT_LOOP_WINDOW, Loops
from noetl.engine.outbox import Outbox
from noetl.engine.results import plain
from noetl.engine.routing import Router
from noetl.engine.state import DEAD, RUNNING, CommandState, ExecutionState, StepState
from noetl.errors import EngineError, NoetlError, TemplateError


class Engine:
    """Pure orchestration of one execution (no I/O)."""

    def __init__(
        self,
        playbook: Playbook,
        execution_id: int,
        *,
        ids: Callable[[], int],
        clock: Callable[[], datetime] = utcnow,
        catalog_id: int | None = None,
        parent_execution_id: int | None = None,
        stamp: Mapping[str, Any] | None = None,
        graph: Graph | None = None,
        max_attempts: int = 3,
        loop_window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        self.playbook = playbook
        self.graph = graph or analyse(playbook)
        self.ids = ids
        self.clock = clock
        self.state = ExecutionState(
            execution_id=execution_id,
            catalog_id=catalog_id,
            parent_execution_id=parent_execution_id,
            path=playbook.path,
            steps={name: StepState(name) for name in playbook.steps},
        )
        self._contexts = RenderContext(playbook, self.state)
        self._fold = Fold(self.state, self.graph, self._contexts)
        self._outbox = Outbox(self.state, ids=ids, clock=clock, apply=self.apply, stamp=dict(stamp or {}))
        self._commands = Commands(self.state, self._outbox, ids=ids, max_attempts=max_attempts)
        self._loops = Loops(
            playbook, self.state, self._contexts, self._outbox, self._commands, window=loop_window
        )
        self._router = Router(
            playbook,
            self.graph,
            self.state,
            contexts=self._contexts,
            outbox=self._outbox,
            commands=self._commands,
            loops=self._loops,
            entered_cycles=self._fold.entered_cycles,
        )
        self._max_attempts = max_attempts
        for source in self.graph.unreachable:  # dead code: its arcs never fire
            for target in self.graph.successors.get(source, ()):
                self.state.edges[(source, target)] = DEAD

    # ------------------------------------------------------------------ public API

    @property
    def execution_id(self) -> int:
        return self.state.execution_id

    @property
    def stamp(self) -> dict[str, Any]:
        """Metadata stamped on every event of this execution (iterator metadata, trace)."""
        return self._outbox.stamp

    @stamp.setter
    def stamp(self, value: dict[str, Any]) -> None:
        self._outbox.stamp = value

    def start(
        self, workload: Mapping[str, Any] | None = None, *, meta: Mapping[str, Any] | None = None
    ) -> list[Event]:
        """Emit `playbook_started` and dispatch the `start` step."""
        merged = dict(self.playbook.workload)
        merged.update(workload or {})
        started_meta = {"emitted_at": self.clock().isoformat(), "emitter": "engine", **(meta or {})}
        self._outbox.clear()
        self._outbox.emit(
            ev.PLAYBOOK_STARTED,
            node_id="playbook",
            node_name=self.playbook.path,
            node_type="execution",
            status="STARTED",
            context={
                "catalog_id": None if self.state.catalog_id is None else str(self.state.catalog_id),
                "execution_id": str(self.execution_id),
                "path": self.playbook.path,
                "workload": merged,
            },
            meta=started_meta,
        )
        self._guarded(lambda: self._router.dispatch("start", launch=True))
        return self._outbox.flush()

    def react(self, event: Event) -> list[Event]:
        """Apply a reported event; if it is a trigger, decide and return the new events."""
        self._outbox.clear()
        self.apply(event)
        if self.state.terminal:
            return self._outbox.flush()
        last_command = self._fold.last_command
        if event.event_type == ev.COMMAND_COMPLETED and last_command is not None:
            command, payload = last_command
            self._guarded(lambda: self._on_command_completed(command, payload))
        elif event.event_type == ev.COMMAND_FAILED:
            self._finish_if_done()
        return self._outbox.flush()

    def hand_over(self, command_id: str) -> None:
        """The command went to a worker that may run it before claiming it (it reports the claim
        with its outcome): a failing run waits for that outcome as for a claimed command."""
        command = self.state.commands.get(command_id)
        if command is not None and command.status == "issued":
            command.handed_over = True

    def take_back(self, command_id: str) -> list[Event]:
        """No worker took the handed-over command in time: stop waiting for it (a failing run may
        end now)."""
        self._outbox.clear()
        command = self.state.commands.get(command_id)
        if command is not None and command.handed_over:
            command.handed_over = False
            self._finish_if_done()
        return self._outbox.flush()

    def cancel(self, reason: str = "cancelled by user") -> list[Event]:
        """Stop the execution: nothing new is dispatched and it ends CANCELLED."""
        self._outbox.clear()
        if not self.state.terminal:
            self._outbox.emit(
                ev.PLAYBOOK_CANCELLED,
                node_id="playbook",
                node_name="playbook",
                status="CANCELLED",
                result={"status": "CANCELLED", "context": {"reason": reason}},
                meta={"status": "CANCELLED", "reason": reason},
            )
        return self._outbox.flush()

    def expire(self, command_id: str, *, reason: str = "the worker's lease expired") -> list[Event]:
        """A claimed command whose worker vanished: issue it again (attempt + 1), or fail its step
        once `max_attempts` is reached. Late events of the superseded attempt are ignored."""
        self._outbox.clear()
        state = self.state
        command = state.commands.get(command_id)
        if command is None or state.terminal:
            return []
        if command.attempt >= self._max_attempts or state.failing:
            error = f"{reason}; gave up after {command.attempt} attempt(s)"
            self._outbox.emit(
                ev.COMMAND_FAILED,
                node_name=command.step,
                node_type=command.kind,
                status="FAILED",
                result={"status": "FAILED", "context": {"command_id": command_id, "error": error}},
                meta={"command_id": command_id, "attempt": command.attempt},
            )
            self._finish_if_done()
            return self._outbox.flush()
        self._outbox.emit(
            ev.COMMAND_EXPIRED,
            node_name=command.step,
            node_type=command.kind,
            status="EXPIRED",
            result={"status": "EXPIRED", "context": {"command_id": command_id, "reason": reason}},
            meta={"command_id": command_id, "attempt": command.attempt},
        )
        self._guarded(lambda: self._reissue(command))
        return self._outbox.flush()

    def resume(self) -> list[Event]:
        """After a restart (state folded from the log): settle what was derived but not logged
        (cycles that went quiet) and end the execution if nothing is left to do."""
        self._outbox.clear()
        if self.state.terminal:
            return []

        def settle() -> None:
            for comp in sorted(self._fold.entered_cycles):
                self._router.check_cycle_quiet(comp)

        self._guarded(settle)
        return self._outbox.flush()

    def open_commands(self) -> list[CommandState]:
        """Commands issued and not finished (their claim state included)."""
        return list(self.state.commands.values())

    def accepts(self, command_id: str) -> bool:
        """Whether a worker may still claim (start) this command."""
        state = self.state
        if state.terminal or state.failing:
            return False
        command = state.commands.get(command_id)
        return command is not None and command.status == "issued"

    def step_data(self, name: str) -> Any:
        step = self.state.steps.get(name)
        return None if step is None else plain(step.data)

    def result(self, return_step: str | None = None) -> Any:
        """The execution's result: the return step's data, else the last completed step's."""
        name = return_step or self.state.last_completed
        return None if name is None else self.step_data(name)

    def fold(self, events: list[Event]) -> None:
        """Rebuild state from a stored log (for restarts and `noetl events` summaries)."""
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        """Fold one event into the state. Deterministic; the single place state changes."""
        self._fold.apply(event)

    def context(self) -> dict[str, Any]:
        """The render context of the current state. Updated in place by what changed since the
        last call (a step's result, ctx keys), so its cost does not grow with the run."""
        return self._contexts.current()

    # ------------------------------------------------------------------ deciding

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a decision; a template or loop error fails the execution with a clear message."""
        try:
            action()
            self._router.drain_ready()
        except (TemplateError, EngineError) as exc:
            self._fail_run(str(exc))
            return
        self._finish_if_done()

    def _on_command_completed(self, command: CommandState, payload: Mapping[str, Any]) -> None:
        state = self.state
        step = state.steps[command.step]
        updates = payload.get("ctx_updates")
        if isinstance(updates, dict) and updates:
            self._outbox.emit(
                ev.CTX_UPDATED,
                status="CONTEXT",
                result={"status": "CONTEXT", "context": {"step": command.step, "values": updates}},
            )
        if state.failing:
            if command.index is None and step.status == RUNNING:
                # The run is ending: record the step's completion, but route nowhere.
                self._outbox.emit(
                    ev.STEP_EXIT,
                    node_name=step.name,
                    status="COMPLETED",
                    result={"status": "COMPLETED", "context": {"fired": [], "halted": True}},
                )
            return
        loop = step.loop
        if loop is not None and (command.index is not None or command.frame is not None):
            if step.status != RUNNING:
                return
            if loop.cursor is not None:
                if self._loops.advance_cursor(step):
                    self._router.complete_step(step)
            elif loop.done >= loop.total:
                self._router.complete_step(step)
            else:
                self._loops.fill(step)
        elif step.status == RUNNING:
            self._router.complete_step(step)

    def _reissue(self, command: CommandState) -> None:
        """Issue an expired command again, with the next attempt number."""
        spec = self.playbook.steps[command.step]
        step = self.state.steps[command.step]
        ctx: Mapping[str, Any] = self.context()
        if command.frame is not None:
            self._commands.claim(spec, ctx, command.frame, attempt=command.attempt + 1)
            return
        if command.index is not None and step.loop is not None:
            ctx = iteration_context(ctx, step.loop, command.index)
        self._commands.issue(spec, ctx, command.index, attempt=command.attempt + 1)

    def _fail_run(self, error: str) -> None:
        if self.state.terminal:
            return
        self._outbox.emit(
            ev.PLAYBOOK_FAILED,
            node_id="playbook",
            node_name="playbook",
            status="FAILED",
            result={"status": "FAILED", "context": {"error": error}},
            meta={"status": "FAILED", "error": error, "failed_steps": list(self.state.failed_steps)},
        )

    def _finish_if_done(self) -> None:
        state = self.state
        if state.terminal:
            return
        if state.failing:
            if state.running_commands() == 0:
                self._fail_run(state.error or "execution failed")
            return
        if not state.commands:
            stuck = self._router.stuck()
            if stuck:
                # Never a false success: nothing can run any more, yet steps are still waiting.
                self._fail_run(f"the run cannot make progress; stuck steps: {', '.join(stuck)}")
                return
            self._outbox.emit(
                ev.PLAYBOOK_COMPLETED,
                node_id="playbook",
                node_name="playbook",
                status="COMPLETED",
                result={"status": "COMPLETED"},
                meta={"status": "COMPLETED", "last_step": state.last_completed},
            )


__all__ = ["Engine", "NoetlError", "pool_for"]
