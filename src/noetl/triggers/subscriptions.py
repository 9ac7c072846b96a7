"""One message of a subscription, taken in: at most one run per message id inside the dedup window.

The message key is the configured payload field (`dedup.field`, a dotted path into the JSON
payload), else the `dedup.header` (default `Nats-Msg-Id`), else the stream and its sequence number
(which still recognises a redelivery). Under the key's trigger lock the key is claimed with a
fresh execution id; then:

* the claim is ours, or it holds an id whose run was never recorded (the server that claimed it
  died before starting it): the run starts under that id;
* it holds a recorded run: the message is a duplicate (or a redelivery), no run starts, and a
  `subscription.message.deduplicated` event is recorded.

**Where the audit events are**: in the event log under the subscription's id as the execution id
(as upstream records a subscription's lifecycle), so `GET /api/subscriptions/{id}/events` (or
`noetl.event WHERE execution_id = <subscription id>`) lists them; each names the key, the original
execution and the stream sequence of the suppressed delivery. Runs record `subscription_id`,
`message_id`, `subject` and `stream_seq` on their `playbook_started` meta.

The caller acks the message only after `take` returned (the run or the audit event is recorded):
a crash before that means a redelivery, which this handles again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from noetl.engine.events import Event
from noetl.errors import NotFound, TemplateError, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import SubscriptionRecord
from noetl.template import render_value
from noetl.triggers.launch import launch, recorded
from noetl.triggers.specs import SubscriptionSpec, subscription_spec

log = logging.getLogger(__name__)

DEDUPLICATED = "subscription.message.deduplicated"
FAILED = "subscription.message.failed"


@dataclass(frozen=True)
class Delivery:
    """A message as the consumer received it."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stream: str = ""
    stream_seq: int = 0
    delivered: int = 1

    def decoded(self) -> Any:
        """The payload: JSON when it parses, else its text."""
        text = self.data.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Outcome:
    status: str  # started | duplicate | failed
    execution_id: int | None
    key: str
    error: str | None = None


class Intake:
    """Takes the messages of one subscription."""

    def __init__(self, control: ControlPlane, record: SubscriptionRecord) -> None:
        self.control = control
        self.store = control.store
        self.record = record
        self.spec: SubscriptionSpec = subscription_spec(record.spec)

    def key_of(self, delivery: Delivery) -> str:
        spec = self.spec
        if spec.dedup_field:
            value = _dig(delivery.decoded(), spec.dedup_field)
            if value is not None and value != "":
                return str(value)
        header = next(
            (v for k, v in delivery.headers.items() if k.lower() == spec.dedup_header.lower()), None
        )
        if header:
            return header
        return f"seq:{delivery.stream}:{delivery.stream_seq}"

    def workload(self, delivery: Delivery, key: str) -> dict[str, Any]:
        data = delivery.decoded()
        if self.spec.workload is None:
            return {"message": data}
        message = {
            "data": data,
            "subject": delivery.subject,
            "headers": dict(delivery.headers),
            "id": key,
            "seq": delivery.stream_seq,
        }
        rendered = render_value(self.spec.workload, {"message": message})
        if not isinstance(rendered, dict):  # pragma: no cover - a mapping renders to a mapping
            raise ValidationFailed("workload: the mapping must render to a JSON object")
        return rendered

    def take(self, delivery: Delivery) -> Outcome:
        """Start the message's run, or record it as a duplicate; `failed` when it can never run
        (no such playbook, a workload template that fails). Store errors propagate: the caller
        leaves the message unacknowledged, so it comes again."""
        key = self.key_of(delivery)
        sub_id = self.record.subscription_id
        with self.store.trigger_lock(f"message:{sub_id}:{key}"):
            candidate = self.control.ids()
            holder = self.store.claim_message(sub_id, key, self.spec.dedup_window, candidate)
            if holder != candidate and recorded(self.control, holder):
                self._audit(DEDUPLICATED, "DEDUPLICATED", delivery, key, original_execution_id=str(holder))
                return Outcome("duplicate", holder, key)
            try:
                launch(
                    self.control,
                    self.record.path,
                    self.workload(delivery, key),
                    execution_id=holder,
                    metadata=self._metadata(delivery, key),
                    execution_pool=self.spec.execution_pool,
                )
            except (NotFound, ValidationFailed, TemplateError) as exc:
                self._audit(FAILED, "FAILED", delivery, key, error=str(exc))
                return Outcome("failed", None, key, str(exc))
        return Outcome("started", holder, key)

    def _metadata(self, delivery: Delivery, key: str) -> dict[str, Any]:
        return {
            "trigger": "subscription",
            "subscription_id": str(self.record.subscription_id),
            "subscription": self.record.name,
            "message_id": key,
            "subject": delivery.subject,
            "stream_seq": delivery.stream_seq,
        }

    def _audit(self, event_type: str, status: str, delivery: Delivery, key: str, **context: Any) -> None:
        event = Event(
            event_id=self.control.ids(),
            execution_id=self.record.subscription_id,
            event_type=event_type,
            node_id="subscription",
            node_name=self.record.name,
            node_type="subscription",
            status=status,
            result={
                "status": status,
                "context": {
                    "dedup_key": key,
                    "subject": delivery.subject,
                    "stream": delivery.stream,
                    "stream_seq": delivery.stream_seq,
                    "delivered": delivery.delivered,
                    **context,
                },
            },
            meta={"emitter": "subscription", "subscription_id": str(self.record.subscription_id)},
        )
        self.store.append([event])


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
