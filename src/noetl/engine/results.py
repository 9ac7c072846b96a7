"""How step results look to templates, and loop-input coercion."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from noetl.errors import EngineError


class StepView(dict[str, Any]):
    """A step's map result as templates see it: `{{ s.x }}` and `{{ s.data.x }}` read the same
    value when the result has no `data` key of its own, and a pipeline's task results are reachable
    by label (`{{ s.fetch.status_code }}`). The aliases are not real keys, so they never show up when
    the result is serialised or iterated."""

    __slots__ = ("labels",)

    def __init__(self, data: dict[str, Any], labels: dict[str, Any] | None = None) -> None:
        super().__init__(data)
        self.labels = labels or {}

    def __missing__(self, key: str) -> Any:
        if key in self.labels:
            return view_of(self.labels[key])
        if key == "data":
            return self
        raise KeyError(key)


class LoopView(dict[str, Any]):
    """A loop step's result `{results, count}`; `data` reads as an alias of `results`."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        if key == "data":
            return self["results"]
        raise KeyError(key)


def view_of(data: Any, labels: dict[str, Any] | None = None) -> Any:
    """What templates see for a result: maps get the `data` alias and pipeline labels."""
    if (
        isinstance(data, dict)
        and not isinstance(data, (StepView, LoopView))
        and ("data" not in data or labels)
    ):
        return StepView(data, labels)
    return data


def loop_view(results: list[Any]) -> LoopView:
    return LoopView(results=results, count=len(results))


def plain(value: Any) -> Any:
    """Turn views (dict subclasses) back into plain dicts, recursively, copying only when needed."""
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
