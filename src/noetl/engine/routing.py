"""Routing: completing a step (its `set`, its arcs), entering or skipping the steps it leads to,
with dead-path elimination.

An arc that was not taken is *dead*; a step whose forward incoming arcs are all decided runs if
one of them is live and is skipped otherwise, and a skipped step kills its own outgoing arcs.
So fan-in barriers never wait forever and every branch ends. Cycles (strongly connected parts
of the graph) are entered once from outside and then only through their own arcs; when none of
their steps runs any more, the arcs leaving them that never fired are dead.
"""

from __future__ import annotations

import logging
from collections import ChainMap, deque
from collections.abc import Mapping
from typing import Any

from noetl.dsl.model import Playbook, Step
from noetl.engine import events as ev
from noetl.engine.commands import Commands
from noetl.engine.context import RenderContext
from noetl.engine.graph import Graph
from noetl.engine.loops import Loops
from noetl.engine.outbox import Outbox
from noetl.engine.results import loop_view, normalise_set_key, plain
from noetl.engine.state import DEAD, LIVE, PENDING, RUNNING, ExecutionState, StepState
from noetl.errors import EngineError, TemplateError
from noetl.template import evaluate_condition, render_value

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self,
        playbook: Playbook,
        graph: Graph,
        state: ExecutionState,
        *,
        contexts: RenderContext,
        outbox: Outbox,
        commands: Commands,
        loops: Loops,
        entered_cycles: set[int],
    ) -> None:
        self.playbook = playbook
        self.graph = graph
        self.state = state
        self.contexts = contexts
        self.outbox = outbox
        self.commands = commands
        self.loops = loops
        self.entered_cycles = entered_cycles  # kept by the fold; read here
        self._ready: deque[str] = deque()  # steps whose incoming arcs changed

    # -- entering a step

    def dispatch(
        self,
        name: str,
        *,
        arc_args: Mapping[str, Any] | None = None,
        launch: bool = False,
    ) -> None:
        """Enter step `name` (skip it when its `when` is false) and issue its command(s).
        `launch`: the start step as the run starts (no guard; its `loop.in` must be a list)."""
        spec = self.playbook.steps[name]
        base: Mapping[str, Any] = self.contexts.current()
        if arc_args:
            base = ChainMap(dict(arc_args), base)  # type: ignore[arg-type]
        if not launch and spec.when is not None and not condition(spec.when, base, name, "when"):
            self._guard_skip(spec, base)
            return
        if spec.loop is not None:
            if not self.loops.enter(spec, base, arc_args, strict=launch):
                self.complete_step(self.state.steps[spec.name])
            return
        enter_ctx: dict[str, Any] | None = {"args": dict(arc_args)} if arc_args else None
        self.outbox.emit(
            ev.STEP_ENTER,
            node_name=name,
            status="ENTERED",
            result={"status": "ENTERED", "context": enter_ctx} if enter_ctx else {"status": "ENTERED"},
        )
        self.commands.issue(spec, base, None)

    def _guard_skip(self, spec: Step, ctx: Mapping[str, Any]) -> None:
        """A step whose `when` is false is skipped and hands on to its first matching arc."""
        fired: list[str] = []
        if spec.next is not None:
            for arc in spec.next.arcs:
                if arc.when is None or condition(arc.when, ctx, spec.name, f"next[{arc.step}].when"):
                    fired.append(arc.step)
                    break
        self._skip(spec.name, reason="when", fired=fired)

    # -- completing a step

    def complete_step(self, step: StepState) -> None:
        """Apply the step's `set`, evaluate its arcs, emit `step.exit` and route onward."""
        spec = self.playbook.steps[step.name]
        event_name = "loop.done" if spec.loop is not None else "call.done"
        if spec.loop is not None and step.loop is not None:
            # Make the aggregate visible to this step's own `set` and arcs.
            step.data = loop_view(step.loop)
            step.view = step.data
            step.has_result = True
            self.contexts.changed(step=step.name)
        if spec.set:
            values = render_set(
                spec.set, self.contexts.for_step(step, event_name=event_name), step.name, "set"
            )
            self.outbox.emit(
                ev.CTX_UPDATED,
                status="CONTEXT",
                result={"status": "CONTEXT", "context": {"step": step.name, "values": values}},
            )
        fired = self._fire_arcs(spec, step, event_name)
        context: dict[str, Any] = {"fired": fired}
        if step.loop is not None:
            context["count"] = step.loop.total
            if step.loop.cursor is not None:
                context["__cursor_drained"] = step.loop.cursor.drained
        self.outbox.emit(
            ev.STEP_EXIT,
            node_name=step.name,
            status="COMPLETED",
            result={"status": "COMPLETED", "context": context},
        )
        self._route(step.name, fired)

    def _fire_arcs(self, spec: Step, step: StepState, event_name: str) -> list[str]:
        """The targets of the arcs that match (the first only, for exclusive routing); an arc's
        `set` is applied as it fires, so later arcs see it."""
        fired: list[str] = []
        if spec.next is None or not spec.next.arcs:
            return fired
        ctx = self.contexts.for_step(step, event_name=event_name)
        for arc in spec.next.arcs:
            if arc.when is not None and not condition(arc.when, ctx, step.name, f"next[{arc.step}].when"):
                continue
            if arc.set:
                values = render_set(arc.set, ctx, step.name, f"next[{arc.step}].set")
                self.outbox.emit(
                    ev.CTX_UPDATED,
                    status="CONTEXT",
                    result={
                        "status": "CONTEXT",
                        "context": {"step": step.name, "arc": arc.step, "values": values},
                    },
                )
                ctx = self.contexts.for_step(step, event_name=event_name)
            if arc.step not in fired:
                fired.append(arc.step)
            if spec.next.mode == "exclusive":
                break
        return fired

    # -- routing onward

    def _route(self, source: str, fired: list[str]) -> None:
        graph = self.graph
        for target in graph.successors.get(source, ()):
            if target in fired and graph.same_cycle(source, target):
                self._reenter(source, target)
            else:
                self._ready.append(target)
        if graph.in_cycle(source):
            self.check_cycle_quiet(graph.component[source])

    def _reenter(self, source: str, target: str) -> None:
        step = self.state.steps[target]
        if step.status == RUNNING:
            log.warning("step '%s' is still running; arc from '%s' does not start it again", target, source)
            return
        args = self._arc_args(source, target)
        self.dispatch(target, arc_args=args)

    def _arc_args(self, source: str, target: str) -> dict[str, Any]:
        spec = self.playbook.steps[source]
        if spec.next is None:
            return {}
        for arc in spec.next.arcs:
            if arc.step == target and arc.args:
                return dict(arc.args)
        return {}

    def drain_ready(self) -> None:
        """Decide every step whose incoming arcs changed: enter it, skip it, or keep waiting."""
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
        if cyclic and comp in self.entered_cycles:
            return  # a cycle that already ran is re-entered only through its own arcs
        if step.status != PENDING:
            return
        if any(s is None for s in edge_states) or not sources:
            return
        if LIVE in edge_states:
            self.dispatch(name, arc_args=self._first_live_args(name))
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
        self.outbox.emit(
            ev.STEP_SKIPPED,
            node_name=name,
            status="SKIPPED",
            result={"status": "SKIPPED", "context": context},
        )
        self._route(name, fired or [])

    # -- cycles

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
                self.outbox.emit(
                    ev.STEP_SKIPPED,
                    node_name=member,
                    status="SKIPPED",
                    result={"status": "SKIPPED", "context": context},
                )
        for _, target in graph.exits.get(comp, ()):
            self._ready.append(target)

    def stuck(self) -> list[str]:
        """With nothing issued or running: the steps that still wait (each with what it waits
        for). A pending step outside a cycle that ran is stuck unless no arc path from `start`
        leads to it; a step still marked running is stuck too."""
        graph = self.graph
        edges = self.state.edges
        found: list[str] = []
        for name, step in self.state.steps.items():
            if step.status == RUNNING:
                found.append(f"'{name}' (running, with no command left)")
                continue
            if step.status != PENDING or name in graph.unreachable:
                continue
            comp = graph.component[name]
            if comp in graph.cyclic and comp in self.entered_cycles:
                continue  # a cycle member its cycle did not route to this time
            waiting = [s for s in graph.forward_in[name] if edges.get((s, name)) is None]
            found.append(f"'{name}' (waiting for {', '.join(repr(s) for s in waiting) or 'nothing'})")
        return found

    def check_cycle_quiet(self, comp: int) -> None:
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


def condition(expr: str | bool, ctx: Mapping[str, Any], step: str, field: str) -> bool:
    try:
        return evaluate_condition(expr, ctx)
    except TemplateError as exc:
        raise EngineError(f"step '{step}': {field}: {exc}") from exc


def render_set(mapping: Mapping[str, Any], ctx: Mapping[str, Any], step: str, field: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, template in mapping.items():
        try:
            values[normalise_set_key(str(key))] = plain(render_value(template, ctx))
        except TemplateError as exc:
            raise EngineError(f"step '{step}': {field}.{key}: {exc}") from exc
    return values
