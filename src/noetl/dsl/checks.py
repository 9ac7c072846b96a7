"""Shared field checks of the playbook parser: how a value is shown in an error, where it is in
the YAML, and the checks every part of the document uses (mappings, `when` expressions).

`Checks` carries the file name so every `PlaybookError` it raises names the source.
"""

from __future__ import annotations

from typing import Any, NoReturn, cast

from noetl.dsl.yaml_lines import LineDict, LineList, to_plain
from noetl.errors import PlaybookError


def show(value: Any) -> str:
    """A short rendering of a found value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def found(value: Any) -> str:
    """How an error describes a required value: missing, or what was there instead."""
    return "it is missing" if value is None else f"got {show(value)}"


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of `key` inside a LineDict/LineList, else of the container itself."""
    if isinstance(container, LineDict):
        return container.line_of(key) if key is not None else container.line
    if isinstance(container, LineList):
        return container.line_of(key) if isinstance(key, int) else container.line
    return None


def is_count(value: Any, minimum: int) -> bool:
    """An integer (not a boolean) of at least `minimum`."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


class Checks:
    """Raises the parser's errors and runs the checks shared by all parts of a playbook."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(
        self,
        message: str,
        *,
        step: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> NoReturn:
        raise PlaybookError(message, step=step, field=field, line=line, source=self.source)

    def plain(self, value: Any, *, step: str | None, field: str, line: int | None) -> Any:
        try:
            return to_plain(value)
        except ValueError as exc:
            self.fail(str(exc), step=step, field=field, line=line)

    def mapping(
        self,
        parent: Any,
        key: str,
        *,
        step: str | None,
        field: str,
        what: str,
    ) -> dict[str, Any]:
        """`parent[key]` as a plain dict ({} when absent or null); error if it is not a mapping."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(
                f"{field} must be a mapping ({what}), got {show(value)}",
                step=step,
                field=field,
                line=line_of(parent, key),
            )
        return cast(dict[str, Any], self.plain(value, step=step, field=field, line=line_of(parent, key)))

    def check_when(self, value: Any, *, step: str | None, field: str, line: int | None) -> str | bool:
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            self.fail(
                f'{field} must be an expression string (e.g. "{{{{ x > 5 }}}}") or a boolean, '
                f"got {show(value)}",
                step=step,
                field=field,
                line=line,
            )
        text = value.strip()
        if not text:
            self.fail(f"invalid 'when' expression: {field} is empty", step=step, field=field, line=line)
        if "{{" not in text and "{" in text:
            self.fail(
                f"invalid 'when' expression {value!r}: write a Jinja expression such as "
                '"{{ x > 5 }}" or a bare expression like "x > 5" (no {% %} blocks)',
                step=step,
                field=field,
                line=line,
            )
        return value
