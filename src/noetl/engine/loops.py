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

    def enter(
        self,
        spec: Step,
        base: Mapping[str, Any],
        arc_args: Mapping[str, Any] | None,
        *,
        strict: bool = False,
    ) -> bool:
        """Emit the loop step's `step.enter` with its items and issue the first iterations.
        False when there are no items (the step is complete at once). `strict`: `loop.in` must
        render to a list (the start step at launch), no coercion."""
        loop = spec.loop
        assert loop is not None
        if loop.cursor is not None:
            self._enter_cursor(spec, base, arc_args)
            return True
        raw = render_loop_in(spec, base)
        items = array_items(raw) if strict else coerce_items(raw, step=spec.name, expression=loop.in_)
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

    def _enter_cursor(self, spec: Step, base: Mapping[str, Any], arc_args: Mapping[str, Any] | None) -> None:
        """A cursor loop starts with the claim of its first frame."""
        loop = spec.loop
        assert loop is not None
        context: dict[str, Any] = {
            "__cursor_loop": True,
            "iterator_var": loop.iterator,
            "mode": "cursor",
            "max_rows": loop.max_rows,
            "row_concurrency": loop.row_concurrency,
        }
        if arc_args:
            context["args"] = dict(arc_args)
        self.outbox.emit(
            ev.STEP_ENTER,
            node_name=spec.name,
            status="ENTERED",
            result={"status": "ENTERED", "context": context},
        )
        self.commands.claim(spec, base, 0)

    def advance_cursor(self, step: StepState) -> bool:
        """A cursor loop after a claim or a row finished: run the frame's next rows, or claim the
        next frame once every row is done. True when the cursor is drained (the step is done)."""
        loop = step.loop
        assert loop is not None and loop.cursor is not None
        cursor = loop.cursor
        if cursor.error is not None:
            raise EngineError(f"step '{step.name}': loop.cursor: {cursor.error}")
        if cursor.claiming:
            return False
        if loop.done < loop.total:
            self.fill(step)
            return False
        if cursor.drained:
            return True
        self.commands.claim(self.playbook.steps[step.name], self.contexts.current(), cursor.frame + 1)
        return False

    def fill(self, step: StepState, arc_args: Mapping[str, Any] | None = None) -> None:
        """Issue iterations until the loop's limit of commands in flight is reached."""
        loop = step.loop
        assert loop is not None
        spec = self.playbook.steps[step.name]
        if loop.cursor is not None:
            limit = loop.cursor.row_concurrency
        elif loop.mode == "parallel":
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


class StartLoopError(EngineError):
    """The start step's `loop.in` did not render to a JSON array (`POST /api/execute` refuses the
    run with 422; a local run fails with the same message)."""


def render_loop_in(spec: Step, ctx: Mapping[str, Any]) -> Any:
    """A loop step's `loop.in`, rendered (typed) against `ctx`."""
    assert spec.loop is not None
    expression = spec.loop.in_
    try:
        raw = render_value(expression, ctx) if isinstance(expression, (str, list, dict)) else expression
    except TemplateError as exc:
        raise EngineError(f"step '{spec.name}': loop.in: {exc}") from exc
    return plain(raw)


def array_items(value: Any) -> list[Any]:
    """The items of a start step's loop: a JSON array, nothing else (no coercion)."""
    if isinstance(value, list):
        return value
    raise StartLoopError(f"start step loop.in must resolve to a JSON array, got: {json_type(value)}")


def json_type(value: Any) -> str:
    """The JSON type name of a value (null, bool, number, string, array, object)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object"


def check_start_loop(
    playbook: Playbook,
    workload: Mapping[str, Any],
    *,
    execution_id: int = 0,
    catalog_id: int | None = None,
) -> None:
    """Before a run starts: raise StartLoopError when the start step's `loop.in`, rendered as the
    engine will render it, is not a JSON array. A template error is left to the run itself."""
    spec = playbook.steps.get("start")
    if spec is None or spec.loop is None or spec.loop.cursor is not None:
        return
    state = ExecutionState(
        execution_id=execution_id,
        catalog_id=catalog_id,
        path=playbook.path,
        workload={**playbook.workload, **workload},
    )
    try:
        raw = render_loop_in(spec, RenderContext(playbook, state).current())
    except EngineError:
        return
    array_items(raw)
