"""What the control plane is asked to do: start an execution (with dedup), and what it answers.
The HTTP layer (`noetl.api.wire`) decodes requests into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noetl.errors import ValidationFailed

DEFAULT_DEDUP_WINDOW_SECS = 300
MAX_BATCH_ITEMS = 1000


@dataclass
class DedupSpec:
    key: str
    window_secs: int = DEFAULT_DEDUP_WINDOW_SECS


@dataclass
class ExecuteRequest:
    path: str | None = None
    catalog_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    parent_execution_id: int | None = None
    execution_pool: str | None = None
    trace: dict[str, Any] | None = None
    dedup: DedupSpec | None = None
    # Where a nested run comes from (`child_metadata`): recorded on the child's playbook_started
    # meta; its iterator metadata is stamped on every child event (seed 000).
    metadata: dict[str, Any] | None = None
    version: int | None = None

    def validate(self) -> None:
        if not self.path and self.catalog_id is None:
            raise ValidationFailed("Either 'path' or 'catalog_id' must be provided")


@dataclass
class ExecuteOutcome:
    execution_id: int
    status: str  # started | duplicate
    commands_generated: int

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": str(self.execution_id),
            "status": self.status,
            "commands_generated": self.commands_generated,
        }
