"""Worker traffic: `/api/events` (ingest), `/api/commands/*` (pending, fetch, claim).

`POST /api/events/batch` and `POST /api/commands/claim` are served by `noetl.api.hot` in front
of the framework; their routes here document them (same models, same handlers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from noetl.api.models import (
    MAX_BATCH_EVENTS,
    MAX_CLAIM,
    ClaimBody,
    Claimed,
    ClaimManyBody,
    CommandOut,
    EventAck,
    EventBatch,
    EventBatchAck,
    EventBody,
    PendingCommands,
    parse,
)
from noetl.api.routing import BODY_ERRORS, api_router, errors, in_range
from noetl.api.types import Text
from noetl.api.wire import command_json, event_from_item
from noetl.errors import Conflict, ValidationFailed
from noetl.runtime.control import ControlPlane

CommandId = Annotated[int, Path(ge=0, description="The command's `command.issued` event id (int64).")]


def known(event_id: int) -> int:
    return in_range(event_id, f"command.issued event not found: {event_id}")


Handler = Callable[[Any], dict[str, Any]]


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api", "events")

    @api.post("/events", response_model=EventAck, responses=errors(404, 409, *BODY_ERRORS))
    def post_event(body: EventBody) -> dict[str, Any]:
        """Ingest one worker event; posting the same `event_id` again changes nothing. Only the
        worker holding the event's command may report about it (409 otherwise); an `event_id`
        stored under another execution is a 409; engine-only event types are a 403."""
        event = event_from_item(body, control.ids)
        outcome = control.report([event])
        if outcome.rejected:
            raise Conflict(
                f"event refused: worker '{event.worker_id}' does not hold command {event.command_id} "
                "(it was never claimed by it, its lease expired, or its run ended)"
            )
        return {"status": "ok", "event_id": str(event.event_id), "commands_generated": 0}

    post_batch = batch_handler(control)
    claim_commands = claim_handler(control)

    @api.post("/events/batch", response_model=EventBatchAck, responses=errors(404, 409, *BODY_ERRORS))
    def post_events(body: EventBatch) -> dict[str, Any]:
        """Ingest events; items inherit the batch's `execution_id` and `worker_id`. The answer
        lists the stored `event_ids`, and under `rejected` the commands whose events were refused
        (claimed by another worker, ended, superseded): their worker stops them. At most
        10,000 events."""
        return post_batch(body.model_dump(exclude_unset=True))

    @api.get("/commands/pending", response_model=PendingCommands, responses=errors(422))
    def pending(
        pool: Annotated[list[Text], Query(description="Pools to poll (repeatable); all when absent.")] = [],  # noqa: B006
        limit: Annotated[int, Query(ge=1, description=f"At most {MAX_CLAIM}.")] = 10,
    ) -> dict[str, Any]:
        """Issued commands nobody claimed yet, oldest first (polling without NATS)."""
        rows = control.pending(pool or None, limit=min(limit, MAX_CLAIM))
        return {"commands": [command_json(row) for row in rows]}

    @api.post("/commands/claim", response_model=Claimed, responses=errors(*BODY_ERRORS))
    def claim_many(body: ClaimManyBody) -> dict[str, Any]:
        """Claim several commands at once: `{worker_id, event_ids: [...]}` (from bus notifications)
        or `{worker_id, pools?: [...], limit?}` (the oldest pending ones). Answers `{commands: [...]}`
        with one claim body per command won; commands claimed elsewhere are left out."""
        return claim_commands(body.model_dump(exclude_unset=True))

    @api.get("/commands/claim", include_in_schema=False)
    def not_a_command() -> None:
        """`claim` is no command id: GET on the batch claim is a 405, not a 422."""
        raise HTTPException(405, "Method Not Allowed")

    @api.get("/commands/{event_id}", response_model=CommandOut, responses=errors(404, 422))
    def get_command(event_id: CommandId) -> dict[str, Any]:
        """The `command.issued` event a worker runs."""
        return command_json(control.get_command(known(event_id)))

    @api.post(
        "/commands/{event_id}/claim", response_model=CommandOut, responses=errors(404, 409, *BODY_ERRORS)
    )
    def claim(event_id: CommandId, body: ClaimBody) -> dict[str, Any]:
        """Claim a command for a worker: 409 when another worker has it or the run ended."""
        return command_json(control.claim(known(event_id), body.worker_id))

    return api


def batch_handler(control: ControlPlane) -> Handler:
    """`POST /api/events/batch` on a decoded body (what `noetl.api.hot` serves)."""

    def post_batch(doc: Any) -> dict[str, Any]:
        if not isinstance(doc, Mapping):
            raise ValidationFailed("the request body must be a JSON object")
        items = doc.get("events")
        if items is not None and not isinstance(items, list):
            raise ValidationFailed("'events' must be an array")
        for index, item in enumerate(items or ()):
            if not isinstance(item, Mapping):
                raise ValidationFailed(f"events[{index}] must be a JSON object")
        if items is not None and len(items) > MAX_BATCH_EVENTS:
            raise ValidationFailed(
                f"'events' holds {len(items)} events; at most {MAX_BATCH_EVENTS} per request"
            )
        batch = parse(EventBatch, doc)
        events = [
            event_from_item(item, control.ids, execution_id=batch.execution_id, worker_id=batch.worker_id)
            for item in batch.events
        ]
        outcome = control.report(events) if events else None
        answer: dict[str, Any] = {
            "status": "ok",
            "event_ids": [str(i) for i in outcome.event_ids] if outcome else [],
            "commands_generated": 0,
        }
        if outcome and outcome.rejected:
            answer["rejected"] = outcome.rejected
        return answer

    return post_batch


def claim_handler(control: ControlPlane) -> Handler:
    """`POST /api/commands/claim` on a decoded body (what `noetl.api.hot` serves)."""

    def claim_commands(doc: Any) -> dict[str, Any]:
        if not isinstance(doc, Mapping):
            raise ValidationFailed("the request body must be a JSON object")
        limit = doc.get("limit", 10)
        if isinstance(limit, bool) or (isinstance(limit, int) and not 1 <= limit <= MAX_CLAIM):
            raise ValidationFailed(f"'limit' must be an integer from 1 to {MAX_CLAIM}")
        raw_ids = doc.get("event_ids")
        if isinstance(raw_ids, list) and len(raw_ids) > MAX_CLAIM:
            raise ValidationFailed(f"'event_ids' holds {len(raw_ids)} ids; at most {MAX_CLAIM}")
        body = parse(ClaimManyBody, doc)
        commands = control.claim_many(
            body.worker_id, pools=body.pools or None, limit=body.limit, event_ids=body.event_ids
        )
        return {"commands": [command_json(c) for c in commands]}

    return claim_commands
