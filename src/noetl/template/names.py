"""Static checks of one template string, for `noetl validate`: does it compile in the sandboxed
environment NoETL renders with, and which top-level names does it read.

Nothing is rendered. A string is a template when `render.has_markers` says so (the engine renders
only those); a string that opens `{{` or `{%` without closing it is reported as a broken template,
since the engine would pass it through as plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jinja2 import TemplateSyntaxError, meta

from noetl.template.environment import ENVIRONMENT
from noetl.template.values import has_markers


@dataclass(frozen=True)
class TemplateCheck:
    """What a template string reads, or why it is not a valid template."""

    names: frozenset[str] = frozenset()
    error: str | None = None  # a syntax error, an unknown filter or test, unbalanced braces
    error_line: int = 1  # 1-based line of the error inside the string


def _unbalanced(text: str) -> str | None:
    if "{{" in text and "}}" not in text:
        return "'{{' is never closed by '}}': the text is not a template and would be used as it is"
    if "{%" in text and "%}" not in text:
        return "'{%' is never closed by '%}': the text is not a template and would be used as it is"
    return None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid template"


@lru_cache(maxsize=4096)
def check_template(text: str, *, condition: bool = False) -> TemplateCheck:
    """Compile `text` (a `when` condition without markers is wrapped in `{{ }}`, as the engine
    does) and list the names it reads from the render context."""
    if not has_markers(text):
        problem = _unbalanced(text)
        if problem is not None:
            return TemplateCheck(error=problem, error_line=_line_of(text, problem))
        if not condition or not text.strip():
            return TemplateCheck()
        text = "{{ " + text + " }}"
    try:
        tree = ENVIRONMENT.parse(text)
        ENVIRONMENT.compile(tree)  # unknown filters and tests are found here
    except TemplateSyntaxError as exc:
        return TemplateCheck(error=_first_line(exc.message or str(exc)), error_line=exc.lineno or 1)
    return TemplateCheck(names=frozenset(meta.find_undeclared_variables(tree)))


def _line_of(text: str, problem: str) -> int:
    marker = "{{" if problem.startswith("'{{'") else "{%"
    return text[: text.find(marker)].count("\n") + 1


def environment_names() -> frozenset[str]:
    """Globals every template can read (`range`, `dict`, `namespace`, ...)."""
    return frozenset(ENVIRONMENT.globals)
