"""The orchestration engine of one execution: fold events into state, decide what comes next.

`Engine.apply(event)` folds one event into the state; it is the only place state changes.
`Engine.react(event)` applies an event and, when it is a trigger (`command.completed`,
`command.failed`), decides: it emits new events (`ctx.updated`, `step.exit`, `step.skipped`,
`step.enter`, `command.issued`, `playbook.completed|failed`), applying each as it is emitted, and
returns them for the caller to persist. Decisions touch only what the trigger changed, so the cost
of one event does not grow with the length of the log.

Routing uses dead-path elimination: an arc that was not taken is *dead*; a step whose forward
incoming arcs are all decided runs if one of them is live and is skipped otherwise, and a skipped
step kills its own outgoing arcs. So fan-in barriers never wait forever and every branch ends.
"""

from __future__ import annotations

import logging
from collections import ChainMap, deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from noetl.dsl.model import Playbook, Step
from noetl.engine import events as ev
from noetl.engine.events import Event, utcnow
from noetl.engine.graph import Graph, analyse
from noetl.engine.results import (
    coerce_items,
    loop_view,
    normalise_set_key,
    plain,
    view_of,
)
from noetl.engine.state import (
    COMPLETED,
    DEAD,
    FAILED,
    LIVE,
    PENDING,
    RUNNING,
    SKIPPED,
    CommandState,
    ExecutionState,
    LoopState,
    StepState,
)
from noetl.errors import EngineError, NoetlError, TemplateError
from noetl.template import evaluate_condition, referenced_names, render_value

log = logging.getLogger(__name__)

# Keys of a single tool's config that the worker evaluates (with `output` in scope), not the engine.
_DEFERRED_SINGLE = ("spec", "set")
_ALWAYS_IN_SNAPSHOT = ("execution_id", "catalog_id", "path", "workload", "ctx")
_ITERATION_KEYS = ("iter", "_index", "_total", "loop_index")


