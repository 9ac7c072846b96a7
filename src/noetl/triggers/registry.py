"""Subscriptions as the API changes them. A change reaches every server's `SubscriptionManager`
within its refresh interval (a changed subscription's consumers are restarted)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from noetl.engine.events import Event
from noetl.errors import Conflict, NotFound
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import SubscriptionRecord
from noetl.triggers.specs import subscription_spec


class Subscriptions:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.store = control.store

    def get(self, subscription_id: int) -> SubscriptionRecord:
        record = self.store.get_subscription(subscription_id)
        if record is None:
            raise NotFound(f"subscription {subscription_id} not found")
        return record

    def create(
        self, name: str, path: str, spec: Mapping[str, Any], *, enabled: bool = True
    ) -> SubscriptionRecord:
        if any(s.name == name for s in self.store.subscriptions()):
            raise Conflict(f"a subscription named {name!r} exists already")
        checked = subscription_spec(spec).to_json()
        record = SubscriptionRecord(self.control.ids(), name, path, checked, enabled)
        return self.store.put_subscription(record)

    def update(self, subscription_id: int, changes: Mapping[str, Any]) -> SubscriptionRecord:
        record = self.get(subscription_id)
        spec_changes = {k: v for k, v in changes.items() if k not in ("name", "path", "enabled")}
        merged = {k: v for k, v in {**record.spec, **spec_changes}.items() if v is not None}
        name = changes.get("name") or record.name
        if name != record.name and any(s.name == name for s in self.store.subscriptions()):
            raise Conflict(f"a subscription named {name!r} exists already")
        enabled = bool(changes["enabled"]) if changes.get("enabled") is not None else record.enabled
        updated = replace(
            record,
            name=name,
            path=changes.get("path") or record.path,
            spec=subscription_spec(merged).to_json(),
            enabled=enabled,
        )
        return self.store.put_subscription(updated)

    def delete(self, subscription_id: int) -> None:
        if not self.store.delete_subscription(subscription_id):
            raise NotFound(f"subscription {subscription_id} not found")

    def events(self, subscription_id: int, limit: int = 100) -> list[Event]:
        """The subscription's own log (its `subscription.message.*` audit events), newest last."""
        self.get(subscription_id)
        return self.store.read(subscription_id)[-limit:]
