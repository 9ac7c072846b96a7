"""`/api/subscriptions`: a playbook run for each message on a NATS subject (`noetl.triggers`).

    POST   /api/subscriptions             create         GET /api/subscriptions           list
    GET    /api/subscriptions/{id}        one            PATCH /api/subscriptions/{id}    change
    DELETE /api/subscriptions/{id}        delete
    GET    /api/subscriptions/{id}/events its audit log (`subscription.message.deduplicated`, ...)

Every id in an answer is a string.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import ConfigDict, Field

from noetl.api.common import iso
from noetl.api.models import Answer, Request
from noetl.api.routing import BODY_ERRORS, api_router, errors, in_range
from noetl.api.types import IdText, JsonObject, Name, ShortName, Text
from noetl.engine.events import Event
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import SubscriptionRecord
from noetl.triggers.registry import Subscriptions
from noetl.triggers.specs import subscription_spec

Seconds = Annotated[float, Field(gt=0, le=366 * 86400)]
SubscriptionId = Annotated[int, Path(ge=0, description="The subscription's id (int64).")]


class Strict(Request):
    """Unknown fields are refused (a misspelt field would silently change nothing)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Dedup(Strict):
    field: Text | None = Field(None, description="Dotted path of the message id in the JSON payload")
    header: Text | None = Field(None, description="Header holding the message id (default Nats-Msg-Id)")
    window_secs: Seconds | None = Field(None, description="Seconds a message id is remembered (300)")


class SubscriptionFields(Strict):
    subject: Name | None = Field(None, description="NATS subject (wildcards allowed)")
    stream: Text | None = Field(None, description="JetStream stream; default: the one capturing the subject")
    durable: Text | None = Field(None, description="Durable consumer name; default noetl-sub-<id>")
    workload: JsonObject | None = Field(None, description="Templates rendered against `message`")
    execution_pool: Text | None = Field(None, description="Pool of the runs' commands (default subscription)")
    dedup: Dedup | None = None
    deliver: Literal["new", "all"] | None = Field(None, description="new: since created (default); all")
    ack_wait: Seconds | None = Field(None, description="Seconds before an unacked message comes again")
    enabled: bool | None = None


class SubscriptionCreate(SubscriptionFields):
    name: ShortName
    path: Name = Field(description="Catalog path of the playbook (its latest version runs)")
    subject: Name = Field(description="NATS subject (wildcards allowed)")


class SubscriptionUpdate(SubscriptionFields):
    name: ShortName | None = None
    path: Name | None = None


class DedupOut(Answer):
    field: str | None
    header: str
    window_secs: float


class Subscription(Answer):
    subscription_id: IdText
    name: str
    path: str
    subject: str
    stream: str | None
    durable: str
    workload: JsonObject | None
    execution_pool: str
    dedup: DedupOut
    deliver: str
    ack_wait: float
    enabled: bool
    created_at: str | None
    updated_at: str | None


class SubscriptionList(Answer):
    items: list[Subscription]


class AuditEvent(Answer):
    event_id: IdText
    event_type: str
    status: str | None
    context: JsonObject | None
    created_at: str | None


class AuditLog(Answer):
    subscription_id: IdText
    events: list[AuditEvent]


class Deleted(Answer):
    subscription_id: IdText
    deleted: bool


def subscription_json(record: SubscriptionRecord) -> Subscription:
    spec = subscription_spec(record.spec)
    return Subscription(
        subscription_id=str(record.subscription_id),
        name=record.name,
        path=record.path,
        subject=spec.subject,
        stream=spec.stream,
        durable=spec.durable or f"noetl-sub-{record.subscription_id}",
        workload=spec.workload,
        execution_pool=spec.execution_pool,
        dedup=DedupOut(field=spec.dedup_field, header=spec.dedup_header, window_secs=spec.dedup_window),
        deliver=spec.deliver,
        ack_wait=spec.ack_wait,
        enabled=record.enabled,
        created_at=iso(record.created_at),
        updated_at=iso(record.updated_at),
    )


def audit_json(event: Event) -> AuditEvent:
    result = event.result or {}
    context = result.get("context") if isinstance(result, dict) else None
    return AuditEvent(
        event_id=str(event.event_id),
        event_type=event.event_type,
        status=event.status,
        context=context if isinstance(context, dict) else None,
        created_at=iso(event.created_at),
    )


def known(subscription_id: int) -> int:
    return in_range(subscription_id, f"subscription {subscription_id} not found")


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api/subscriptions", "subscriptions")
    service = Subscriptions(control)

    @api.post("", response_model=Subscription, responses=errors(409, *BODY_ERRORS))
    def create(body: SubscriptionCreate) -> Subscription:
        """Create a subscription (409 when the name is taken); every server's consumers pick it
        up within a few seconds."""
        spec = body.model_dump(exclude={"name", "path", "enabled"}, exclude_none=True)
        return subscription_json(
            service.create(body.name, body.path, spec, enabled=body.enabled is not False)
        )

    @api.get("", response_model=SubscriptionList, responses=errors())
    def list_subscriptions() -> SubscriptionList:
        """Every subscription."""
        return SubscriptionList(items=[subscription_json(r) for r in control.store.subscriptions()])

    @api.get("/{subscription_id}", response_model=Subscription, responses=errors(404, 422))
    def get(subscription_id: SubscriptionId) -> Subscription:
        """One subscription."""
        return subscription_json(service.get(known(subscription_id)))

    @api.patch("/{subscription_id}", response_model=Subscription, responses=errors(404, 409, *BODY_ERRORS))
    def update(subscription_id: SubscriptionId, body: SubscriptionUpdate) -> Subscription:
        """Change fields; `enabled: false` pauses (its consumers stop), `true` resumes."""
        changes = body.model_dump(exclude_unset=True)
        return subscription_json(service.update(known(subscription_id), changes))

    @api.delete("/{subscription_id}", response_model=Deleted, responses=errors(404, 422))
    def delete(subscription_id: SubscriptionId) -> Deleted:
        """Delete a subscription (its consumers stop; its audit log stays)."""
        service.delete(known(subscription_id))
        return Deleted(subscription_id=str(subscription_id), deleted=True)

    @api.get("/{subscription_id}/events", response_model=AuditLog, responses=errors(404, 422))
    def events(
        subscription_id: SubscriptionId, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> AuditLog:
        """The subscription's audit events, oldest first (the latest `limit`)."""
        sub_id = known(subscription_id)
        return AuditLog(
            subscription_id=str(sub_id), events=[audit_json(e) for e in service.events(sub_id, limit)]
        )

    return api
