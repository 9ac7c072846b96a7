"""The HTTP calls of `noetl schedule ...` and `noetl subscription ...` (`/api/schedules`,
`/api/subscriptions`), on the server client the other remote commands use."""

from __future__ import annotations

from typing import Any

from noetl.client import ServerClient


class TriggerClient(ServerClient):
    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", f"/api/{kind}", json=body, idempotent=False)

    def items(self, kind: str) -> list[dict[str, Any]]:
        rows = self._object("GET", f"/api/{kind}").get("items")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def one(self, kind: str, item_id: str) -> dict[str, Any]:
        return self._object("GET", f"/api/{kind}/{item_id}")

    def change(self, kind: str, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", f"/api/{kind}/{item_id}", json=body)

    def remove(self, kind: str, item_id: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/{kind}/{item_id}", idempotent=False)

    def action(self, kind: str, item_id: str, action: str) -> dict[str, Any]:
        return self._object("POST", f"/api/{kind}/{item_id}/{action}", idempotent=False)

    def listing(self, kind: str, item_id: str, what: str, **params: Any) -> dict[str, Any]:
        return self._object("GET", f"/api/{kind}/{item_id}/{what}", params=params or None)

    def resolve(self, kind: str, ref: str) -> str:
        """The id of `ref`: an id as it is, else the item of that name (NotFound)."""
        if ref.isdigit():
            return ref
        from noetl.errors import NotFound

        for item in self.items(kind):
            if item.get("name") == ref:
                return str(item.get("schedule_id") or item.get("subscription_id"))
        raise NotFound(f"no {kind[:-1]} named {ref!r}")
