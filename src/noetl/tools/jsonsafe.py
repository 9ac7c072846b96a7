"""Turn whatever a tool produced into plain JSON values (dict, list, str, int, float, bool, None).

Rules, applied recursively:

* `Decimal` -> `int` when integral, else `float`; non-finite numbers (NaN, +/-inf) -> `None`
* `datetime`, `date`, `time` -> ISO 8601 text; `timedelta` -> seconds as a float
* `UUID` -> text; `Enum` -> its value
* `bytes`/`bytearray`/`memoryview` -> UTF-8 text when the bytes decode, else base64 text
* `set`/`frozenset`/`tuple`/other sequences -> `list`; mappings -> `dict` with text keys
* numpy-like objects (anything with a callable `.tolist()`) -> their `.tolist()` value
* dataclass instances -> dict of fields; objects with `model_dump()` (pydantic) -> that dict
* anything else -> `str(value)`; a container that contains itself -> `"<cycle>"`
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Return a JSON-safe copy of `value` (plain values are returned as they are)."""
    return _convert(value, set())


def _convert(value: Any, active: set[int]) -> Any:
    tp = type(value)
    if tp is str or tp is int or tp is bool or value is None:
        return value
    if tp is float:
        return value if math.isfinite(value) else None
    if tp is dict or tp is list:
        return _container(value, active)
    if isinstance(value, enum.Enum):
        return _convert(value.value, active)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return _container(value, active)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return _convert(tolist(), active)
        except Exception:
            return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _container(fields, active)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return _convert(dump(), active)
        except Exception:
            return str(value)
    try:
        return str(value)
    except Exception:
        return f"<unprintable {tp.__name__}>"


def _container(value: Any, active: set[int]) -> Any:
    key = id(value)
    if key in active:
        return "<cycle>"
    active.add(key)
    try:
        if isinstance(value, Mapping):
            return {_key(k): _convert(v, active) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            items = [_convert(v, active) for v in value]
            try:
                return sorted(items)
            except TypeError:
                return items
        return [_convert(v, active) for v in value]
    finally:
        active.discard(key)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    converted = _convert(key, set())
    return converted if isinstance(converted, str) else str(converted)
