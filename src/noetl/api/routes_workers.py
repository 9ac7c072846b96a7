"""`/api/worker/*`: worker pool registration, heartbeats and listing (upstream §1.7).

Registrations live in the store, shared by every server on it. A heartbeat also renews the
leases of the commands the worker holds; deregistering releases them, so they are issued again
at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from noetl.api.common import iso, json_object, optional_str, required_str
from noetl.engine.events import utcnow
from noetl.errors import NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.runtime.nodes import NODE_TTL_SECONDS
from noetl.store.ports import Store, WorkerRecord

JsonBody = Annotated[Any, Body()]
KINDS = ("worker_pool", "server_api", "broker")


class RuntimeRegistry:
    """Worker (and server) registrations, kept in the store's shared registry: every server on the
    store sees a worker's heartbeats, which is what a claim's lease is checked against."""

    def __init__(self, store: Store, ids: Callable[[], int], clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._ids = ids
        self._clock = clock

    def register(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        name = required_str(doc, "name")
        kind = _kind(doc)
        info = {
            "uri": optional_str(doc, "uri"),
            "labels": _object(doc, "labels"),
            "capabilities": doc.get("capabilities"),
            "capacity": doc.get("capacity"),
            "runtime": doc.get("runtime"),  # upstream sends an object, some workers a plain string
            "hostname": optional_str(doc, "hostname"),
        }
        known = {(w.kind, w.name): w for w in self._store.workers(kind)}.get((kind, name))
        info["runtime_id"] = (known.info.get("runtime_id") if known else None) or self._ids()
        # The worker's snowflake node: its event ids never collide with another process's.
        info["node_id"] = self._store.lease_node(node_owner(kind, name), NODE_TTL_SECONDS)
        record = self._store.upsert_worker(
            WorkerRecord(
                name=name,
                kind=kind,
                status=optional_str(doc, "status") or "active",
                heartbeat=self._clock(),
                info=info,
            )
        )
        return _row(record)

    def heartbeat(self, doc: Mapping[str, Any]) -> None:
        name = required_str(doc, "name")
        kind = _kind(doc)
        if not self._store.touch_worker(name, kind):
            raise NotFound(f"Runtime '{name}' ({kind}) is not registered")
        self._store.lease_node(node_owner(kind, name), NODE_TTL_SECONDS)  # renewed while it lives

    def deregister(self, doc: Mapping[str, Any]) -> bool:
        name, kind = required_str(doc, "name"), _kind(doc)
        self._store.release_node(node_owner(kind, name))
        return self._store.remove_worker(name, kind)

    def rows(
        self, kind: str | None = None, status: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        return sorted(
            (
                _row(record)
                for record in self._store.workers(kind)
                if (status is None or record.status == status)
                and (name is None or name.lower() in record.name.lower())
            ),
            key=lambda row: (row["kind"], row["name"]),
        )


def node_owner(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def _row(record: WorkerRecord) -> dict[str, Any]:
    info = record.info
    created = iso(record.created_at) if record.created_at else iso(record.heartbeat)
    return {
        "runtime_id": info.get("runtime_id"),
        "node_id": info.get("node_id"),
        "name": record.name,
        "kind": record.kind,
        "component_type": record.kind,
        "uri": info.get("uri"),
        "status": record.status,
        "labels": info.get("labels"),
        "capabilities": info.get("capabilities"),
        "capacity": info.get("capacity"),
        "runtime": info.get("runtime"),
        "hostname": info.get("hostname"),
        "heartbeat": iso(record.heartbeat),
        "created_at": created,
        "updated_at": iso(record.heartbeat),
    }


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


def router(registry: RuntimeRegistry, control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/worker", tags=["workers"])

    @api.post("/pool/register")
    def register(body: JsonBody = None) -> dict[str, Any]:
        """Register (or refresh) a worker pool; answers the runtime row."""
        return registry.register(json_object(body))

    @api.post("/pool/heartbeat")
    def heartbeat(body: JsonBody = None) -> dict[str, Any]:
        """Record a heartbeat and renew the worker's command leases; 404 when the pool is not
        registered (after a server restart: it must register again; its leases are still renewed)."""
        doc = json_object(body)
        raw_ids = doc.get("command_ids")
        command_ids = [str(c) for c in raw_ids] if isinstance(raw_ids, list) else None
        control.heartbeat(required_str(doc, "name"), command_ids)
        registry.heartbeat(doc)
        answer: dict[str, Any] = {"status": "ok", "message": "Heartbeat recorded"}
        if command_ids:
            # Commands of cancelled (or ended) executions: the worker stops running them.
            answer["stop"] = control.stopped_commands(command_ids)
        return answer

    def deregister(body: Any) -> dict[str, Any]:
        doc = json_object(body)
        removed = registry.deregister(doc)
        control.release_worker(required_str(doc, "name"))  # its unfinished commands are issued again
        message = "Runtime deregistered" if removed else "Runtime was not registered"
        return {"status": "ok", "message": message}

    @api.post("/pool/deregister")
    def deregister_post(body: JsonBody = None) -> dict[str, Any]:
        """Remove a registration (POST, as the Rust worker sends it)."""
        return deregister(body)

    @api.delete("/pool/deregister")
    def deregister_delete(body: JsonBody = None) -> dict[str, Any]:
        """Remove a registration (DELETE, as the Rust server routes it)."""
        return deregister(body)

    @api.get("/pools")
    def pools(
        kind: Annotated[
            str | None, Query(description="worker_pool (default), server_api or broker")
        ] = "worker_pool",
        status: str | None = None,
        name: Annotated[str | None, Query(description="Substring of the name")] = None,
    ) -> list[dict[str, Any]]:
        """Registered runtimes."""
        return registry.rows(kind or None, status, name)

    return api
