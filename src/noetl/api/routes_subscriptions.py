"""`/api/subscriptions`: a playbook run for each message on a NATS subject (`noetl.triggers`).

    POST   /api/subscriptions             create         GET /api/subscriptions           list
    GET    /api/subscriptions/{id}        one            PATCH /api/subscriptions/{id}    change
    DELETE /api/subscriptions/{id}        delete
    GET    /api/subscriptions/{id}/events its audit log (`subscription.message.deduplicated`, ...)

Every id in an answer is a string.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from noetl.api.common import iso, parse_id
from noetl.engine.events import Event
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import SubscriptionRecord
from noetl.triggers.registry import Subscriptions
from noetl.triggers.specs import subscription_spec


class Dedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(None, description="Dotted path of the message id in the JSON payload")
    header: str | None = Field(None, description="Header holding the message id (default Nats-Msg-Id)")
    window_secs: float | None = Field(None, gt=0, description="Seconds a message id is remembered (300)")


class SubscriptionFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, min_length=1, description="NATS subject (wildcards allowed)")
    stream: str | None = Field(None, description="JetStream stream; default: the one capturing the subject")
    durable: str | None = Field(None, description="Durable consumer name; default noetl-sub-<id>")
    workload: dict[str, Any] | None = Field(None, description="Templates rendered against `message`")
    execution_pool: str | None = Field(None, description="Pool of the runs' commands (default subscription)")
    dedup: Dedup | None = None
    deliver: Literal["new", "all"] | None = Field(None, description="new: since created (default); all")
    ack_wait: float | None = Field(None, gt=0, description="Seconds before an unacked message comes again")
    enabled: bool | None = None


class SubscriptionCreate(SubscriptionFields):
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, description="Catalog path of the playbook (its latest version runs)")
    subject: str = Field(min_length=1, description="NATS subject (wildcards allowed)")


class SubscriptionUpdate(SubscriptionFields):
    name: str | None = Field(None, min_length=1, max_length=200)
    path: str | None = Field(None, min_length=1)


class DedupOut(BaseModel):
    field: str | None
    header: str
    window_secs: float


class Subscription(BaseModel):
    subscription_id: str
    name: str
    path: str
    subject: str
    stream: str | None
    durable: str
    workload: dict[str, Any] | None
    execution_pool: str
    dedup: DedupOut
    deliver: str
    ack_wait: float
    enabled: bool
    created_at: str | None
    updated_at: str | None


class SubscriptionList(BaseModel):
    items: list[Subscription]


class AuditEvent(BaseModel):
    event_id: str
    event_type: str
    status: str | None
    context: dict[str, Any] | None
    created_at: str | None


class AuditLog(BaseModel):
    subscription_id: str
    events: list[AuditEvent]


class Deleted(BaseModel):
    subscription_id: str
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


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/subscriptions", tags=["subscriptions"])
    service = Subscriptions(control)

    @api.post("", response_model=Subscription)
    def create(body: SubscriptionCreate) -> Subscription:
        """Create a subscription; every server's consumers pick it up within a few seconds."""
        spec = body.model_dump(exclude={"name", "path", "enabled"}, exclude_none=True)
        return subscription_json(
            service.create(body.name, body.path, spec, enabled=body.enabled is not False)
        )

    @api.get("", response_model=SubscriptionList)
    def list_subscriptions() -> SubscriptionList:
        return SubscriptionList(items=[subscription_json(r) for r in control.store.subscriptions()])

    @api.get("/{subscription_id}", response_model=Subscription)
    def get(subscription_id: str) -> Subscription:
        return subscription_json(service.get(parse_id(subscription_id, "subscription_id")))

    @api.patch("/{subscription_id}", response_model=Subscription)
    def update(subscription_id: str, body: SubscriptionUpdate) -> Subscription:
        """Change fields; `enabled: false` pauses (its consumers stop), `true` resumes."""
        changes = body.model_dump(exclude_unset=True)
        return subscription_json(service.update(parse_id(subscription_id, "subscription_id"), changes))

    @api.delete("/{subscription_id}", response_model=Deleted)
    def delete(subscription_id: str) -> Deleted:
        service.delete(parse_id(subscription_id, "subscription_id"))
        return Deleted(subscription_id=subscription_id, deleted=True)

    @api.get("/{subscription_id}/events", response_model=AuditLog)
    def events(subscription_id: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> AuditLog:
        """The subscription's audit events, oldest first (the latest `limit`)."""
        sub_id = parse_id(subscription_id, "subscription_id")
        return AuditLog(
            subscription_id=str(sub_id), events=[audit_json(e) for e in service.events(sub_id, limit)]
        )

    return api
