"""NoETL templating: sandboxed Jinja2 made to render like the minijinja-based 3.13.0 server.

Pure: no I/O. See `render` for the entry points and `environment` for the lookup rules.
"""

from noetl.template.render import (
    evaluate_condition,
    referenced_names,
    render_text,
    render_to_value,
    render_value,
)
from noetl.template.values import format_value, typed_parse

__all__ = [
    "evaluate_condition",
    "format_value",
    "referenced_names",
    "render_text",
    "render_to_value",
    "render_value",
    "typed_parse",
]
