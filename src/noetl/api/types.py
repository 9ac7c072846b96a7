"""The value types of the API's request and response models: ids, text, JSON objects.

Ids are int64 snowflakes. A request may send one as a JSON number or as a string of digits (what
upstream clients do); an answer always sends it as a string, since JavaScript rounds numbers
above 2^53. An id outside 0..2^63-1 is refused (422), so no store ever sees one.

Text fields refuse NUL characters (PostgreSQL cannot store them in text columns) and text that
is not valid Unicode (a lone surrogate, which no store can encode); both are 422 with the field
named. The JSON schema of each type says the same, so the OpenAPI document is exact.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_ID = 2**63 - 1
ID_ERROR = "noetl_id"  # shown as "Invalid <field>[: why]" (noetl.api.errors.describe)


def _at_most(limit: int) -> str:
    """A regular expression matching the decimal numbers 0..limit, without leading zeros."""
    text = str(limit)
    options = ["0", f"[1-9][0-9]{{0,{len(text) - 2}}}"]
    for index, char in enumerate(text):
        low = 1 if index == 0 else 0
        digit = int(char)
        if digit > low:
            rest = len(text) - index - 1
            options.append(f"{text[:index]}[{low}-{digit - 1}][0-9]{{{rest}}}")
    options.append(text)
    return "^(" + "|".join(options) + ")$"


ID_PATTERN = _at_most(MAX_ID)
_ID_DIGITS = len(str(MAX_ID))
NO_NUL = "^[^\\u0000]*$"
# Unicode White_Space, spelled out so JSON Schema validators and Python read it alike.
_SPACE = "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NON_BLANK = f"^[^\\u0000]*[^\\u0000{_SPACE}][^\\u0000]*$"
_VISIBLE = re.compile(f"[^\\u0000{_SPACE}]")


def error(message: str) -> PydanticCustomError:
    """A validation error with this message (prefixed by its field, when it has one)."""
    return PydanticCustomError("noetl", "{message}", {"message": message})


def parse_id(value: Any, what: str = "id") -> int:
    """An int64 id from a JSON number or a string of digits; ValueError when it is neither or is
    out of range."""
    number = _number(value)
    if number is None:
        raise ValueError(f"Invalid {what}")
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"Invalid {what}: {OUT_OF_RANGE}")
    return number


OUT_OF_RANGE = f"ids are integers from 0 to {MAX_ID}"


def _number(value: Any) -> int | None:
    kind = type(value)
    if kind is str:  # what clients mostly send
        if not (value.isascii() and value.isdigit()):
            return None
        # Digits without a leading zero, at most MAX_ID (what ID_PATTERN says); else out of range.
        if (value[0] == "0" and len(value) > 1) or len(value) > _ID_DIGITS:
            return -1
        number = int(value)
        return number if number <= MAX_ID else -1
    if kind is int:
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):  # a str subclass
        return _number(str(value))
    return None


def _id(value: Any) -> int:
    number = _number(value)
    if number is None:
        raise PydanticCustomError(ID_ERROR, "")
    if not 0 <= number <= MAX_ID:
        raise PydanticCustomError(ID_ERROR, OUT_OF_RANGE)
    return number


def _optional_id(value: Any) -> int | None:
    return None if value is None or value == "" else _id(value)


_ID_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        {"type": "string", "pattern": ID_PATTERN},
    ],
    "description": "An int64 id: a string of digits or a JSON number.",
}

Id = Annotated[int, BeforeValidator(_id), WithJsonSchema(_ID_SCHEMA)]
OptionalId = Annotated[
    int | None,
    BeforeValidator(_optional_id),
    WithJsonSchema({"anyOf": [*_ID_SCHEMA["anyOf"], {"type": "null"}, {"const": ""}]}),
]
IdText = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "description": "An int64 id."})
]
OptionalIdText = Annotated[
    str | None,
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "null"}]}),
]


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema reads one (5.0 is 5), never a bool or a string of digits.
Int = Annotated[int, BeforeValidator(_integral), Strict()]


def check_text(value: str) -> str:
    if "\x00" in value:
        raise error("text must not contain NUL characters")
    if value.isascii():  # no surrogates: the common case needs no encoding
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error("text must be valid Unicode (no lone surrogates)") from exc
    return value


def _name(value: str) -> str:
    check_text(value)
    if not _VISIBLE.search(value):
        raise ValueError("must be a non-empty string")
    return value


Text = Annotated[str, AfterValidator(check_text), WithJsonSchema({"type": "string", "pattern": NO_NUL})]
Name = Annotated[
    str,
    AfterValidator(_name),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": NON_BLANK}),
]

MAX_NAME = 200
# A name people give (a schedule's, a subscription's): non-blank, at most MAX_NAME characters.
ShortName = Annotated[
    str,
    Field(max_length=MAX_NAME),
    AfterValidator(_name),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": NON_BLANK}),
]


# JSON data as it comes: every body is decoded by orjson (noetl.api.routing, noetl.api.hot), which
# refuses text that is not valid Unicode, so no walk over (possibly large) data is needed here.
# NUL characters inside data are allowed: the stores keep them.
JsonObject = dict[str, Any]
JsonValue = Any


def id_text(value: Any) -> str | None:
    """An id as it appears in an answer: a string (None stays None)."""
    return None if value is None else str(value)
