"""How template values become text and how rendered text becomes typed values again.

`format_value` is the minijinja-style text of a value (what `{{ x }}` prints); `typed_parse` is
the reverse conversion the engine applies to every rendered string (reference §3.5, steps 2-7).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
# The float grammar of Rust's `f64::from_str` (finite forms only: `inf`/`nan` stay strings).
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_NULL_TEXTS = frozenset({"null", "None", ""})


STRICT_KEY = "__noetl_strict__"  # in a render context: undefined names are errors


def has_markers(text: str) -> bool:
    """True when `text` holds both `{{` and `}}`, or both `{%` and `%}` (`{# #}` alone is not seen)."""
    return ("{{" in text and "}}" in text) or ("{%" in text and "%}" in text)


def is_undefined(value: Any) -> bool:
    """Jinja's undefined. Jinja is imported only when a template is rendered, and until it is,
    no value can be one (so a run without templates never imports it)."""
    jinja2 = sys.modules.get("jinja2")
    return jinja2 is not None and isinstance(value, jinja2.Undefined)


def is_missing(value: Any) -> bool:
    """True for None and for Jinja's undefined: the two values templates treat as absent."""
    return value is None or is_undefined(value)


def as_list(value: Any) -> list[Any] | None:
    """A list of the items of a lazy or immutable sequence (tuple, range, generator, view), else None."""
    if isinstance(value, tuple | range | set | frozenset | KeysView | ValuesView | ItemsView | Iterator):
        return list(value)
    return None


def parse_int(text: str) -> int | None:
    """`text` as a signed 64-bit integer, with Rust's `i64::from_str` syntax ("007", "+5"), else None."""
    if _INT_TEXT.fullmatch(text) is None:
        return None
    number = int(text)
    return number if _I64_MIN <= number <= _I64_MAX else None


def parse_float(text: str) -> float | None:
    """`text` as a finite float ("1e3", ".5", "2."), else None; "NaN" and "inf" are not numbers here."""
    if _FLOAT_TEXT.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str) -> Any:
    """Strict JSON: `NaN` and `Infinity` are refused, as serde_json does."""
    return json.loads(text, parse_constant=_reject_constant)


def _json_default(value: Any) -> Any:
    if is_undefined(value):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    items = as_list(value)
    if items is not None:
        return items
    return str(value)


def _finite(value: Any) -> Any:
    """A copy of a JSON-like structure where non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    items = as_list(value)
    return [_finite(item) for item in items] if items is not None else value


def _dumps(value: Any, separators: tuple[str, str], sort_keys: bool) -> str:
    options: dict[str, Any] = {
        "separators": separators,
        "sort_keys": sort_keys,
        "ensure_ascii": False,
        "default": _json_default,
    }
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False, **options)


def to_json(value: Any) -> str:
    """Compact JSON with sorted keys; undefined and None become `null`, NaN/inf become `null`.

    Floats stay JSON numbers (`1.5` -> `1.5`). The 3.13.0 server turns non-integral floats into
    JSON strings (`"1.5"`) because its value converter lacks a float branch; we deliberately do
    not reproduce that quirk.
    """
    return _dumps(value, (",", ":"), True)


def format_value(value: Any) -> str:
    """The minijinja-style text of a value, as `{{ value }}` prints it.

    Booleans print `true`/`false`; None and undefined print nothing; lists and maps print as JSON
    with `", "` and `": "` separators and double-quoted strings (values JSON cannot hold are
    written with `str`); floats use Python's repr; strings are returned as they are.
    """
    if type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if is_missing(value):
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    items = value if isinstance(value, Mapping | list) else as_list(value)
    if items is None:
        return str(value)
    try:
        return _dumps(items, (", ", ": "), False)
    except (TypeError, ValueError):  # e.g. a map with tuple keys
        return str(items)


def typed_parse(text: str) -> Any:
    """The typed value of rendered text (reference §3.5, render_to_value steps 2-7).

    The trimmed text is tried, in order, as: a JSON object or array (when it looks like one and
    parses), exactly `true`/`false`, a 64-bit integer (`"007"` -> 7, `"+5"` -> 5), a finite float
    (`"1e3"` -> 1000.0; `"NaN"`/`"inf"` stay strings), and `null`/`None`/empty -> None. Anything
    else is returned as the original, untrimmed string.
    """
    trimmed = text.strip()
    if trimmed[:1] + trimmed[-1:] in ("{}", "[]"):
        try:
            return load_json(trimmed)
        except (ValueError, RecursionError):
            pass
    if trimmed == "true":
        return True
    if trimmed == "false":
        return False
    number: int | float | None = parse_int(trimmed)
    if number is not None:
        return number
    number = parse_float(trimmed)
    if number is not None:
        return number
    if trimmed in _NULL_TEXTS:
        return None
    return text
