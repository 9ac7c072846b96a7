"""The render context of an execution: what templates see (workload, `ctx`, step results, ids).

It is kept up to date incrementally: folding an event notes what changed (`changed`), and the
next read patches only that, so its cost does not grow with the length of the run.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine.state import ExecutionState, LoopState, StepState
from noetl.template.values import STRICT_KEY


class RenderContext:
    """The render context of one execution's state."""

    def __init__(self, playbook: Playbook, state: ExecutionState) -> None:
        self.playbook = playbook
        self.state = state
        self._base: dict[str, Any] | None = None
        self._dirty_steps: set[str] = set()
        self._dirty_keys: set[str] = set()

    def changed(
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

    def current(self) -> dict[str, Any]:
        """The render context of the current state. Updated in place by what changed since the
        last call (a step's result, ctx keys), so its cost does not grow with the run."""
        state = self.state
        base = self._base
        if base is None:
            base = self._rebuild()
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

    def _rebuild(self) -> dict[str, Any]:
        """A fresh context of the workload and ids; step results and ctx keys are marked dirty."""
        state = self.state
        base = dict(state.workload)
        base["workload"] = state.workload
        base["steps"] = {}
        base["ctx"] = {**state.workload, **state.ctx}
        base["execution_id"] = str(state.execution_id)
        base["catalog_id"] = None if state.catalog_id is None else str(state.catalog_id)
        base["path"] = state.path
        base["playbook"] = {"name": self.playbook.name, "path": self.playbook.path}
        if state.meta.get("strict"):  # `noetl run --strict`: undefined names fail the render
            base[STRICT_KEY] = True
        self._base = base
        self._dirty_steps = {name for name, step in state.steps.items() if step.has_result}
        self._dirty_keys = set(state.ctx)
        return base

    def for_step(self, step: StepState, *, event_name: str) -> Mapping[str, Any]:
        """The context of a step's own `set` and arcs: its result as `output`, and `event`."""
        return ChainMap({"output": step.view, "event": {"name": event_name}}, self.current())


def iteration_context(base: Mapping[str, Any], loop: LoopState, index: int) -> Mapping[str, Any]:
    """`base` with loop iteration `index` bound: the iterator variable, `iter`, `_index`... In a
    cursor loop `_index`/`_total` are the row and the row count of its frame, and
    `__cursor_frame`/`__cursor_row` say where the row came from."""
    item = loop.items[index]
    position, total = index, loop.total
    bindings: dict[str, Any] = {loop.iterator: item, "loop_index": index}
    cursor = loop.cursor
    if cursor is not None:
        position, total = index - cursor.frame_start, loop.total - cursor.frame_start
        bindings.update(__cursor_frame=cursor.frame, __cursor_row=position)
    bindings.update(_index=position, _total=total)
    bindings["iter"] = {loop.iterator: item, "_index": position, "_total": total, "index": index}
    return ChainMap(bindings, base)  # type: ignore[arg-type]
