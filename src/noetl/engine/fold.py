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
from noetl.engine.results import loop_view, pipeline_result, view_of
from noetl.engine.state import (
    COMPLETED,
    DEAD,
    FAILED,
    LIVE,
    RUNNING,
    SKIPPED,
    CommandState,
    CursorState,
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
        cursor = meta.get("cursor")
        claim = isinstance(cursor, dict) and cursor.get("phase") == "claim"
        frame = int(cursor.get("frame") or 0) if claim and isinstance(cursor, dict) else None
        self.state.commands[cid] = CommandState(
            command_id=cid,
            step=name,
            event_id=event.event_id,
            kind=str(meta.get("tool_kind") or event.node_type or ""),
            index=index,
            frame=frame,
            attempt=int(meta.get("attempt", 1)),
        )
        step = self.state.steps.get(name)
        loop = step.loop if step is not None else None
        if loop is not None and loop.cursor is not None and frame is not None:
            loop.cursor.claiming = True
            loop.cursor.frame = frame
        elif loop is not None and index is not None:
            loop.issued = max(loop.issued, int(index) + 1)
            loop.in_flight += 1

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
        data = _payload_data(payload, pipeline=command.kind == "task_sequence")
        step = state.steps[command.step]
        loop = step.loop
        if command.frame is not None and loop is not None and loop.cursor is not None:
            _claim_rows(loop, data)
        elif command.index is not None and loop is not None:
            if 0 <= command.index < loop.total:
                loop.results[command.index] = data
            loop.done += 1
            loop.in_flight -= 1
            if _succeeded(event, payload):
                loop.succeeded += 1
            else:
                loop.failed += 1
        else:
            step.data = data
            step.view = view_of(data)
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
            step.loop.failed += 1
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
        if context.get("__cursor_loop"):
            step.loop = LoopState(
                items=[],
                iterator=str(context.get("iterator_var", "item")),
                mode="cursor",
                max_in_flight=None,
                results=[],
                cursor=CursorState(row_concurrency=int(context.get("row_concurrency") or 1)),
            )
        elif "iterations_expected" in context:
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
            step.data = loop_view(step.loop)
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


def _payload_data(payload: Mapping[str, Any], *, pipeline: bool) -> Any:
    """The tool's data inside a `call.done` payload (`result.context.data`). A pipeline reports
    its tasks' results by label (`labels` names them in the order they ran); logs written before
    that carry them in `result.context.tasks`."""
    result = payload.get("result")
    if not isinstance(result, dict):
        return payload.get("data")
    context = result.get("context")
    if not isinstance(context, dict):
        return result.get("data")
    tasks = context.get("tasks")
    if isinstance(tasks, dict):
        return pipeline_result(tasks)
    data = context.get("data")
    if pipeline:
        order = context.get("labels")
        return pipeline_result(data, order if isinstance(order, list) else None)
    return data


_FAILED_STATUSES = frozenset({"error", "failed", "timeout"})


def _succeeded(event: Event, payload: Mapping[str, Any]) -> bool:
    """Whether a completed command's tool succeeded (a policy rule may continue past an error:
    the command completes with status `error`)."""
    status = event.payload.get("status")
    if status is None:
        result = payload.get("result")
        status = result.get("status") if isinstance(result, dict) else None
    return str(status or "success").lower() not in _FAILED_STATUSES


def _claim_rows(loop: LoopState, data: Any) -> None:
    """A cursor claim completed: its rows become the loop's next items (a new frame); no rows
    drains the cursor. Anything but a list of rows is noted for the decision to reject."""
    cursor = loop.cursor
    assert cursor is not None
    cursor.claiming = False
    rows = data if isinstance(data, list) else data.get("rows") if isinstance(data, dict) else None
    no_result_set = isinstance(data, dict) and data.get("columns") == [] and not rows
    if not isinstance(rows, list) or no_result_set:
        cursor.error = (
            "the claim query returned no rows (it must return them: SELECT ... or ... RETURNING ...)"
        )
        return
    if not rows:
        cursor.drained = True
        return
    cursor.frames += 1
    cursor.frame_start = len(loop.items)
    loop.items.extend(rows)
    loop.results.extend([None] * len(rows))
