"""`/api/worker/*`: worker pool registration, heartbeats and listing (upstream §1.7).

Registrations live in memory: they describe live processes, which re-register after a server
restart, so nothing needs to survive one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from noetl.api.common import iso, json_object, optional_str, required_str
from noetl.engine.events import utcnow
from noetl.errors import NotFound, ValidationFailed

JsonBody = Annotated[Any, Body()]
KINDS = ("worker_pool", "server_api", "broker")


class RuntimeRegistry:
    """Thread-safe `(kind, name) -> runtime row` map."""

    def __init__(self, ids: Callable[[], int], clock: Callable[[], datetime] = utcnow) -> None:
        self._ids = ids
        self._clock = clock
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        name = required_str(doc, "name")
        kind = _kind(doc)
        now = iso(self._clock())
        row_values = {
            "uri": optional_str(doc, "uri"),
            "status": optional_str(doc, "status") or "active",
            "labels": _object(doc, "labels"),
            "capabilities": doc.get("capabilities"),
            "capacity": doc.get("capacity"),
            "runtime": doc.get("runtime"),  # upstream sends an object, some workers a plain string
            "hostname": optional_str(doc, "hostname"),
        }
        with self._lock:
            current = self._rows.get((kind, name))
            if current is None:
                current = {"runtime_id": self._ids(), "name": name, "kind": kind, "created_at": now}
            row = {**current, **row_values, "component_type": kind, "heartbeat": now, "updated_at": now}
            self._rows[(kind, name)] = row
            return dict(row)

    def heartbeat(self, doc: Mapping[str, Any]) -> None:
        name = required_str(doc, "name")
        kind = _kind(doc)
        now = iso(self._clock())
        with self._lock:
            row = self._rows.get((kind, name))
            if row is None:
                raise NotFound(f"Runtime '{name}' ({kind}) is not registered")
            row["heartbeat"] = now
            row["updated_at"] = now

    def deregister(self, doc: Mapping[str, Any]) -> bool:
        name = required_str(doc, "name")
        kind = _kind(doc)
        with self._lock:
            return self._rows.pop((kind, name), None) is not None

    def rows(self, kind: str | None = None, status: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [dict(row) for row in self._rows.values()]
        return sorted(
            (
                row
                for row in found
                if (kind is None or row["kind"] == kind)
                and (status is None or row["status"] == status)
                and (name is None or name.lower() in row["name"].lower())
            ),
            key=lambda row: (row["kind"], row["name"]),
        )


def _kind(doc: Mapping[str, Any]) -> str:
    kind = doc.get("kind") or doc.get("component_type") or "worker_pool"
    if kind not in KINDS:
        raise ValidationFailed(f"Invalid component type {kind!r}: use one of {', '.join(KINDS)}")
    return str(kind)


def _object(doc: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationFailed(f"'{key}' must be a JSON object")
    return dict(value)


def router(registry: RuntimeRegistry) -> APIRouter:
    api = APIRouter(prefix="/api/worker", tags=["workers"])

    @api.post("/pool/register")
    def register(body: JsonBody = None) -> dict[str, Any]:
        """Register (or refresh) a worker pool; answers the runtime row."""
        return registry.register(json_object(body))

    @api.post("/pool/heartbeat")
    def heartbeat(body: JsonBody = None) -> dict[str, Any]:
        """Record a heartbeat; 404 when the pool never registered (it must register again)."""
        registry.heartbeat(json_object(body))
        return {"status": "ok", "message": "Heartbeat recorded"}

    @api.api_route("/pool/deregister", methods=["POST", "DELETE"])
    def deregister(body: JsonBody = None) -> dict[str, Any]:
        """Remove a registration (POST as the Rust worker sends it, DELETE as the Rust server routes it)."""
        doc = json_object(body)
        removed = registry.deregister(doc)
        message = "Runtime deregistered" if removed else "Runtime was not registered"
        return {"status": "ok", "message": message}

    @api.get("/pools")
    def pools(
        kind: Annotated[str | None, Query(description="worker_pool (default), server_api or broker")] = "worker_pool",
        status: str | None = None,
        name: Annotated[str | None, Query(description="Substring of the name")] = None,
    ) -> list[dict[str, Any]]:
        """Registered runtimes."""
        return registry.rows(kind or None, status, name)

    return api
