"""A finding of `noetl validate`: a severity, a message, and where it is (file, line, step,
field). `Findings` collects them while the checks walk the playbook."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    step: str | None = None
    field: str | None = None

    def location(self) -> str:
        place = self.file or "<playbook>"
        return f"{place}:{self.line}" if self.line is not None else place

    def __str__(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step '{self.step}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        context = f" ({', '.join(where)})" if where else ""
        return f"{self.location()}: {self.severity}{context}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "step": self.step,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class Findings:
    """The findings of one file, in the order they were found (sorted by line on output)."""

    file: str | None
    items: list[Finding] = field(default_factory=list)

    def add(
        self,
        severity: Severity,
        message: str,
        *,
        line: int | None,
        step: str | None = None,
        field: str | None = None,
    ) -> None:
        finding = Finding(severity, message, self.file, line, step, field)
        if finding not in self.items:
            self.items.append(finding)

    def sorted(self) -> list[Finding]:
        return sorted(self.items, key=lambda f: (f.line or 0, f.severity != ERROR))


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest candidate to `word` (difflib), or None."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=cutoff)
    return matches[0] if matches else None
