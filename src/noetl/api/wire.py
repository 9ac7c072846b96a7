"""From validated request bodies (`noetl.api.models`) to the control plane's terms, and back:
execute requests, worker-posted events (the upstream `POST /api/events` shape), and the wire
form of events and commands in answers (every id a string)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from noetl.api.common import iso
from noetl.api.models import MAX_EXECUTE_BATCH, EventItem, ExecuteBody
from noetl.engine.events import Event, utcnow
from noetl.errors import Forbidden, NoetlError, ValidationFailed
from noetl.ids import EPOCH_MS
from noetl.runtime.control import ControlPlane, DedupSpec, ExecuteRequest


def execute_request(body: ExecuteBody) -> ExecuteRequest:
    """An `ExecuteRequest` from a `POST /api/execute` body (`payload` or its alias `workload`)."""
    payload = body.payload if body.payload is not None else body.workload
    request = ExecuteRequest(
        metadata=dict(body.metadata) if body.metadata else None,
        path=body.path or None,
        catalog_id=body.catalog_id,
        payload=dict(payload or {}),
        parent_execution_id=body.parent_execution_id,
        execution_pool=body.execution_pool or None,
        trace=dict(body.trace) if body.trace else None,
        dedup=DedupSpec(body.dedup.key, body.dedup.window_secs) if body.dedup else None,
        version=body.version,
    )
    request.validate()
    return request


def check_child(control: ControlPlane, body: ExecuteBody) -> None:
    """What a worker token may start: the child of an open command of a running execution (a
    pipeline's `kind: playbook` task), named by `parent_execution_id` and
    `metadata.parent_command_id`; never a playbook of its choosing."""
    command_id = (body.metadata or {}).get("parent_command_id")
    parent = body.parent_execution_id
    refusal = Forbidden(
        "a worker token starts only the child of a command it runs "
        "(parent_execution_id and metadata.parent_command_id of an open command)"
    )
    if parent is None or not isinstance(command_id, str) or not command_id.startswith(f"{parent}:"):
        raise refusal
    engine = control.orchestrator.engines.get(parent)
    command = engine.state.commands.get(command_id) if engine is not None else None
    if engine is None or engine.state.terminal or command is None:
        raise refusal
    if command.status not in ("issued", "claimed", "started"):
        raise refusal


def execute_batch(control: ControlPlane, items: list[ExecuteBody]) -> dict[str, Any]:
    """`POST /api/execute/batch`: each item starts (or fails) on its own."""
    if not items:
        raise ValidationFailed("execute batch requires a non-empty 'executions' array")
    if len(items) > MAX_EXECUTE_BATCH:
        raise ValidationFailed(f"execute batch size {len(items)} exceeds the {MAX_EXECUTE_BATCH} cap")
    results: list[dict[str, Any]] = []
    counts = {"started": 0, "duplicate": 0, "error": 0}
    for index, body in enumerate(items):
        try:
            outcome = control.execute(execute_request(body))
        except NoetlError as exc:
            counts["error"] += 1
            results.append({"index": index, "status": "error", "commands_generated": 0, "error": str(exc)})
            continue
        counts[outcome.status] += 1
        results.append({"index": index, **outcome.to_json()})
    return {
        "count": len(items),
        "started": counts["started"],
        "duplicates": counts["duplicate"],
        "failed": counts["error"],
        "results": results,
    }


FUTURE_SKEW_MS = 10_000  # how far ahead of this server's clock a client's event id may be


def client_id(event_id: int, ids: Callable[[], int]) -> int:
    """A client-minted event id, unless it lies in the id space the server mints from: its own
    snowflake node, or a time ahead of its clock. Ids planted there would collide with the ids
    the server mints next, and refuse its own writes (new runs would not start)."""
    node = getattr(ids, "node", None)
    if isinstance(node, int) and (event_id >> 12) & 0x3FF == node:
        raise ValidationFailed(f"event_id {event_id} is in the server's id space (snowflake node {node})")
    if (event_id >> 22) + EPOCH_MS > time.time() * 1000 + FUTURE_SKEW_MS:
        raise ValidationFailed(f"event_id {event_id} lies in the future")
    return event_id


def event_from_item(
    item: EventItem, ids: Callable[[], int], *, execution_id: int | None = None, worker_id: str | None = None
) -> Event:
    """A worker-posted event; `execution_id` and `worker_id` are the batch's, for items that
    name none. A client-minted `event_id` must not lie in the server's id space (`client_id`)."""
    execution = item.execution_id if item.execution_id is not None else execution_id
    if execution is None:
        raise ValidationFailed("Invalid execution_id")
    event_type = str(item.event_type or item.name)
    payload = item.payload if item.payload is not None else item.context
    status = item.status or _status_from_name(event_type)
    worker = item.worker_id or worker_id
    meta = dict(item.meta or {})
    meta.setdefault("actionable", item.actionable if item.actionable is not None else True)
    meta.setdefault("informative", item.informative if item.informative is not None else True)
    if worker:
        meta["worker_id"] = worker
    result: dict[str, Any] = {"status": status}
    if isinstance(payload, Mapping):
        result["context"] = dict(payload)
    step = item.step
    return Event(
        event_id=client_id(item.event_id, ids) if item.event_id else ids(),
        execution_id=execution,
        event_type=event_type,
        node_name=step,
        node_id=step,
        node_type=item.node_type,
        status=status,
        result=result,
        meta=meta,
        worker_id=worker or None,
        parent_event_id=item.parent_event_id,
        created_at=_created_at(item.created_at),
    )


def _created_at(text: str | None) -> datetime:
    if text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return utcnow()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return utcnow()


def _status_from_name(name: str) -> str:
    lowered = name.lower()
    if any(word in lowered for word in ("done", "exit", "completed")):
        return "COMPLETED"
    if "error" in lowered or "failed" in lowered:
        return "FAILED"
    return "RUNNING"


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def event_json(event: Event) -> dict[str, Any]:
    """An event as answers carry it: every id a string."""
    return {
        "event_id": str(event.event_id),
        "execution_id": str(event.execution_id),
        "parent_event_id": _id(event.parent_event_id),
        "parent_execution_id": _id(event.parent_execution_id),
        "catalog_id": _id(event.catalog_id),
        "event_type": event.event_type,
        "node_id": event.node_id,
        "node_name": event.node_name,
        "node_type": event.node_type,
        "status": event.status,
        "context": event.context,
        "meta": event.meta,
        "result": event.result,
        "worker_id": event.worker_id,
        "created_at": iso(event.created_at),
    }


def command_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """A command (a claim's answer, `GET /api/commands/{id}`) with its ids as strings."""
    return {**body, "event_id": str(body["event_id"]), "execution_id": str(body["execution_id"])}
