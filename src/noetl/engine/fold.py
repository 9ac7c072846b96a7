"""Folding events into the execution state: the only place the state changes.

Every event, whether the engine emitted it or a worker reported it, goes through `Fold.apply`, so
replaying a stored log rebuilds exactly the state the live engine had.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from noetl.engine import events as ev
from noetl.engine.context import RenderContext
from noetl.engine.events import Event
from noetl.engine.graph import Graph
from noetl.engine.results import loop_view, view_of
from noetl.engine.state import (
    COMPLETED,
    DEAD,
    FAILED,
    LIVE,
    RUNNING,
    SKIPPED,
    CommandState,
    ExecutionState,
    LoopState,
)


class Fold:
    """Applies events to one execution's state (deterministic, no decisions)."""

    def __init__(self, state: ExecutionState, graph: Graph, contexts: RenderContext) -> None:
        self.state = state
        self.graph = graph
        self.contexts = contexts
        # Cyclic components some step of which was entered (they re-enter only through their arcs).
        self.entered_cycles: set[int] = set()
        # The command the last applied event completed, with its `call.done` payload.
        self.last_command: tuple[CommandState, dict[str, Any]] | None = None
        self._handlers: dict[str, Callable[[Event], None]] = {
            ev.COMMAND_COMPLETED: self._completed,
            ev.CALL_DONE: self._call_done,
            ev.COMMAND_ISSUED: self._issued,
            ev.COMMAND_CLAIMED: self._claimed,
            ev.COMMAND_STARTED: self._claimed,
            ev.COMMAND_FAILED: self._failed,
            ev.COMMAND_EXPIRED: self._expired,
            ev.STEP_ENTER: self._enter,
            ev.STEP_EXIT: self._exit,
            ev.STEP_SKIPPED: self._skipped,
            ev.CTX_UPDATED: self._ctx_updated,
            ev.PLAYBOOK_STARTED: self._started,
            ev.PLAYBOOK_COMPLETED: self._playbook_completed,
            ev.PLAYBOOK_FAILED: self._playbook_failed,
            ev.PLAYBOOK_CANCELLED: self._playbook_cancelled,
        }

    def apply(self, event: Event) -> None:
        """Fold one event into the state. Deterministic; the single place state changes."""
        state = self.state
        state.events_applied += 1
        if event.event_id > state.last_event_id:
            state.last_event_id = event.event_id
        self.last_command = None
        handler = self._handlers.get(event.event_type)
        if handler is not None:
            handler(event)

    # -- commands

    def _issued(self, event: Event) -> None:
        meta = event.meta or {}
        cid = str(meta.get("command_id"))
        name = event.node_name or ""
        index = meta.get("iteration_index")
        self.state.commands[cid] = CommandState(
            command_id=cid,
            step=name,
            event_id=event.event_id,
            kind=str(meta.get("tool_kind") or event.node_type or ""),
            index=index,
            attempt=int(meta.get("attempt", 1)),
        )
        step = self.state.steps.get(name)
        if step is not None and step.loop is not None and index is not None:
            step.loop.issued = max(step.loop.issued, int(index) + 1)
            step.loop.in_flight += 1

    def _claimed(self, event: Event) -> None:
        cid = event.command_id
        command = self.state.commands.get(cid) if cid else None
        if command is not None:
            claimed = event.event_type == ev.COMMAND_CLAIMED
            command.status = "claimed" if claimed else "started"
            command.worker_id = event.worker_id or command.worker_id
            if claimed:
                command.claimed_at = event.created_at

    def _call_done(self, event: Event) -> None:
        cid = event.command_id
        if cid is not None and cid in self.state.commands:
            self.state.call_results[cid] = event.payload

    def _completed(self, event: Event) -> None:
        state = self.state
        cid = event.command_id
        command = state.commands.pop(cid, None) if cid else None
        if command is None:  # unknown, duplicate or superseded: ignore
            return
        payload = state.call_results.pop(command.command_id, {})
        data, labels = _payload_data(payload)
        step = state.steps[command.step]
        if command.index is not None and step.loop is not None:
            loop = step.loop
            if 0 <= command.index < loop.total:
                loop.results[command.index] = data
            loop.done += 1
            loop.in_flight -= 1
        else:
            step.data = data
            step.view = view_of(data, labels)
            step.has_result = True
            self.contexts.changed(step=step.name)
        step.completed_event_id = event.event_id
        self.last_command = (command, payload)

    def _failed(self, event: Event) -> None:
        state = self.state
        cid = event.command_id
        command = state.commands.pop(cid, None) if cid else None
        if command is None:
            return
        state.call_results.pop(command.command_id, None)
        payload = event.payload
        error = payload.get("error") or (event.result or {}).get("error") or "command failed"
        step = state.steps[command.step]
        if step.loop is not None and command.index is not None:
            step.loop.in_flight -= 1
            error = f"iteration {command.index}: {error}"
        step.status = FAILED
        step.error = str(error)
        if command.step not in state.failed_steps:
            state.failed_steps.append(command.step)
        if state.error is None:
            state.error = f"step '{command.step}' failed: {error}"

    def _expired(self, event: Event) -> None:
        state = self.state
        cid = event.command_id
        command = state.commands.pop(cid, None) if cid else None
        if command is not None:
            state.call_results.pop(command.command_id, None)
            step = state.steps.get(command.step)
            if step is not None and step.loop is not None and command.index is not None:
                step.loop.in_flight -= 1

    # -- steps

    def _enter(self, event: Event) -> None:
        step = self.state.steps.get(event.node_name or "")
        if step is None:
            return
        step.status = RUNNING
        step.runs += 1
        step.error = None
        context = event.payload
        if "iterations_expected" in context:
            items = context.get("items")
            total = int(context["iterations_expected"])
            if not isinstance(items, list) or len(items) != total:
                items = [None] * total
            step.loop = LoopState(
                items=items,
                iterator=str(context.get("iterator_var", "item")),
                mode=str(context.get("mode", "sequential")),
                max_in_flight=context.get("max_in_flight"),
                results=[None] * total,
            )
        comp = self.graph.component.get(step.name)
        if comp is not None and comp in self.graph.cyclic:
            self.entered_cycles.add(comp)

    def _exit(self, event: Event) -> None:
        state = self.state
        step = state.steps.get(event.node_name or "")
        if step is None:
            return
        step.status = COMPLETED
        if step.loop is not None:
            step.data = loop_view(step.loop.results)
            step.view = step.data
            step.has_result = True
        state.last_completed = step.name
        self.contexts.changed(step=step.name)
        self._mark_edges(step.name, event.payload)

    def _skipped(self, event: Event) -> None:
        step = self.state.steps.get(event.node_name or "")
        if step is None:
            return
        step.status = SKIPPED
        self._mark_edges(step.name, event.payload)

    def _mark_edges(self, source: str, payload: Mapping[str, Any]) -> None:
        """The arcs a finished step fired are live; the others are dead (outside cycles, at once)."""
        fired = set(payload.get("fired") or ())
        dead = set(payload.get("dead") or ())
        trivial = not self.graph.in_cycle(source)
        edges = self.state.edges
        for target in self.graph.successors.get(source, ()):
            if target in fired:
                edges[(source, target)] = LIVE
            elif target in dead or trivial:
                if edges.get((source, target)) != LIVE:
                    edges[(source, target)] = DEAD

    # -- the execution

    def _ctx_updated(self, event: Event) -> None:
        values = event.payload.get("values")
        if isinstance(values, dict):
            self.state.ctx.update(values)
            self.contexts.changed(keys=values)

    def _started(self, event: Event) -> None:
        state = self.state
        context = event.context or {}
        workload = context.get("workload")
        state.workload = dict(workload) if isinstance(workload, dict) else {}
        state.path = context.get("path", state.path)
        state.status = "RUNNING"
        state.parent_execution_id = event.parent_execution_id
        state.meta = dict(event.meta or {})
        self.contexts.changed(everything=True)

    def _playbook_completed(self, event: Event) -> None:
        self.state.status = "COMPLETED"

    def _playbook_failed(self, event: Event) -> None:
        state = self.state
        state.status = "FAILED"
        state.error = (event.meta or {}).get("error") or state.error

    def _playbook_cancelled(self, event: Event) -> None:
        state = self.state
        state.status = "CANCELLED"
        state.cancel_requested = True
        reason = (event.meta or {}).get("reason")
        state.error = state.error or f"cancelled: {reason or 'no reason given'}"


def _payload_data(payload: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The tool's data inside a `call.done` payload (`result.context.data`), and a pipeline's
    results by task label (`result.context.tasks`)."""
    result = payload.get("result")
    if isinstance(result, dict):
        context = result.get("context")
        if isinstance(context, dict):
            tasks = context.get("tasks")
            return context.get("data"), tasks if isinstance(tasks, dict) else None
        return result.get("data"), None
    return payload.get("data"), None
