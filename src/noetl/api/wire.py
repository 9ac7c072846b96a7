"""Decoding request bodies into the control plane's terms: worker-posted events (the upstream
`POST /api/events` shape) and execute requests (the seed's `POST /api/execute` shape)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from noetl.engine.events import Event, utcnow
from noetl.errors import NoetlError, ValidationFailed
from noetl.runtime.control import (
    DEFAULT_DEDUP_WINDOW_SECS,
    MAX_BATCH_ITEMS,
    ControlPlane,
    DedupSpec,
    ExecuteRequest,
)


def execute_request(body: Any) -> ExecuteRequest:
    """An `ExecuteRequest` from a `POST /api/execute` body (`payload` or its alias `workload`)."""
    if not isinstance(body, Mapping):
        raise ValidationFailed("the request body must be a JSON object")
    payload = body.get("payload", body.get("workload")) or {}
    if not isinstance(payload, Mapping):
        raise ValidationFailed("'payload' must be a JSON object")
    trace = body.get("trace")
    if trace is not None and not isinstance(trace, Mapping):
        raise ValidationFailed("'trace' must be an object")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValidationFailed("'metadata' must be an object")
    request = ExecuteRequest(
        metadata=dict(metadata) if metadata else None,
        path=_opt_str(body.get("path")),
        catalog_id=_opt_int(body.get("catalog_id"), "catalog_id"),
        payload=dict(payload),
        parent_execution_id=_opt_int(body.get("parent_execution_id"), "parent_execution_id"),
        execution_pool=_opt_str(body.get("execution_pool")),
        trace=dict(trace) if trace else None,
        dedup=_dedup(body.get("dedup")),
        version=_opt_int(body.get("version"), "version"),
    )
    request.validate()
    return request


def _dedup(raw: Any) -> DedupSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("key"), str):
        raise ValidationFailed("'dedup' must be an object with a string 'key'")
    window = raw.get("window_secs", DEFAULT_DEDUP_WINDOW_SECS)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValidationFailed("'dedup.window_secs' must be a non-negative integer")
    return DedupSpec(raw["key"], window)


def execute_batch(control: ControlPlane, items: Any) -> dict[str, Any]:
    """`POST /api/execute/batch`: each item starts (or fails) on its own."""
    if not isinstance(items, list) or not items:
        raise ValidationFailed("execute batch requires a non-empty 'executions' array")
    if len(items) > MAX_BATCH_ITEMS:
        raise ValidationFailed(f"execute batch size {len(items)} exceeds the {MAX_BATCH_ITEMS} cap")
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


def event_from_json(body: Mapping[str, Any], ids: Callable[[], int]) -> Event:
    """A worker-posted event (`POST /api/events`), in the upstream request shape."""
    try:
        execution_id = int(body["execution_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed("Invalid execution_id") from exc
    event_type = body.get("event_type") or body.get("name")
    if not isinstance(event_type, str) or not event_type:
        raise ValidationFailed("'event_type' (or 'name') is required")
    step = body.get("step")
    payload = body.get("payload", body.get("context"))
    status = body.get("status") or _status_from_name(event_type)
    raw_id = body.get("event_id")
    try:
        event_id = int(raw_id) if raw_id not in (None, "", 0) else ids()
    except (TypeError, ValueError) as exc:
        raise ValidationFailed("Invalid event_id") from exc
    raw_meta = body.get("meta") or {}
    if not isinstance(raw_meta, Mapping):
        raise ValidationFailed("'meta' must be an object")
    meta = dict(raw_meta)
    worker_id = body.get("worker_id")
    meta.setdefault("actionable", body.get("actionable", True))
    meta.setdefault("informative", body.get("informative", True))
    if worker_id:
        meta["worker_id"] = worker_id
    result: dict[str, Any] = {"status": str(status)}
    if isinstance(payload, Mapping):
        result["context"] = dict(payload)
    created = body.get("created_at")
    created_at = utcnow()
    if isinstance(created, str):
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
        except ValueError:
            pass
    parent_event_id = _opt_int(body.get("parent_event_id"), "parent_event_id")
    return Event(
        event_id=event_id,
        execution_id=execution_id,
        event_type=event_type,
        node_name=str(step) if step is not None else None,
        node_id=str(step) if step is not None else None,
        node_type=body.get("node_type"),
        status=str(status),
        result=result,
        meta=meta,
        worker_id=str(worker_id) if worker_id else None,
        parent_event_id=parent_event_id,
        created_at=created_at,
    )


def _status_from_name(name: str) -> str:
    lowered = name.lower()
    if any(word in lowered for word in ("done", "exit", "completed")):
        return "COMPLETED"
    if "error" in lowered or "failed" in lowered:
        return "FAILED"
    return "RUNNING"


def _opt_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _opt_int(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValidationFailed(f"'{name}' must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"'{name}' must be an integer") from exc