def pool_for(path: str | None, override: str | None = None) -> str:
    """NATS pool segment: the execution_pool override, else by path prefix."""
    if override:
        return override
    if path:
        if path.startswith("system/"):
            return "system"
        if path.startswith("subscription/"):
            return "subscription"
    return "shared"


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
        # Metadata stamped on every event of this execution (iterator metadata, trace).
        self.stamp: dict[str, Any] = dict(stamp or {})
        self._out: list[Event] = []
        self._ready: deque[str] = deque()
        self._base: dict[str, Any] | None = None  # the render context, kept up to date incrementally
        self._dirty_steps: set[str] = set()
        self._dirty_keys: set[str] = set()
        self._last_command: tuple[CommandState, dict[str, Any]] | None = None
        self._entered_cycles: set[int] = set()
        self._max_attempts = max_attempts

    # ------------------------------------------------------------------ public API

    @property
    def execution_id(self) -> int:
        return self.state.execution_id

    def start(
        self, workload: Mapping[str, Any] | None = None, *, meta: Mapping[str, Any] | None = None
    ) -> list[Event]:
        """Emit `playbook_started` and dispatch the `start` step."""
        merged = dict(self.playbook.workload)
        merged.update(workload or {})
        started_meta = {"emitted_at": self.clock().isoformat(), "emitter": "engine", **(meta or {})}
        self._out = []
        self._emit(
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
        self._guarded(lambda: self._dispatch("start", check_guard=False))
        return self._flush()

    def react(self, event: Event) -> list[Event]:
        """Apply a reported event; if it is a trigger, decide and return the new events."""
        self._out = []
        self.apply(event)
        if self.state.terminal:
            return self._flush()
        if event.event_type == ev.COMMAND_COMPLETED and self._last_command is not None:
            command, payload = self._last_command
            self._guarded(lambda: self._on_command_completed(command, payload))
        elif event.event_type == ev.COMMAND_FAILED:
            self._finish_if_done()
        return self._flush()

    def hand_over(self, command_id: str) -> None:
        """The command went to a worker that may run it before claiming it (it reports the claim
        with its outcome): a failing run waits for that outcome as for a claimed command."""
        command = self.state.commands.get(command_id)
        if command is not None and command.status == "issued":
            command.handed_over = True

    def take_back(self, command_id: str) -> list[Event]:
        """No worker took the handed-over command in time: stop waiting for it (a failing run may
        end now)."""
        self._out = []
        command = self.state.commands.get(command_id)
        if command is not None and command.handed_over:
            command.handed_over = False
            self._finish_if_done()
        return self._flush()

    def cancel(self, reason: str = "cancelled by user") -> list[Event]:
        """Stop the execution: nothing new is dispatched and it ends CANCELLED."""
        self._out = []
        if not self.state.terminal:
            self._emit(
                ev.PLAYBOOK_CANCELLED,
                node_id="playbook",
                node_name="playbook",
                status="CANCELLED",
                result={"status": "CANCELLED", "context": {"reason": reason}},
                meta={"status": "CANCELLED", "reason": reason},
            )
        return self._flush()

    def expire(self, command_id: str, *, reason: str = "the worker's lease expired") -> list[Event]:
        """A claimed command whose worker vanished: issue it again (attempt + 1), or fail its step
        once `max_attempts` is reached. Late events of the superseded attempt are ignored."""
        self._out = []
        state = self.state
        command = state.commands.get(command_id)
        if command is None or state.terminal:
            return []
        spec = self.playbook.steps[command.step]
        if command.attempt >= self._max_attempts or state.failing:
            error = f"{reason}; gave up after {command.attempt} attempt(s)"
            self._emit(
                ev.COMMAND_FAILED,
                node_name=command.step,
                node_type=command.kind,
                status="FAILED",
                result={"status": "FAILED", "context": {"command_id": command_id, "error": error}},
                meta={"command_id": command_id, "attempt": command.attempt},
            )
            self._finish_if_done()
            return self._flush()
        self._emit(
            ev.COMMAND_EXPIRED,
            node_name=command.step,
            node_type=command.kind,
            status="EXPIRED",
            result={"status": "EXPIRED", "context": {"command_id": command_id, "reason": reason}},
            meta={"command_id": command_id, "attempt": command.attempt},
        )

        def reissue() -> None:
            step = state.steps[command.step]
            ctx: Mapping[str, Any] = self.context()
            if command.index is not None and step.loop is not None:
                ctx = self._iteration_context(ctx, step.loop, command.index)
            self._issue(spec, ctx, command.index, attempt=command.attempt + 1)

        self._guarded(reissue)
        return self._flush()

    def resume(self) -> list[Event]:
        """After a restart (state folded from the log): settle what was derived but not logged
        (cycles that went quiet) and end the execution if nothing is left to do."""
        self._out = []
        if self.state.terminal:
            return []

        def settle() -> None:
            for comp in sorted(self._entered_cycles):
                self._check_cycle_quiet(comp)

        self._guarded(settle)
        return self._flush()

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

    # ------------------------------------------------------------------ folding

    def apply(self, event: Event) -> None:
        """Fold one event into the state. Deterministic; the single place state changes."""
        state = self.state
        state.events_applied += 1
        if event.event_id > state.last_event_id:
            state.last_event_id = event.event_id
        kind = event.event_type
        self._last_command = None
        if kind == ev.COMMAND_COMPLETED:
            self._apply_completed(event)
        elif kind == ev.CALL_DONE:
            cid = event.command_id
            if cid is not None and cid in state.commands:
                state.call_results[cid] = event.payload
        elif kind == ev.COMMAND_ISSUED:
            self._apply_issued(event)
        elif kind in (ev.COMMAND_CLAIMED, ev.COMMAND_STARTED):
            cid = event.command_id
            command = state.commands.get(cid) if cid else None
            if command is not None:
                command.status = "claimed" if kind == ev.COMMAND_CLAIMED else "started"
                command.worker_id = event.worker_id or command.worker_id
                if kind == ev.COMMAND_CLAIMED:
                    command.claimed_at = event.created_at
        elif kind == ev.COMMAND_FAILED:
            self._apply_failed(event)
        elif kind == ev.COMMAND_EXPIRED:
            cid = event.command_id
            command = state.commands.pop(cid, None) if cid else None
            if command is not None:
                state.call_results.pop(command.command_id, None)
                step = state.steps.get(command.step)
                if step is not None and step.loop is not None and command.index is not None:
                    step.loop.in_flight -= 1
        elif kind == ev.STEP_ENTER:
            self._apply_enter(event)
        elif kind == ev.STEP_EXIT:
            self._apply_exit(event)
        elif kind == ev.STEP_SKIPPED:
            self._apply_skipped(event)
        elif kind == ev.CTX_UPDATED:
            values = event.payload.get("values")
            if isinstance(values, dict):
                state.ctx.update(values)
                self._changed(keys=values)
        elif kind == ev.PLAYBOOK_STARTED:
            context = event.context or {}
            workload = context.get("workload")
            state.workload = dict(workload) if isinstance(workload, dict) else {}
            state.path = context.get("path", state.path)
            state.status = "RUNNING"
            state.parent_execution_id = event.parent_execution_id
            state.meta = dict(event.meta or {})
            self._changed(everything=True)
        elif kind == ev.PLAYBOOK_COMPLETED:
            state.status = "COMPLETED"
        elif kind == ev.PLAYBOOK_FAILED:
            state.status = "FAILED"
            state.error = (event.meta or {}).get("error") or state.error
        elif kind == ev.PLAYBOOK_CANCELLED:
            state.status = "CANCELLED"
            state.cancel_requested = True
            reason = (event.meta or {}).get("reason")
            state.error = state.error or f"cancelled: {reason or 'no reason given'}"

    def _apply_issued(self, event: Event) -> None:
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

    def _apply_completed(self, event: Event) -> None:
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
            self._changed(step=step.name)
        step.completed_event_id = event.event_id
        self._last_command = (command, payload)

    def _apply_failed(self, event: Event) -> None:
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

    def _apply_enter(self, event: Event) -> None:
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
            self._entered_cycles.add(comp)

    def _apply_exit(self, event: Event) -> None:
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
        self._changed(step=step.name)
        self._mark_edges(step.name, event.payload)

    def _apply_skipped(self, event: Event) -> None:
        step = self.state.steps.get(event.node_name or "")
        if step is None:
            return
        step.status = SKIPPED
        self._mark_edges(step.name, event.payload)

    def _mark_edges(self, source: str, payload: Mapping[str, Any]) -> None:
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

    # ------------------------------------------------------------------ deciding

    def _emit(
        self,
        event_type: str,
        *,
        node_name: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        status: str | None = None,
        context: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        event_id: int | None = None,
    ) -> Event:
        full_meta = {"emitted_by": "engine", **(meta or {})}
        if self.stamp:
            full_meta.update(self.stamp)
        event = Event(
            event_id=event_id if event_id is not None else self.ids(),
            execution_id=self.execution_id,
            event_type=event_type,
            node_name=node_name,
            node_id=node_id if node_id is not None else node_name,
            node_type=node_type,
            status=status,
            context=context,
            meta=full_meta,
            result=result,
            parent_execution_id=self.state.parent_execution_id,
            catalog_id=self.state.catalog_id,
            created_at=self.clock(),
        )
        self.apply(event)
        self._out.append(event)
        return event

    def _flush(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a decision; a template or loop error fails the execution with a clear message."""
        try:
            action()
            self._drain_ready()
        except (TemplateError, EngineError) as exc:
            self._fail_run(str(exc))
            return
        self._finish_if_done()

    def _fail_run(self, error: str) -> None:
        if self.state.terminal:
            return
        self._emit(
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
            self._emit(
                ev.PLAYBOOK_COMPLETED,
                node_id="playbook",
                node_name="playbook",
                status="COMPLETED",
                result={"status": "COMPLETED"},
                meta={"status": "COMPLETED", "last_step": state.last_completed},
            )

    # --- contexts

    def _changed(
        self, *, step: str | None = None, keys: Mapping[str, Any] | None = None, everything: bool = False
    ) -> None:
        """Note what templates can now see differently; the context is patched lazily."""
        self.state.version += 1
        if everything:
            self._base = None
        elif step is not None:
            self._dirty_steps.add(step)
        elif keys:
            self._dirty_keys.update(keys)

    def context(self) -> dict[str, Any]:
        """The render context of the current state. Updated in place by what changed since the
        last call (a step's result, ctx keys), so its cost does not grow with the run."""
        state = self.state
        base = self._base
        if base is None:
            base = dict(state.workload)
            base["workload"] = state.workload
            base["steps"] = {}
            base["ctx"] = {**state.workload, **state.ctx}
            base["execution_id"] = str(state.execution_id)
            base["catalog_id"] = None if state.catalog_id is None else str(state.catalog_id)
            base["path"] = state.path
            base["playbook"] = {"name": self.playbook.name, "path": self.playbook.path}
            self._base = base
            self._dirty_steps = {name for name, step in state.steps.items() if step.has_result}
            self._dirty_keys = set(state.ctx)
        if self._dirty_steps:
            steps_ns = base["steps"]
            for name in self._dirty_steps:
                step = state.steps[name]
                if step.has_result:
                    steps_ns[name] = step.view
                    if name not in state.ctx:  # durable ctx values win over step results
                        base[name] = step.view
            self._dirty_steps.clear()
        if self._dirty_keys:
            ctx_ns = base["ctx"]
            for key in self._dirty_keys:
                value = state.ctx[key]
                base[key] = value
                ctx_ns[key] = value
            self._dirty_keys.clear()
        return base

    def _step_context(self, step: StepState, *, event_name: str) -> Mapping[str, Any]:
        return ChainMap({"output": step.view, "event": {"name": event_name}}, self.context())

    @staticmethod
    def _iteration_context(base: Mapping[str, Any], loop: LoopState, index: int) -> Mapping[str, Any]:
        item = loop.items[index]
        bindings = {
            loop.iterator: item,
            "_index": index,
            "_total": loop.total,
            "loop_index": index,
        }
        bindings["iter"] = {loop.iterator: item, "_index": index, "_total": loop.total, "index": index}
        return ChainMap(bindings, base)  # type: ignore[arg-type]

    # --- step completion and routing

    def _on_command_completed(self, command: CommandState, payload: Mapping[str, Any]) -> None:
        state = self.state
        step = state.steps[command.step]
        updates = payload.get("ctx_updates")
        if isinstance(updates, dict) and updates:
            self._emit(
                ev.CTX_UPDATED,
                status="CONTEXT",
                result={"status": "CONTEXT", "context": {"step": command.step, "values": updates}},
            )
        if state.failing:
            if command.index is None and step.status == RUNNING:
                # The run is ending: record the step's completion, but route nowhere.
                self._emit(
                    ev.STEP_EXIT,
                    node_name=step.name,
                    status="COMPLETED",
                    result={"status": "COMPLETED", "context": {"fired": [], "halted": True}},
                )
            return
        if command.index is not None and step.loop is not None:
            if step.status != RUNNING:
                return
            loop = step.loop
            if loop.done >= loop.total:
                self._complete_step(step)
            else:
                self._fill_loop(step)
        elif step.status == RUNNING:
            self._complete_step(step)

    def _complete_step(self, step: StepState) -> None:
        spec = self.playbook.steps[step.name]
        event_name = "loop.done" if spec.loop is not None else "call.done"
        if spec.loop is not None and step.loop is not None:
            # Make the aggregate visible to this step's own `set` and arcs.
            step.data = loop_view(step.loop.results)
            step.view = step.data
            step.has_result = True
            self._changed(step=step.name)
        if spec.set:
            values = self._render_set(
                spec.set, self._step_context(step, event_name=event_name), step.name, "set"
            )
            self._emit(
                ev.CTX_UPDATED,
                status="CONTEXT",
                result={"status": "CONTEXT", "context": {"step": step.name, "values": values}},
            )
        fired: list[str] = []
        if spec.next is not None and spec.next.arcs:
            ctx = self._step_context(step, event_name=event_name)
            for arc in spec.next.arcs:
                if arc.when is not None and not self._condition(
                    arc.when, ctx, step.name, f"next[{arc.step}].when"
                ):
                    continue
                if arc.set:
                    values = self._render_set(arc.set, ctx, step.name, f"next[{arc.step}].set")
                    self._emit(
                        ev.CTX_UPDATED,
                        status="CONTEXT",
                        result={
                            "status": "CONTEXT",
                            "context": {"step": step.name, "arc": arc.step, "values": values},
                        },
                    )
                    ctx = self._step_context(step, event_name=event_name)
                if arc.step not in fired:
                    fired.append(arc.step)
                if spec.next.mode == "exclusive":
                    break
        context: dict[str, Any] = {"fired": fired}
        if step.loop is not None:
            context["count"] = step.loop.total
        self._emit(
            ev.STEP_EXIT,
            node_name=step.name,
            status="COMPLETED",
            result={"status": "COMPLETED", "context": context},
        )
        self._route(step.name, fired)

    def _route(self, source: str, fired: list[str]) -> None:
        graph = self.graph
        for target in graph.successors.get(source, ()):
            if target in fired and graph.same_cycle(source, target):
                self._reenter(source, target)
            else:
                self._ready.append(target)
        if graph.in_cycle(source):
            self._check_cycle_quiet(graph.component[source])

    def _reenter(self, source: str, target: str) -> None:
        step = self.state.steps[target]
        if step.status == RUNNING:
            log.warning("step '%s' is still running; arc from '%s' does not start it again", target, source)
            return
        args = self._arc_args(source, target)
        self._dispatch(target, arc_args=args)

    def _arc_args(self, source: str, target: str) -> dict[str, Any]:
        spec = self.playbook.steps[source]
        if spec.next is None:
            return {}
        for arc in spec.next.arcs:
            if arc.step == target and arc.args:
                return dict(arc.args)
        return {}

    def _drain_ready(self) -> None:
        while self._ready:
            target = self._ready.popleft()
            self._check_ready(target)

    def _check_ready(self, name: str) -> None:
        if self.state.failing or self.state.terminal:
            return
        graph = self.graph
        step = self.state.steps[name]
        comp = graph.component[name]
        cyclic = comp in graph.cyclic
        sources = graph.forward_in[name]
        edge_states = [self.state.edges.get((source, name)) for source in sources]
        if cyclic and comp in self._entered_cycles:
            return  # a cycle that already ran is re-entered only through its own arcs
        if step.status != PENDING:
            return
        if any(s is None for s in edge_states) or not sources:
            return
        if LIVE in edge_states:
            self._dispatch(name, arc_args=self._first_live_args(name))
        elif cyclic:
            self._maybe_skip_cycle(comp)
        else:
            self._skip(name, reason="no incoming arc was taken")

    def _first_live_args(self, name: str) -> dict[str, Any]:
        for source in self.graph.forward_in[name]:
            if self.state.edges.get((source, name)) == LIVE:
                args = self._arc_args(source, name)
                if args:
                    return args
        return {}

    def _skip(
        self, name: str, *, reason: str, fired: list[str] | None = None, dead: list[str] | None = None
    ) -> None:
        context: dict[str, Any] = {"reason": reason, "fired": fired or []}
        if dead:
            context["dead"] = dead
        self._emit(
            ev.STEP_SKIPPED,
            node_name=name,
            status="SKIPPED",
            result={"status": "SKIPPED", "context": context},
        )
        self._route(name, fired or [])

    def _maybe_skip_cycle(self, comp: int) -> None:
        """A cycle none of whose steps can be entered any more is skipped as a whole."""
        graph = self.graph
        members = graph.members[comp]
        for member in members:
            states = [self.state.edges.get((s, member)) for s in graph.forward_in[member]]
            if LIVE in states or any(s is None for s in states):
                return
        for member in members:
            if self.state.steps[member].status == PENDING:
                dead = [t for (s, t) in graph.exits.get(comp, ()) if s == member]
                context = {"reason": "no incoming arc was taken", "fired": [], "dead": dead}
                self._emit(
                    ev.STEP_SKIPPED,
                    node_name=member,
                    status="SKIPPED",
                    result={"status": "SKIPPED", "context": context},
                )
        for _, target in graph.exits.get(comp, ()):
            self._ready.append(target)

    def _check_cycle_quiet(self, comp: int) -> None:
        """When no step of a cycle is running, the arcs leaving it that never fired are dead."""
        graph = self.graph
        steps = self.state.steps
        if any(steps[m].status == RUNNING for m in graph.members[comp]):
            return
        edges = self.state.edges
        for source, target in graph.exits.get(comp, ()):
            if edges.get((source, target)) is None:
                edges[(source, target)] = DEAD
            self._ready.append(target)

    # --- dispatch

    def _dispatch(
        self, name: str, *, arc_args: Mapping[str, Any] | None = None, check_guard: bool = True
    ) -> None:
        spec = self.playbook.steps[name]
        base: Mapping[str, Any] = self.context()
        if arc_args:
            base = ChainMap(dict(arc_args), base)  # type: ignore[arg-type]
        if check_guard and spec.when is not None and not self._condition(spec.when, base, name, "when"):
            self._guard_skip(spec, base)
            return
        if spec.loop is not None:
            self._enter_loop(spec, base, arc_args)
            return
        enter_ctx: dict[str, Any] | None = {"args": dict(arc_args)} if arc_args else None
        self._emit(
            ev.STEP_ENTER,
            node_name=name,
            status="ENTERED",
            result={"status": "ENTERED", "context": enter_ctx} if enter_ctx else {"status": "ENTERED"},
        )
        self._issue(spec, base, None)

    def _guard_skip(self, spec: Step, ctx: Mapping[str, Any]) -> None:
        """A step whose `when` is false is skipped and hands on to its first matching arc."""
        fired: list[str] = []
        if spec.next is not None:
            for arc in spec.next.arcs:
                if arc.when is None or self._condition(arc.when, ctx, spec.name, f"next[{arc.step}].when"):
                    fired.append(arc.step)
                    break
        self._skip(spec.name, reason="when", fired=fired)

    def _enter_loop(self, spec: Step, base: Mapping[str, Any], arc_args: Mapping[str, Any] | None) -> None:
        loop = spec.loop
        assert loop is not None
        expression = loop.in_
        try:
            raw = render_value(expression, base) if isinstance(expression, (str, list, dict)) else expression
        except TemplateError as exc:
            raise EngineError(f"step '{spec.name}': loop.in: {exc}") from exc
        items = coerce_items(plain(raw), step=spec.name, expression=expression)
        context: dict[str, Any] = {
            "iterations_expected": len(items),
            "iterator_var": loop.iterator,
            "mode": loop.mode,
            "max_in_flight": loop.max_in_flight,
            "items": items,
        }
        if arc_args:
            context["args"] = dict(arc_args)
        self._emit(
            ev.STEP_ENTER,
            node_name=spec.name,
            status="ENTERED",
            result={"status": "ENTERED", "context": context},
        )
        step = self.state.steps[spec.name]
        if not items:
            self._complete_step(step)
            return
        self._fill_loop(step, arc_args)

    def _fill_loop(self, step: StepState, arc_args: Mapping[str, Any] | None = None) -> None:
        loop = step.loop
        assert loop is not None
        spec = self.playbook.steps[step.name]
        if loop.mode == "parallel":
            limit = loop.max_in_flight or loop.total
        else:
            limit = 1
        if loop.issued >= loop.total or loop.in_flight >= limit:
            return
        base: Mapping[str, Any] = self.context()
        if arc_args:
            base = ChainMap(dict(arc_args), base)  # type: ignore[arg-type]
        while loop.issued < loop.total and loop.in_flight < limit:
            index = loop.issued
            self._issue(spec, self._iteration_context(base, loop, index), index)

    def _issue(self, spec: Step, ctx: Mapping[str, Any], index: int | None, *, attempt: int = 1) -> None:
        state = self.state
        event_id = self.ids()
        command_id = f"{state.execution_id}:{spec.name}:{event_id}"
        if index is not None:
            command_id += f":i{index}"
        kind = spec.tool_kind
        tool_config, snapshot = self._command_config(spec, ctx, index)
        meta: dict[str, Any] = {
            "command_id": command_id,
            "step": spec.name,
            "tool_kind": kind,
            "attempt": attempt,
            "max_attempts": self._max_attempts,
            "execution_id": str(state.execution_id),
            "catalog_id": None if state.catalog_id is None else str(state.catalog_id),
            "pool": pool_for(state.path, state.meta.get("execution_pool")),
            "actionable": True,
        }
        if index is not None:
            loop = state.steps[spec.name].loop
            assert loop is not None
            meta.update(
                iteration_index=index,
                iteration_total=loop.total,
                iterator_step=spec.name,
                item_var=loop.iterator,
                iterator_item=loop.items[index],
            )
        trace = state.meta.get("trace")
        if trace:
            meta["trace"] = trace
        self._emit(
            ev.COMMAND_ISSUED,
            node_name=spec.name,
            node_type=kind,
            status="PENDING",
            context={"tool_config": tool_config, "args": dict(spec.args), "render_context": snapshot},
            meta=meta,
            event_id=event_id,
        )

    def _command_config(
        self, spec: Step, ctx: Mapping[str, Any], index: int | None
    ) -> tuple[Any, dict[str, Any]]:
        """The command's tool config (rendered where the engine may render it) and the context
        snapshot the worker needs for what it renders itself."""
        try:
            if spec.pipeline is not None:
                tasks = [{"name": task.label, "kind": task.kind, **task.config} for task in spec.pipeline]
                if spec.input:
                    tasks[0] = {**tasks[0], "input": {**spec.input, **(tasks[0].get("input") or {})}}
                names = referenced_names(tasks)
                return tasks, self._snapshot(ctx, names)
            if spec.tool is None:
                return {}, {}
            raw = spec.tool.config
            deferred = {k: raw[k] for k in _DEFERRED_SINGLE if k in raw}
            rest = {k: v for k, v in raw.items() if k not in deferred}
            if spec.input:
                tool_input = rest.get("input")
                rest["input"] = {**spec.input, **(tool_input if isinstance(tool_input, dict) else {})}
            rendered = plain(render_value(rest, ctx))
            if not isinstance(rendered, dict):
                rendered = {}
            if index is not None and spec.tool.kind == "python":
                tool_input = rendered.get("input")
                tool_input = dict(tool_input) if isinstance(tool_input, dict) else {}
                for key in (spec.loop.iterator if spec.loop else "item", "_index", "_total"):
                    if key not in tool_input and key in ctx:
                        tool_input[key] = plain(ctx[key])
                rendered["input"] = tool_input
            rendered.update(deferred)
            return rendered, self._snapshot(ctx, referenced_names(deferred)) if deferred else {}
        except TemplateError as exc:
            raise EngineError(f"step '{spec.name}': cannot render tool config: {exc}") from exc

    def _snapshot(self, ctx: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
        wanted = set(names)
        wanted.update(_ALWAYS_IN_SNAPSHOT)
        wanted.update(k for k in _ITERATION_KEYS if k in ctx)
        loop_var = ctx.get("iter")
        if isinstance(loop_var, dict):
            wanted.update(k for k in loop_var if not k.startswith("_") and k != "index")
        # Shallow copies: the context's namespace maps (`ctx`, `steps`) are updated in place later.
        return {k: _detached(plain(ctx[k])) for k in wanted if k in ctx}

    # --- helpers

    def _condition(self, expr: str | bool, ctx: Mapping[str, Any], step: str, field: str) -> bool:
        try:
            return evaluate_condition(expr, ctx)
        except TemplateError as exc:
            raise EngineError(f"step '{step}': {field}: {exc}") from exc

    def _render_set(
        self, mapping: Mapping[str, Any], ctx: Mapping[str, Any], step: str, field: str
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, template in mapping.items():
            try:
                values[normalise_set_key(str(key))] = plain(render_value(template, ctx))
            except TemplateError as exc:
                raise EngineError(f"step '{step}': {field}.{key}: {exc}") from exc
        return values


def _detached(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


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


__all__ = ["Engine", "NoetlError", "pool_for"]
