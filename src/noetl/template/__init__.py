"""NoETL templating: sandboxed Jinja2 made to render like the minijinja-based 3.13.0 server.

Pure: no I/O. See `render` for the entry points and `environment` for the lookup rules. The
entry points here import Jinja (and `render`) on the first string that holds a template, so a
playbook without templates never pays for it; values without one are typed as `render` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from noetl.template.values import format_value, has_markers, typed_parse

__all__ = [
    "evaluate_condition",
    "format_value",
    "has_markers",
    "referenced_names",
    "render_text",
    "render_to_value",
    "render_value",
    "typed_parse",
]

_impl: ModuleType | None = None


def _render() -> ModuleType:
    global _impl
    if _impl is None:
        from noetl.template import render

        _impl = render
    return _impl


def _marked(value: Any) -> bool:
    """Whether a template string is anywhere in `value` (map keys included)."""
    if isinstance(value, str):
        return has_markers(value)
    if isinstance(value, Mapping):
        return any(_marked(k) or _marked(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_marked(item) for item in value)
    return False


def _typed(value: Any) -> Any:
    """`render_value` of a value without templates: strings typed, structure copied."""
    if isinstance(value, str):
        return typed_parse(value)
    if isinstance(value, Mapping):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(item) for item in value]
    return value


def render_text(template: str, ctx: Mapping[str, Any]) -> str:
    """See `render.render_text`."""
    if _impl is None and not has_markers(template):
        return template
    return str(_render().render_text(template, ctx))


def render_to_value(template: str, ctx: Mapping[str, Any]) -> Any:
    """See `render.render_to_value`."""
    if _impl is None and not has_markers(template):
        return typed_parse(template)
    return _render().render_to_value(template, ctx)


def render_value(value: Any, ctx: Mapping[str, Any]) -> Any:
    """See `render.render_value`."""
    if _impl is None and not _marked(value):
        return _typed(value)
    return _render().render_value(value, ctx)


def evaluate_condition(expr: str | bool | None, ctx: Mapping[str, Any]) -> bool:
    """See `render.evaluate_condition`."""
    if _impl is None and (expr is None or isinstance(expr, bool)):
        return True if expr is None else expr
    return bool(_render().evaluate_condition(expr, ctx))


def referenced_names(value: Any) -> set[str]:
    """See `render.referenced_names`."""
    if _impl is None and not _marked(value):
        return set()
    names: set[str] = _render().referenced_names(value)
    return names
