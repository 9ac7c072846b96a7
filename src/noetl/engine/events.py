"""The event record and the event-type vocabulary (upstream names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PLAYBOOK_STARTED = "playbook_started"
PLAYBOOK_COMPLETED = "playbook.completed"
PLAYBOOK_FAILED = "playbook.failed"
PLAYBOOK_CANCELLED = "playbook.cancelled"
COMMAND_ISSUED = "command.issued"
COMMAND_CLAIMED = "command.claimed"
COMMAND_STARTED = "command.started"
COMMAND_COMPLETED = "command.completed"
COMMAND_FAILED = "command.failed"
COMMAND_HEARTBEAT = "command.heartbeat"
COMMAND_EXPIRED = "command.expired"  # a claim's lease ran out; the command is issued again
CALL_DONE = "call.done"
CALL_ERROR = "call.error"
STEP_ENTER = "step.enter"
STEP_EXIT = "step.exit"
STEP_SKIPPED = "step.skipped"
CTX_UPDATED = "ctx.updated"

TERMINAL_TYPES = frozenset({PLAYBOOK_COMPLETED, PLAYBOOK_FAILED, PLAYBOOK_CANCELLED})
# Events a worker reports that make the engine decide what happens next.
TRIGGER_TYPES = frozenset({COMMAND_COMPLETED, COMMAND_FAILED})

COLUMNS = (
    "event_id",
    "execution_id",
    "parent_event_id",
    "parent_execution_id",
    "catalog_id",
    "event_type",
    "node_id",
    "node_name",
    "node_type",
    "status",
    "context",
    "meta",
    "result",
    "worker_id",
    "created_at",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


_ABSENT = object()


@dataclass(slots=True)
class Event:
    """One row of the append-only event log (`noetl.event`)."""

    event_id: int
    execution_id: int
    event_type: str
    node_name: str | None = None
    node_id: str | None = None
    node_type: str | None = None
    status: str | None = None
    context: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    parent_event_id: int | None = None
    parent_execution_id: int | None = None
    catalog_id: int | None = None
    worker_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    @property
    def command_id(self) -> str | None:
        """The command this event belongs to (meta first, then the result payload)."""
        meta = self.meta
        if meta:  # the common case, read often on hot paths: one lookup, no str() of a str
            found = meta.get("command_id", _ABSENT)
            if found is not _ABSENT:
                return found if type(found) is str else str(found)
        ctx = (self.result or {}).get("context")
        if isinstance(ctx, dict) and "command_id" in ctx:
            return str(ctx["command_id"])
        return None

    @property
    def payload(self) -> dict[str, Any]:
        """`result.context` when it is a map (where worker payloads live), else `{}`."""
        ctx = (self.result or {}).get("context")
        return ctx if isinstance(ctx, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ids as strings are left to the caller (they fit in a JSON number)."""
        return {
            "event_id": self.event_id,
            "execution_id": self.execution_id,
            "parent_event_id": self.parent_event_id,
            "parent_execution_id": self.parent_execution_id,
            "catalog_id": self.catalog_id,
            "event_type": self.event_type,
            "node_id": self.node_id,
            "node_name": self.node_name,
            "node_type": self.node_type,
            "status": self.status,
            "context": self.context,
            "meta": self.meta,
            "result": self.result,
            "worker_id": self.worker_id,
            "created_at": self.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        created = data.get("created_at")
        if isinstance(created, str):
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
        elif isinstance(created, datetime):
            created_at = created if created.tzinfo else created.replace(tzinfo=UTC)
        else:
            created_at = utcnow()

        def opt_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None or value == "" else int(value)

        return cls(
            event_id=int(data["event_id"]),
            execution_id=int(data["execution_id"]),
            event_type=str(data["event_type"]),
            node_name=data.get("node_name"),
            node_id=data.get("node_id"),
            node_type=data.get("node_type"),
            status=data.get("status"),
            context=data.get("context"),
            meta=data.get("meta"),
            result=data.get("result"),
            parent_event_id=opt_int("parent_event_id"),
            parent_execution_id=opt_int("parent_execution_id"),
            catalog_id=opt_int("catalog_id"),
            worker_id=data.get("worker_id"),
            created_at=created_at,
        )
