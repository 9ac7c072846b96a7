"""How step results look to templates, and loop-input coercion."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from noetl.engine.state import LoopState
from noetl.errors import EngineError


class StepView(dict[str, Any]):
    """A step's map result as templates see it: `{{ s.x }}` and `{{ s.data.x }}` read the same
    value when the result has no `data` key of its own. The alias is not a real key, so it never
    shows up when the result is serialised or iterated."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        if key == "data":
            return self
        raise KeyError(key)


class LoopView(dict[str, Any]):
    """A loop step's result `{results, count, stats}`; `data` reads as an alias of `results`."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        if key == "data":
            return self["results"]
        raise KeyError(key)


def view_of(data: Any) -> Any:
    """What templates see for a result: a map without a `data` key gets the `data` alias."""
    if isinstance(data, dict) and not isinstance(data, (StepView, LoopView)) and "data" not in data:
        return StepView(data)
    return data


def pipeline_result(tasks: Any, order: Sequence[str] | None = None) -> Any:
    """A pipeline step's result from its tasks' results by label (`{label: data}`, in the order
    the tasks ran): every label, plus the keys of every map result at the top level (a later
    task's key wins over an earlier one's; a label wins over a task's key). So
    `{{ s.fetch.status_code }}` and `{{ s.status_code }}` both read the `fetch` task's value.

    A pipeline whose last task returned a list or a scalar results in that value (a pipeline that
    ends in a query yields its rows, as real playbooks expect). A result kept outside the log (an
    envelope with `_ref`) is left as it is. `order` is the labels in the order the tasks ran (a
    JSONB column does not keep the order of keys)."""
    if not isinstance(tasks, dict) or not tasks or "_ref" in tasks:
        return tasks
    if order is not None and set(order) == set(tasks):
        tasks = {label: tasks[label] for label in order}
    last = next(reversed(tasks.values()))
    if last is not None and not isinstance(last, dict):
        return last
    merged: dict[str, Any] = {}
    for data in tasks.values():
        if isinstance(data, dict):
            merged.update(data)
    merged.update(tasks)
    return merged


def loop_view(loop: LoopState) -> LoopView:
    """A loop step's result: the iterations' results in index order, their count, and
    `stats: {total, completed, failed}` (`failed` counts iterations that failed, those a policy
    rule continued past included). A cursor loop adds `cursor: "drained"` and `frames` (the
    claims that returned rows)."""
    view = LoopView(
        results=loop.results,
        count=len(loop.results),
        stats={"total": loop.total, "completed": loop.succeeded, "failed": loop.failed},
    )
    if loop.cursor is not None:
        view["cursor"] = "drained" if loop.cursor.drained else "open"
        view["frames"] = loop.cursor.frames
    return view


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Turn views (dict subclasses) back into plain dicts, recursively, copying only when needed."""
    if type(value) in _SCALARS:  # most values: no isinstance chain
        return value
    if isinstance(value, dict):
        if type(value) is dict:
            changed = False
            out: dict[str, Any] = {}
            for k, v in value.items():
                pv = plain(v)
                changed = changed or pv is not v
                out[k] = pv
            return out if changed else value
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [plain(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def coerce_items(value: Any, *, step: str, expression: Any) -> list[Any]:
    """The items a loop iterates over (upstream coercion rules, with clear errors)."""
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return [{"key": k, "value": value[k]} for k in sorted(value)]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    if isinstance(value, bool) or value is None:
        found = "null" if value is None else str(value).lower()
        raise EngineError(
            f"step '{step}': loop.in must evaluate to a list, got {found} (expression: {expression!r})"
        )
    if isinstance(value, int):
        return list(range(value)) if value > 0 else []
    if isinstance(value, float):
        return list(range(int(value))) if value.is_integer() and value > 0 else []
    raise EngineError(
        f"step '{step}': loop.in must evaluate to a list, got {type(value).__name__} (expression: {expression!r})"
    )


def normalise_set_key(key: str) -> str:
    """`ctx.x`, `iter.x`, `step.x`, `vars.x` -> `x`; a bare key stays; other dotted keys stay literal."""
    for prefix in ("ctx.", "iter.", "step.", "vars."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key
