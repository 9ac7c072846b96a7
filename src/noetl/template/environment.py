"""The one sandboxed Jinja2 environment NoETL renders with, shaped to behave like minijinja.

- Undefined is chainable: `{{ a.b.c }}` of a missing `a` is undefined and prints "".
- None reads as undefined, at the top level and through `.attr`/`[item]`, without copying the
  context: `NoetlContext` and `NoetlEnvironment.getattr/getitem` turn a None into undefined.
- `x.name` on a mapping reads the key `name` first (so `{{ x.items }}` is the key when present),
  then `x.result` falls through to `x` itself, then the Python attribute (`x.get`, `x.keys`).
- `{{ value }}` prints through `format_value` (`true`, `[1, "a"]`, `{"k": 1}`).
- Strict mode (`noetl run --strict`): when the render context holds `STRICT_KEY`, a name found
  nowhere (not in the context, not a global) is an `UndefinedName`, which fails the render as
  soon as it is used (printed, compared, iterated, looked into). `is defined` and `default`
  still work, and a name whose value is None stays an ordinary undefined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from noetl.template.filters import FILTERS
from noetl.template.predicates import TESTS
from noetl.template.values import STRICT_KEY as STRICT_KEY
from noetl.template.values import format_value


class UndefinedName(StrictUndefined):
    """A name the context does not have, in strict mode: any use of it fails the render."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        return (
            f"undefined name '{self._undefined_name}' (strict mode: every name a template reads must exist)"
        )


def strict_finalize(value: Any) -> str:
    """`format_value`, failing on a strict-mode undefined name (printed as "" otherwise)."""
    if isinstance(value, UndefinedName):
        value._fail_with_undefined_error()
    return format_value(value)


class NoetlContext(Context):
    """A render context whose None values resolve as missing (so they become undefined).

    Templates are rendered with `shared=True`, so `parent` is the caller's mapping itself and not
    a copy merged with the globals; the environment's globals are looked up last instead.
    """

    def resolve_or_missing(self, key: str) -> Any:
        if key in self.vars:
            value = self.vars[key]
        elif key in self.parent:
            value = self.parent[key]
        else:
            value = self.environment.globals.get(key, missing)
            if value is missing and self.parent.get(STRICT_KEY):
                return UndefinedName(name=key)
        return missing if value is None else value


class NoetlEnvironment(SandboxedEnvironment):
    """SandboxedEnvironment with NoETL's undefined, lookup, output and filter rules."""

    context_class = NoetlContext

    def __init__(self) -> None:
        super().__init__(
            undefined=ChainableUndefined,
            finalize=strict_finalize,
            autoescape=False,
            extensions=["jinja2.ext.loopcontrols"],
        )
        self.filters.update(FILTERS)
        self.tests.update(TESTS)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Key first on mappings, then the legacy `.result` fall-through, then the attribute."""
        if isinstance(obj, Mapping):
            try:
                value = obj[attribute]
            except (KeyError, TypeError):
                if attribute == "result":
                    return obj
            else:
                return self.undefined(obj=obj, name=attribute) if value is None else value
        value = super().getattr(obj, attribute)
        return self.undefined(obj=obj, name=attribute) if value is None else value

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Jinja2's sandboxed item lookup, with None read as undefined."""
        value = super().getitem(obj, argument)
        return self.undefined(obj=obj, name=argument) if value is None else value


ENVIRONMENT = NoetlEnvironment()
