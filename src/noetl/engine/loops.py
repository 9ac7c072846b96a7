"""Loop steps: entering one (rendering `loop.in` into its items) and issuing its iterations
lazily, one at a time (sequential) or up to `max_in_flight` at once (parallel; without it, up to
a window of DEFAULT_LOOP_WINDOW, a setting), so a loop over a million items never has a million
commands outstanding."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from noetl.dsl.model import Playbook, Step
from noetl.engine import events as ev
from noetl.engine.commands import Commands
from noetl.engine.context import RenderContext, iteration_context
from noetl.engine.outbox import Outbox
from noetl.engine.results import coerce_items, plain
from noetl.engine.state import ExecutionState, StepState
from noetl.errors import EngineError, TemplateError
from noetl.template import render_value

DEFAULT_LOOP_WINDOW = 1000  # commands a parallel loop without max_in_flight keeps outstanding


class Loops:
    def __init__(
        self,
        playbook: Playbook,
        state: ExecutionState,
        contexts: RenderContext,
        outbox: Outbox,
        commands: Commands,
        *,
        window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        self.playbook = playbook
        self.window = max(1, window)
        self.state = state
        self.contexts = contexts
        self.outbox = outbox
        self.commands = commands

    def enter(self, spec: Step, base: Mapping[str, Any], arc_args: Mapping[str, Any] | None) -> bool:
        """Emit the loop step's `step.enter` with its items and issue the first iterations.
        False when there are no items (the step is complete at once)."""
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
        self.outbox.emit(
            ev.STEP_ENTER,
            node_name=spec.name,
            status="ENTERED",
            result={"status": "ENTERED", "context": context},
        )
        if not items:
            return False
        self.fill(self.state.steps[spec.name], arc_args)
        return True

    def fill(self, step: StepState, arc_args: Mapping[str, Any] | None = None) -> None:
        """Issue iterations until the loop's limit of commands in flight is reached."""
        loop = step.loop
        assert loop is not None
        spec = self.playbook.steps[step.name]
        if loop.mode == "parallel":
            limit = loop.max_in_flight or self.window
        else:
            limit = 1
        if loop.issued >= loop.total or loop.in_flight >= limit:
            return
        base: Mapping[str, Any] = self.contexts.current()
        if arc_args:
            base = ChainMap(dict(arc_args), base)  # type: ignore[arg-type]
        while loop.issued < loop.total and loop.in_flight < limit:
            index = loop.issued
            self.commands.issue(spec, iteration_context(base, loop, index), index)
