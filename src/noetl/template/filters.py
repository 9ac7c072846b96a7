"""The filters that replace Jinja2's built-ins of the same name (reference §3.6).

They follow the 3.13.0 server: `default` takes one argument, `int`/`float` fail on bad input
instead of returning 0, `first`/`last` fail on an empty sequence, `length` counts UTF-8 bytes
of a string, and `tojson` writes compact JSON with sorted keys. Every other Jinja2 filter stays.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import Environment, Undefined, pass_environment

from noetl.errors import TemplateError
from noetl.template.values import (
    as_list,
    format_value,
    is_missing,
    load_json,
    parse_float,
    parse_int,
    to_json,
)


def _default(value: Any, *args: Any) -> Any:
    """The argument (else "") when the value is undefined or None; at most one argument.

    Jinja2's `default(x, true)` form is refused, as the 3.13.0 server refuses it.
    """
    if len(args) > 1:
        raise TemplateError(f"default: takes at most one argument, got {len(args)}")
    if is_missing(value):
        return args[0] if args else ""
    return value


def _int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return int(value)
        raise TemplateError(f"int: cannot convert {value!r} to an integer")
    text = format_value(value).strip()
    whole = parse_int(text)
    if whole is not None:
        return whole
    number = parse_float(text)
    if number is None:
        raise TemplateError(f"int: cannot convert {text!r} to an integer")
    return int(number)


def _float(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = format_value(value).strip()
    number = parse_float(text)
    if number is None:
        raise TemplateError(f"float: cannot convert {text!r} to a number")
    return number


def _string(value: Any) -> str:
    return format_value(value)


def _lower(value: Any) -> str:
    return format_value(value).lower()


def _upper(value: Any) -> str:
    return format_value(value).upper()


def _trim(value: Any, chars: str | None = None) -> str:
    return format_value(value).strip(chars)


def _split(value: Any, sep: Any = " ") -> list[str]:
    separator = format_value(sep)
    if not separator:
        raise TemplateError("split: the separator is empty")
    return format_value(value).split(separator)


def _iterate(name: str, value: Any) -> Iterable[Any]:
    if isinstance(value, Iterable):
        return value
    raise TemplateError(f"{name}: {type(value).__name__} is not a sequence")


def _join(value: Any, sep: Any = "") -> str:
    return format_value(sep).join(format_value(item) for item in _iterate("join", value))


def _first(value: Any) -> Any:
    for item in _iterate("first", value):
        return item
    raise TemplateError("first: the sequence is empty")


def _last(value: Any) -> Any:
    if isinstance(value, list | tuple | str):
        if value:
            return value[-1]
        raise TemplateError("last: the sequence is empty")
    items = list(_iterate("last", value))
    if not items:
        raise TemplateError("last: the sequence is empty")
    return items[-1]


def _length(value: Any) -> int:
    """UTF-8 byte count of a string; item count of a sequence or map; 0 when undefined."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if is_missing(value):
        return 0
    if isinstance(value, Mapping | list):
        return len(value)
    items = as_list(value)
    if items is None:
        raise TemplateError(f"length: {type(value).__name__} has no length")
    return len(items)


def _mapping(name: str, value: Any) -> Mapping[Any, Any]:
    if isinstance(value, Mapping):
        return value
    raise TemplateError(f"{name}: expected a mapping, got {type(value).__name__}")


def _keys(value: Any) -> list[Any]:
    return list(_mapping("keys", value).keys())


def _values(value: Any) -> list[Any]:
    return list(_mapping("values", value).values())


def _items(value: Any) -> list[list[Any]]:
    return [[key, item] for key, item in _mapping("items", value).items()]


@pass_environment
def _get(environment: Environment, value: Any, key: Any) -> Any:
    """`value[key]` for a map or a list; undefined when missing (or None)."""
    found: Any = None
    if isinstance(value, Mapping):
        found = value.get(key)
    elif isinstance(value, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        if -len(value) <= key < len(value):
            found = value[key]
    if found is None:
        return environment.undefined(obj=value, name=str(key))
    return found


def _tojson(value: Any) -> str:
    return to_json(value)


def _fromjson(value: Any) -> Any:
    text = format_value(value)
    try:
        return load_json(text)
    except (ValueError, RecursionError) as exc:
        raise TemplateError(f"fromjson: {exc}") from None


def _b64encode(value: Any) -> str:
    return base64.b64encode(format_value(value).encode("utf-8")).decode("ascii")


def _b64decode(value: Any) -> str:
    try:
        return base64.b64decode(format_value(value), validate=True).decode("utf-8")
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        raise TemplateError(f"b64decode: {exc}") from None


def _safe(value: Any) -> Any:
    return value


def _bool(value: Any) -> bool:
    return not isinstance(value, Undefined) and bool(value)


FILTERS: dict[str, Callable[..., Any]] = {
    "default": _default,
    "d": _default,
    "int": _int,
    "float": _float,
    "string": _string,
    "lower": _lower,
    "upper": _upper,
    "trim": _trim,
    "split": _split,
    "join": _join,
    "first": _first,
    "last": _last,
    "length": _length,
    "len": _length,
    "keys": _keys,
    "values": _values,
    "items": _items,
    "get": _get,
    "tojson": _tojson,
    "fromjson": _fromjson,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "safe": _safe,
    "bool": _bool,
}
