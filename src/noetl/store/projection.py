"""The execution projection: which events start or finish an execution summary.

Every adapter keeps one summary row per execution, updated in the same write as the events
that change it. The rules live here so the adapters cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from noetl.engine.events import (
    PLAYBOOK_CANCELLED,
    PLAYBOOK_COMPLETED,
    PLAYBOOK_FAILED,
    PLAYBOOK_STARTED,
    Event,
)
from noetl.store.codec import utc_ms
from noetl.store.ports import CANCELLED, COMPLETED, FAILED

STARTED_TYPES = frozenset({PLAYBOOK_STARTED, "playbook.started"})
# Upstream also writes the underscore forms (`/finalize`, `/cancel`); accept them all.
FINAL_STATUS = {
    PLAYBOOK_COMPLETED: COMPLETED,
    "playbook_completed": COMPLETED,
    PLAYBOOK_FAILED: FAILED,
    "playbook_failed": FAILED,
    PLAYBOOK_CANCELLED: CANCELLED,
    "playbook_cancelled": CANCELLED,
    "execution.cancelled": CANCELLED,
}
PROJECTED_TYPES = STARTED_TYPES | FINAL_STATUS.keys()


@dataclass(frozen=True, slots=True)
class Start:
    """Insert the execution as RUNNING; if a row exists, fill in where it came from only."""

    execution_id: int
    path: str | None
    catalog_id: int | None
    parent_execution_id: int | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Finish:
    """Set the final status; insert the row if the start was never seen."""

    execution_id: int
    status: str
    completed_at: datetime
    error: str | None


def change(event: Event) -> Start | Finish | None:
    """What `event` does to its execution's summary (None for most events)."""
    if event.event_type in STARTED_TYPES:
        context = event.context or {}
        path = context.get("path") or event.node_name
        return Start(
            execution_id=event.execution_id,
            path=None if path is None else str(path),
            catalog_id=event.catalog_id if event.catalog_id is not None else _int(context.get("catalog_id")),
            parent_execution_id=event.parent_execution_id,
            started_at=utc_ms(event.created_at),
        )
    status = FINAL_STATUS.get(event.event_type)
    if status is None:
        return None
    return Finish(
        execution_id=event.execution_id,
        status=status,
        completed_at=utc_ms(event.created_at),
        error=_error_text(event),
    )


def _error_text(event: Event) -> str | None:
    error = (event.meta or {}).get("error")
    if error is None:
        error = event.payload.get("error")
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return json.dumps(error, separators=(",", ":"), ensure_ascii=False, default=str)


def _int(value: object) -> int | None:
    try:
        return None if value is None else int(str(value))
    except ValueError:
        return None
