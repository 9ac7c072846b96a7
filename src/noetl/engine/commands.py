"""Commands for workers: the `command.issued` event of a step (or of one loop iteration), with
its tool config rendered where the engine may render it, the snapshot of the render context the
worker needs for the rest, and the routing metadata (pool, attempt, iterator, trace)."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from noetl.dsl.model import Step
from noetl.engine import events as ev
from noetl.engine.outbox import Outbox
from noetl.engine.results import plain
from noetl.engine.state import ExecutionState
from noetl.errors import EngineError, TemplateError
from noetl.template import referenced_names, render_text, render_value
from noetl.template.values import STRICT_KEY

# Keys of a single tool's config that the worker evaluates (with `output` in scope), not the engine.
_DEFERRED_SINGLE = ("spec", "set")
_ALWAYS_IN_SNAPSHOT = ("execution_id", "catalog_id", "path", "workload", "ctx", STRICT_KEY)
_FILE_KEYS = ("script", "source")  # a tool config naming a file the worker reads and renders
_ITERATION_KEYS = ("iter", "_index", "_total", "loop_index", "__cursor_frame", "__cursor_row")


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


class Commands:
    """Issues the commands of one execution."""

    def __init__(
        self, state: ExecutionState, outbox: Outbox, *, ids: Callable[[], int], max_attempts: int
    ) -> None:
        self.state = state
        self.outbox = outbox
        self.ids = ids
        self.max_attempts = max_attempts

    def issue(self, spec: Step, ctx: Mapping[str, Any], index: int | None, *, attempt: int = 1) -> None:
        """Emit `command.issued` for step `spec` (iteration `index` of its loop, if not None)."""
        state = self.state
        event_id = self.ids()
        command_id = f"{state.execution_id}:{spec.name}:{event_id}"
        if index is not None:
            command_id += f":i{index}"
        kind = spec.tool_kind
        tool_config, snapshot = self._config(spec, ctx, index)
        meta = self._meta(spec, command_id, kind, index, attempt)
        self.outbox.emit(
            ev.COMMAND_ISSUED,
            node_name=spec.name,
            node_type=kind,
            status="PENDING",
            context={"tool_config": tool_config, "args": dict(spec.args), "render_context": snapshot},
            meta=meta,
            event_id=event_id,
        )

    def claim(self, spec: Step, ctx: Mapping[str, Any], frame: int, *, attempt: int = 1) -> None:
        """Emit the `command.issued` of a cursor loop's claim of frame `frame`: the claim query,
        rendered with `__frame_max_rows`, run by the cursor's tool kind."""
        loop = spec.loop
        assert loop is not None and loop.cursor is not None
        cursor = loop.cursor
        scope = ChainMap({"__frame_max_rows": loop.max_rows}, ctx)  # type: ignore[arg-type]
        try:
            config = plain(render_value(cursor.config, scope)) if cursor.config else {}
            config["command"] = render_text(cursor.claim, scope)
        except TemplateError as exc:
            raise EngineError(f"step '{spec.name}': loop.cursor: {exc}") from exc
        event_id = self.ids()
        command_id = f"{self.state.execution_id}:{spec.name}:{event_id}"
        meta = self._meta(spec, command_id, cursor.kind, None, attempt)
        meta["cursor"] = {"phase": "claim", "step": spec.name, "frame": frame}
        self.outbox.emit(
            ev.COMMAND_ISSUED,
            node_name=spec.name,
            node_type=cursor.kind,
            status="PENDING",
            context={"tool_config": config, "args": {}, "render_context": {}},
            meta=meta,
            event_id=event_id,
        )

    def _meta(
        self, spec: Step, command_id: str, kind: str, index: int | None, attempt: int
    ) -> dict[str, Any]:
        state = self.state
        meta: dict[str, Any] = {
            "command_id": command_id,
            "step": spec.name,
            "tool_kind": kind,
            "attempt": attempt,
            "max_attempts": self.max_attempts,
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
            cursor = loop.cursor
            if cursor is not None:  # a row of a cursor loop's frame
                row = index - cursor.frame_start
                meta["iteration_total"] = loop.total - cursor.frame_start
                meta["cursor"] = {"phase": "body", "step": spec.name, "frame": cursor.frame, "row": row}
        trace = state.meta.get("trace")
        if trace:
            meta["trace"] = trace
        return meta

    def _config(self, spec: Step, ctx: Mapping[str, Any], index: int | None) -> tuple[Any, dict[str, Any]]:
        """The command's tool config (rendered where the engine may render it) and the context
        snapshot the worker needs for what it renders itself."""
        try:
            if spec.pipeline is not None:
                tasks = [{"name": task.label, "kind": task.kind, **task.config} for task in spec.pipeline]
                if spec.input:
                    tasks[0] = {**tasks[0], "input": {**spec.input, **(tasks[0].get("input") or {})}}
                names = referenced_names(tasks)
                return tasks, _snapshot(ctx, names)
            if spec.tool is None:
                return {}, {}
            return _single_config(spec, ctx, index)
        except TemplateError as exc:
            raise EngineError(f"step '{spec.name}': cannot render tool config: {exc}") from exc


def _single_config(spec: Step, ctx: Mapping[str, Any], index: int | None) -> tuple[Any, dict[str, Any]]:
    """A single tool's config: rendered now, except the keys the worker evaluates (`spec`, `set`).
    A python tool in a loop also gets the iteration's variables as inputs. The snapshot is empty
    unless the worker renders something itself (deferred keys, a script file)."""
    assert spec.tool is not None
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
    # The worker renders what it evaluates itself, and a SQL file named by `script`/`source`
    # (`{{ workload.x }}` inside it): only those commands carry a context snapshot.
    if deferred or any(key in raw for key in _FILE_KEYS):
        return rendered, _snapshot(ctx, referenced_names(deferred))
    return rendered, {}


def _snapshot(ctx: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    """The part of the render context a worker needs: the names its templates use, the ids and
    namespaces, and the loop iteration's variables."""
    wanted = set(names)
    wanted.update(_ALWAYS_IN_SNAPSHOT)
    wanted.update(k for k in _ITERATION_KEYS if k in ctx)
    loop_var = ctx.get("iter")
    if isinstance(loop_var, dict):
        wanted.update(k for k in loop_var if not k.startswith("_") and k != "index")
    # Shallow copies: the context's namespace maps (`ctx`, `steps`) are updated in place later.
    return {k: _detached(plain(ctx[k])) for k in wanted if k in ctx}


def _detached(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
