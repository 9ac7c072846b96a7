"""Rendering entry points: text, typed values, nested structures and conditions (reference §3.5).

Compiled templates are cached by source text, so the thousands of renders of one loop body
compile once. A template that is exactly one `{{ expr }}` is also compiled as an expression and
evaluated natively: its Python value is returned as is (typed rendering) or printed (conditions),
which gives the same result as rendering text and parsing it back, without the round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from jinja2 import Template, TemplateSyntaxError, Undefined, meta, nodes

from noetl.errors import TemplateError
from noetl.template.environment import ENVIRONMENT, UndefinedName
from noetl.template.values import as_list, format_value, has_markers, typed_parse

CACHE_SIZE = 8192
_FALSE_TEXTS = frozenset({"", "false", "0", "no", "none", "null", "off", "{}", "[]"})
_RESULT = "result"


@dataclass(frozen=True, slots=True)
class _Expression:
    """The `expr` of a template that is exactly `{{ expr }}`, with the whitespace around it."""

    template: Template  # `{% set result = expr %}`
    prefix: str
    suffix: str
    lookup: bool  # a plain `a.b[c]` lookup, whose value comes straight from the context


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template
    expression: _Expression | None


def _excerpt(source: str, limit: int = 80) -> str:
    flat = " ".join(source.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _syntax_error(source: str, exc: TemplateSyntaxError) -> TemplateError:
    return TemplateError(f"template syntax error in {_excerpt(source)!r} (line {exc.lineno}): {exc.message}")


def _render_error(source: str, exc: Exception) -> TemplateError:
    detail = str(exc) or type(exc).__name__
    return TemplateError(f"cannot render template {_excerpt(source)!r}: {detail}")


def _single_expression(tree: nodes.Template) -> tuple[nodes.Expr, str, str] | None:
    """The one expression of `{{ expr }}` with its surrounding whitespace, else None."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[nodes.Expr] = list(tree.body[0].nodes)
    prefix = suffix = ""
    first, last = parts[0] if parts else None, parts[-1] if len(parts) > 1 else None
    if isinstance(first, nodes.TemplateData):
        prefix = first.data
        parts.pop(0)
    if isinstance(last, nodes.TemplateData):
        suffix = last.data
        parts.pop()
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData) or prefix.strip() or suffix.strip():
        return None
    return parts[0], prefix, suffix


def _is_lookup(node: nodes.Node) -> bool:
    """True for a constant or a name followed by attribute/item lookups (`a.b[0]`)."""
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        node = node.node
    return isinstance(node, nodes.Name | nodes.Const)


@lru_cache(maxsize=CACHE_SIZE)
def _compile(source: str) -> _Compiled:
    try:
        template = ENVIRONMENT.from_string(source)
        found = _single_expression(ENVIRONMENT.parse(source))
    except TemplateSyntaxError as exc:
        raise _syntax_error(source, exc) from None
    if found is None:
        return _Compiled(template, None)
    expr, prefix, suffix = found
    body: list[nodes.Node] = [nodes.Assign(nodes.Name(_RESULT, "store"), expr, lineno=1)]
    program = ENVIRONMENT.from_string(nodes.Template(body, lineno=1))
    return _Compiled(template, _Expression(program, prefix, suffix, _is_lookup(expr)))


@lru_cache(maxsize=CACHE_SIZE)
def _names(source: str) -> frozenset[str]:
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(source, exc) from None
    return frozenset(meta.find_undeclared_variables(tree))


def _context_vars(ctx: Mapping[str, Any]) -> dict[str, Any]:
    # Contexts are rendered with shared=True: Jinja reads the mapping in place instead of copying it.
    return cast("dict[str, Any]", ctx)


def _render(source: str, template: Template, ctx: Mapping[str, Any]) -> str:
    try:
        context = template.new_context(_context_vars(ctx), shared=True)
        return "".join(template.root_render_func(context))
    except Exception as exc:
        raise _render_error(source, exc) from exc


def _evaluate(source: str, expression: _Expression, ctx: Mapping[str, Any]) -> Any:
    program = expression.template
    try:
        context = program.new_context(_context_vars(ctx), shared=True)
        for _ in program.root_render_func(context):
            pass
        value = context.vars.get(_RESULT)
        if isinstance(value, UndefinedName):
            value._fail_with_undefined_error()
    except Exception as exc:
        raise _render_error(source, exc) from exc
    return value


