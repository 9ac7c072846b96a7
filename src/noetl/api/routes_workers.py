"""`/api/worker/*`: worker pool registration, heartbeats and listing (upstream §1.7).

Registrations live in the store, shared by every server on it. A heartbeat also renews the
leases of the commands the worker holds; deregistering releases them, so they are issued again
at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from noetl.api.common import iso
from noetl.api.models import Heartbeat, HeartbeatAck, Message, RegisterRuntime, RuntimeBody, RuntimeOut
from noetl.api.routing import BODY_ERRORS, api_router, errors
from noetl.api.types import Text
from noetl.engine.events import utcnow
from noetl.errors import NotFound
from noetl.runtime.control import ControlPlane
from noetl.runtime.nodes import NODE_TTL_SECONDS
from noetl.store.ports import Store, WorkerRecord


class RuntimeRegistry:
    """Worker (and server) registrations, kept in the store's shared registry: every server on the
    store sees a worker's heartbeats, which is what a claim's lease is checked against."""

    def __init__(self, store: Store, ids: Callable[[], int], clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._ids = ids
        self._clock = clock

    def register(self, doc: RegisterRuntime) -> dict[str, Any]:
        kind = doc.runtime_kind
        info = {
            "uri": doc.uri,
            "labels": doc.labels,
            "capabilities": doc.capabilities,
            "capacity": doc.capacity,
            "runtime": doc.runtime,  # upstream sends an object, some workers a plain string
            "hostname": doc.hostname,
        }
        known = {(w.kind, w.name): w for w in self._store.workers(kind)}.get((kind, doc.name))
        info["runtime_id"] = (known.info.get("runtime_id") if known else None) or self._ids()
        # The worker's snowflake node: its event ids never collide with another process's.
        info["node_id"] = self._store.lease_node(node_owner(kind, doc.name), NODE_TTL_SECONDS)
        record = self._store.upsert_worker(
            WorkerRecord(
                name=doc.name,
                kind=kind,
                status=doc.status or "active",
                heartbeat=self._clock(),
                info=info,
            )
        )
        return _row(record)

    def heartbeat(self, doc: RuntimeBody) -> None:
        kind = doc.runtime_kind
        if not self._store.touch_worker(doc.name, kind):
            raise NotFound(f"Runtime '{doc.name}' ({kind}) is not registered")
        self._store.lease_node(node_owner(kind, doc.name), NODE_TTL_SECONDS)  # renewed while it lives

    def deregister(self, doc: RuntimeBody) -> bool:
        kind = doc.runtime_kind
        self._store.release_node(node_owner(kind, doc.name))
        return self._store.remove_worker(doc.name, kind)

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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _row(record: WorkerRecord) -> dict[str, Any]:
    info = record.info
    created = iso(record.created_at) if record.created_at else iso(record.heartbeat)
    labels = info.get("labels")
    return {
        "runtime_id": _text(info.get("runtime_id")),
        "node_id": _text(info.get("node_id")),
        "name": record.name,
        "kind": record.kind,
        "component_type": record.kind,
        "uri": _text(info.get("uri")),
        "status": record.status,
        "labels": labels if isinstance(labels, dict) else None,
        "capabilities": info.get("capabilities"),
        "capacity": info.get("capacity"),
        "runtime": info.get("runtime"),
        "hostname": _text(info.get("hostname")),
        "heartbeat": iso(record.heartbeat),
        "created_at": created,
        "updated_at": iso(record.heartbeat),
    }


def router(registry: RuntimeRegistry, control: ControlPlane) -> APIRouter:
    api = api_router("/api/worker", "workers")

    @api.post("/pool/register", response_model=RuntimeOut, responses=errors(*BODY_ERRORS))
    def register(body: RegisterRuntime) -> dict[str, Any]:
        """Register (or refresh) a worker pool; answers the runtime row."""
        return registry.register(body)

    @api.post("/pool/heartbeat", response_model=HeartbeatAck, responses=errors(404, *BODY_ERRORS))
    def heartbeat(body: Heartbeat) -> dict[str, Any]:
        """Record a heartbeat and renew the worker's command leases; 404 when the pool is not
        registered (after a server restart: it must register again; its leases are still renewed)."""
        command_ids = body.command_ids
        control.heartbeat(body.name, command_ids)
        registry.heartbeat(body)
        answer: dict[str, Any] = {"status": "ok", "message": "Heartbeat recorded"}
        if command_ids:
            # Commands of cancelled (or ended) executions: the worker stops running them.
            answer["stop"] = control.stopped_commands(command_ids)
        return answer

    def deregister(body: RuntimeBody) -> dict[str, Any]:
        removed = registry.deregister(body)
        control.release_worker(body.name)  # its unfinished commands are issued again
        message = "Runtime deregistered" if removed else "Runtime was not registered"
        return {"status": "ok", "message": message}

    @api.post("/pool/deregister", response_model=Message, responses=errors(*BODY_ERRORS))
    def deregister_post(body: RuntimeBody) -> dict[str, Any]:
        """Remove a registration (POST, as the Rust worker sends it)."""
        return deregister(body)

    @api.delete("/pool/deregister", response_model=Message, responses=errors(*BODY_ERRORS))
    def deregister_delete(body: RuntimeBody) -> dict[str, Any]:
        """Remove a registration (DELETE, as the Rust server routes it)."""
        return deregister(body)

    @api.get("/pools", response_model=list[RuntimeOut], responses=errors(422))
    def pools(
        kind: Annotated[
            Literal["worker_pool", "server_api", "broker", ""] | None,
            Query(description="worker_pool (default), server_api or broker; empty for every kind"),
        ] = "worker_pool",
        status: Text | None = None,
        name: Annotated[Text | None, Query(description="Substring of the name")] = None,
    ) -> list[dict[str, Any]]:
        """Registered runtimes."""
        return registry.rows(kind or None, status, name)

    return api
