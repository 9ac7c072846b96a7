"""The `is` tests that replace Jinja2's built-ins of the same name (reference §3.6).

A None value counts as undefined everywhere (JSON null is undefined in NoETL templates), so
`defined` is false for it and `none` is true for both None and undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from noetl.template.values import is_missing


def _defined(value: Any) -> bool:
    return not is_missing(value)


def _undefined(value: Any) -> bool:
    return is_missing(value)


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sequence(value: Any) -> bool:
    """Lists and tuples only: unlike Jinja2, a string is not a sequence here (as in minijinja)."""
    return isinstance(value, list | tuple)


def _mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


TESTS: dict[str, Callable[..., bool]] = {
    "defined": _defined,
    "undefined": _undefined,
    "none": _undefined,
    "string": _string,
    "number": _number,
    "sequence": _sequence,
    "mapping": _mapping,
}