def _clean_items(items: list[Any]) -> list[Any]:
    cleaned: list[Any] | None = None
    for index, item in enumerate(items):
        new = _clean(item)
        if new is not item:
            if cleaned is None:
                cleaned = list(items)
            cleaned[index] = new
    return items if cleaned is None else cleaned


def _clean(value: Any) -> Any:
    """Undefined -> None and tuples/generators -> lists, all the way down.

    Unchanged lists and dicts are returned as they are (no copy), so cleaning context data that
    needs nothing costs one walk and no allocation.
    """
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        cleaned: dict[Any, Any] | None = None
        for key, item in value.items():
            new = _clean(item)
            if new is not item:
                if cleaned is None:
                    cleaned = dict(value)
                cleaned[key] = new
        return value if cleaned is None else cleaned
    if isinstance(value, list):
        return _clean_items(value)
    items = as_list(value)
    return value if items is None else _clean_items(items)


def _native(value: Any, expression: _Expression) -> Any:
    """The typed value of `{{ expr }}` from the expression's Python value."""
    if isinstance(value, str):
        return typed_parse(expression.prefix + str(value) + expression.suffix)
    if isinstance(value, Undefined):
        return None
    if expression.lookup:
        # A plain lookup returns context data, which holds no undefined values: no walk needed.
        items = as_list(value)
        return value if items is None else items
    return _clean(value)


def render_text(template: str, ctx: Mapping[str, Any]) -> str:
    """Render `template` to text; a string without `{{ }}` or `{% %}` is returned unchanged.

    Raises TemplateError on a syntax error or a failed render (the message quotes the template).
    """
    if not has_markers(template):
        return template
    return _render(template, _compile(template).template, ctx)


def render_to_value(template: str, ctx: Mapping[str, Any]) -> Any:
    """Render `template` to a typed value (reference §3.5 render_to_value).

    Literal strings are typed too (`"123"` -> 123, `""` -> None). A template that is exactly one
    `{{ expr }}` returns the expression's value: undefined -> None, a string -> `typed_parse` of it,
    tuples -> lists, anything else as is (ints stay ints, dicts stay dicts). Any other template is
    rendered to text and passed through `typed_parse`.
    """
    if not has_markers(template):
        return typed_parse(template)
    compiled = _compile(template)
    if compiled.expression is not None:
        return _native(_evaluate(template, compiled.expression, ctx), compiled.expression)
    return typed_parse(_render(template, compiled.template, ctx))


def render_value(value: Any, ctx: Mapping[str, Any]) -> Any:
    """Render every string of a nested structure: values typed, map keys as text; other scalars kept."""
    if isinstance(value, str):
        return render_to_value(value, ctx)
    if type(value) is dict or isinstance(value, Mapping):  # (a dict without the ABC check)
        return {
            (render_text(key, ctx) if isinstance(key, str) else key): render_value(item, ctx)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [render_value(item, ctx) for item in value]
    return value


def evaluate_condition(expr: str | bool | None, ctx: Mapping[str, Any]) -> bool:
    """Evaluate a `when`-style condition; an absent condition (None) is true.

    A string without markers is wrapped in `{{ }}`. The rendered text, trimmed and lower-cased, is
    false iff it is one of "", "false", "0", "no", "none", "null", "off", "{}", "[]"; so "0.0" and
    "req-123" are true. A blank condition renders "" and is therefore false.
    """
    if isinstance(expr, bool):
        return expr
    if expr is None:
        return True
    if not isinstance(expr, str):
        text = format_value(expr)
    elif not expr.strip():
        text = ""
    else:
        source = expr if has_markers(expr) else "{{ " + expr + " }}"
        compiled = _compile(source)
        if compiled.expression is not None:
            text = format_value(_evaluate(source, compiled.expression, ctx))
        else:
            text = _render(source, compiled.template, ctx)
    return text.strip().lower() not in _FALSE_TEXTS


def referenced_names(value: Any) -> set[str]:
    """Top-level variable names read by a template string, or by every template in a dict/list.

    Map keys count too, since they are rendered. Strings without markers read nothing.
    """
    names: set[str] = set()
    if isinstance(value, str):
        if has_markers(value):
            names.update(_names(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            names |= referenced_names(key)
            names |= referenced_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            names |= referenced_names(item)
    return names
