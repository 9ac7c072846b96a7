"""Masking of resolved secret values, by value, per execution.

Upstream guesses secrets from key names, which corrupts ordinary data (`author`, `tokens`). We mask
exactly the values that were resolved from credentials instead, and only in the execution that
resolved them (and its ancestors, which receive its results): a credential value such as `1000`
or `postgres` used by one run never alters another run's data.

While a command runs, its execution is the *current* one (`current_execution`, a context
variable, so every task and thread the command starts inherits it): `masker.add(value)` registers
a secret for it and `masker.mask_text(text)` masks with its secrets. Stored events are masked
with the maskers of their own execution (`masked`). Log lines and API error messages, which
belong to no single run, use the union of every secret this process has seen.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import replace
from typing import Any, TypeVar, cast
from urllib.parse import quote, quote_plus

from noetl.engine.events import Event

MASK = "********"
_MIN_LEN = 4  # shorter values would mask innocent text everywhere
MAX_EXECUTIONS = 10_000  # executions whose maskers are kept (the oldest are forgotten)

T = TypeVar("T")
_current: ContextVar[int | None] = ContextVar("noetl_current_execution", default=None)


class Masker:
    """A set of secret strings and a function that hides them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, value: object) -> None:
        """Remember a secret (strings and the string form of numbers, and the URL-encoded forms a
        tool may derive from them); nested maps and lists are walked."""
        if isinstance(value, dict):
            for item in value.values():
                self.add(item)
            return
        if isinstance(value, (list, tuple)):
            for item in value:
                self.add(item)
            return
        if value is None or isinstance(value, bool):
            return
        text = str(value)
        if len(text) < _MIN_LEN:
            return
        forms = {text, quote(text, safe=""), quote_plus(text)}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            # Longest first, so a secret containing another is masked whole.
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def merge(self, other: Masker) -> None:
        with other._lock:
            values = set(other._values)
        with self._lock:
            if values <= self._values:
                return
            self._values |= values
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    @property
    def active(self) -> bool:
        return bool(self._ordered)

    def mask_text(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask(self, value: Any) -> Any:
        """A copy of `value` with every secret occurrence replaced (the same object if clean)."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict):
            return {k: self.mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
            return MASK if text in self._values else value
        return value


class Secrets:
    """The maskers of the executions this process has run commands of (thread-safe)."""

    def __init__(self) -> None:
        self.everything = Masker()  # every secret seen: for log lines and error messages
        self._maskers: OrderedDict[int, Masker] = OrderedDict()
        self._parents: dict[int, int] = {}
        self._guard = threading.Lock()

    def link(self, child: int, parent: int) -> None:
        """`child` is a nested execution of `parent`: its secrets are masked in the parent too."""
        with self._guard:
            self._parents[child] = parent

    def add(self, execution_id: int, value: object) -> None:
        """A secret `execution_id` resolved: masked in it and in its ancestors."""
        self.everything.add(value)
        for target in self._lineage(execution_id):
            self._masker(target).add(value)

    def masker(self, execution_id: int) -> Masker | None:
        return self._maskers.get(execution_id)  # a dict read is atomic: no lock on the hot path

    def _masker(self, execution_id: int) -> Masker:
        with self._guard:
            found = self._maskers.get(execution_id)
            if found is None:
                found = self._maskers[execution_id] = Masker()
                while len(self._maskers) > MAX_EXECUTIONS:
                    old, _ = self._maskers.popitem(last=False)
                    self._parents.pop(old, None)
            return found

    def _lineage(self, execution_id: int) -> list[int]:
        chain = [execution_id]
        with self._guard:
            while chain[-1] in self._parents and len(chain) < 64:
                chain.append(self._parents[chain[-1]])
        return chain


secrets = Secrets()


@contextmanager
def current_execution(execution_id: int) -> Iterator[None]:
    """Run a command of `execution_id`: secrets registered meanwhile belong to it."""
    token = _current.set(execution_id)
    try:
        yield
    finally:
        _current.reset(token)


def enter_execution(execution_id: int) -> Token[int | None]:
    """`current_execution` without a context manager (for the executor's hot path): pass the
    token to `leave_execution` when the command is done."""
    return _current.set(execution_id)


def leave_execution(token: Token[int | None]) -> None:
    _current.reset(token)


class _CurrentMasker:
    """`masker`: the current execution's masker (the union of all outside a command)."""

    def _target(self) -> Masker:
        execution_id = _current.get()
        if execution_id is None:
            return secrets.everything
        return secrets.masker(execution_id) or Masker()

    def add(self, value: object) -> None:
        execution_id = _current.get()
        if execution_id is None:
            secrets.everything.add(value)
        else:
            secrets.add(execution_id, value)

    @property
    def active(self) -> bool:
        return self._target().active

    def mask_text(self, text: str) -> str:
        return self._target().mask_text(text)

    def mask(self, value: Any) -> Any:
        return self._target().mask(value)


masker = _CurrentMasker()


def masked(event: Event) -> Event:
    """A copy of `event` with the secrets of its execution hidden (the event itself if none)."""
    found = secrets.masker(event.execution_id)
    if found is None or not found.active:
        return event
    return replace(
        event,
        context=found.mask(event.context),
        meta=found.mask(event.meta),
        result=found.mask(event.result),
    )


def mask_for(execution_id: int, value: T) -> T:
    """`value` with the secrets of `execution_id` hidden (API answers built from memory)."""
    found = secrets.masker(execution_id)
    return cast(T, found.mask(value)) if found is not None else value


_URL_SECRETS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"(://[^:/@?#]*:)[^@/?#]*@"), lambda m: f"{m.group(1)}***@"),
    (
        re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE),
        lambda m: f"{m.group(1)}***",
    ),
)


def redact_url(url: str) -> str:
    """A store or bus URL (or a libpq connection string) fit for messages and logs: any password,
    in the URL's user part or as a `password=` parameter, replaced by `***`."""
    for pattern, replace_with in _URL_SECRETS:
        url = pattern.sub(replace_with, url)
    return url
