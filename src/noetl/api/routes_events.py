"""Worker traffic: `/api/events` (ingest), `/api/commands/*` (pending, fetch, claim)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from noetl.api.common import json_object, required_str
from noetl.api.wire import event_from_json
from noetl.errors import Conflict, ValidationFailed
from noetl.runtime.control import ControlPlane

JsonBody = Annotated[Any, Body()]
MAX_PENDING = 1000
MAX_BATCH_EVENTS = 10_000


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["events"])

    @api.post("/events")
    def post_event(body: JsonBody = None) -> dict[str, Any]:
        """Ingest one worker event; posting the same `event_id` again changes nothing."""
        event = event_from_json(json_object(body), control.ids)
        outcome = control.report([event])
        if outcome.rejected:
            raise Conflict(
                f"event refused: worker '{event.worker_id}' does not hold command {event.command_id} "
                "(it was never claimed by it, its lease expired, or its run ended)"
            )
        return {"status": "ok", "event_id": str(event.event_id), "commands_generated": 0}

    post_batch = batch_handler(control)
    claim_commands = claim_handler(control)

    @api.post("/events/batch")
    def post_events(body: JsonBody = None) -> dict[str, Any]:
        """Ingest several events of one execution; items inherit `execution_id` and `worker_id`.
        The answer lists the stored `event_ids`, and under `rejected` the commands whose events
        were refused (claimed by another worker, ended, superseded): their worker stops them."""
        return post_batch(body)

    @api.get("/commands/pending")
    def pending(
        pool: Annotated[
            list[str] | None, Query(description="Pools to poll (repeatable); all when absent.")
        ] = None,
        limit: Annotated[int, Query(ge=1)] = 10,
    ) -> dict[str, Any]:
        """Issued commands nobody claimed yet, oldest first (polling without NATS)."""
        return {"commands": control.pending(pool or None, limit=min(limit, MAX_PENDING))}

    @api.post("/commands/claim")
    def claim_many(body: JsonBody = None) -> dict[str, Any]:
        """Claim several commands at once: `{worker_id, event_ids: [...]}` (from bus notifications)
        or `{worker_id, pools?: [...], limit?}` (the oldest pending ones). Answers `{commands: [...]}`
        with one claim body per command won; commands claimed elsewhere are left out."""
        return claim_commands(body)

    @api.get("/commands/{event_id}")
    def get_command(event_id: int) -> dict[str, Any]:
        """The `command.issued` event a worker runs."""
        return control.get_command(event_id)

    @api.post("/commands/{event_id}/claim")
    def claim(event_id: int, body: JsonBody = None) -> dict[str, Any]:
        """Claim a command for a worker: 409 when another worker has it or the run ended."""
        worker_id = required_str(json_object(body), "worker_id")
        return control.claim(event_id, worker_id)

    return api


def batch_handler(control: ControlPlane) -> Callable[[Any], dict[str, Any]]:
    """`POST /api/events/batch` on a decoded body (shared by the route and `noetl.api.hot`)."""

    def post_batch(body: Any) -> dict[str, Any]:
        doc = json_object(body)
        items = doc.get("events")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ValidationFailed("'events' must be an array")
        if len(items) > MAX_BATCH_EVENTS:
            raise ValidationFailed(
                f"'events' holds {len(items)} events; at most {MAX_BATCH_EVENTS} per request"
            )
        events = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValidationFailed(f"events[{index}] must be a JSON object")
            merged = dict(item)
            merged.setdefault("execution_id", doc.get("execution_id"))
            if not merged.get("worker_id") and doc.get("worker_id"):
                merged["worker_id"] = doc["worker_id"]
            events.append(event_from_json(merged, control.ids))
        outcome = control.report(events) if events else None
        answer: dict[str, Any] = {
            "status": "ok",
            "event_ids": outcome.event_ids if outcome else [],
            "commands_generated": 0,
        }
        if outcome and outcome.rejected:
            answer["rejected"] = outcome.rejected
        return answer

    return post_batch


def claim_handler(control: ControlPlane) -> Callable[[Any], dict[str, Any]]:
    """`POST /api/commands/claim` on a decoded body (shared by the route and `noetl.api.hot`)."""

    def claim_commands(body: Any) -> dict[str, Any]:
        doc = json_object(body)
        worker_id = required_str(doc, "worker_id")
        limit = doc.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PENDING:
            raise ValidationFailed(f"'limit' must be an integer from 1 to {MAX_PENDING}")
        pools = doc.get("pools")
        if pools is not None and not (isinstance(pools, list) and all(isinstance(p, str) for p in pools)):
            raise ValidationFailed("'pools' must be an array of pool names")
        raw_ids = doc.get("event_ids")
        event_ids: list[int] | None = None
        if isinstance(raw_ids, list) and len(raw_ids) > MAX_PENDING:
            raise ValidationFailed(f"'event_ids' holds {len(raw_ids)} ids; at most {MAX_PENDING}")
        if raw_ids is not None:
            try:
                event_ids = [int(i) for i in raw_ids]
            except (TypeError, ValueError) as exc:
                raise ValidationFailed("'event_ids' must be an array of event ids") from exc
        limit = min(limit, MAX_PENDING)
        commands = control.claim_many(worker_id, pools=pools or None, limit=limit, event_ids=event_ids)
        return {"commands": commands}

    return claim_commands
