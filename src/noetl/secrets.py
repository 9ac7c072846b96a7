"""Masking of resolved secret values, by value, in everything NoETL stores or prints.

Upstream guesses secrets from key names, which corrupts ordinary data (`author`, `tokens`).
We mask exactly the values that were resolved from credentials instead.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from noetl.engine.events import Event

MASK = "********"
_MIN_LEN = 4  # shorter values would mask innocent text everywhere


class Masker:
    """A process-wide set of secret strings and a function that hides them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, value: object) -> None:
        """Remember a secret (strings and the string form of numbers); nested maps are walked."""
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
        with self._lock:
            if text not in self._values:
                self._values.add(text)
                # Longest first, so a secret containing another is masked whole.
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
        """A copy of `value` with every secret occurrence replaced (returns the same object if clean)."""
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


masker = Masker()


def masked(event: Event) -> Event:
    """A copy of `event` with every known secret value hidden (the event itself if none is known)."""
    if not masker.active:
        return event
    return replace(
        event,
        context=masker.mask(event.context),
        meta=masker.mask(event.meta),
        result=masker.mask(event.result),
    )
