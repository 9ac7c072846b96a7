"""What is live now on a control plane: commands waiting per pool, and the workers heard from
within a lease with their capacity, free slots and the commands each is running (from the
leases of the claims made through this server)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from noetl.observability.runview import iso

if TYPE_CHECKING:
    from noetl.runtime.control import ControlPlane


def activity_view(control: ControlPlane) -> dict[str, Any]:
    waiting = Counter(str((e.meta or {}).get("pool") or "shared") for e in control.offers.all())
    running: dict[str, list[dict[str, Any]]] = {}
    for command_id, lease in sorted(control.leases.held().items()):
        running.setdefault(lease.worker_id, []).append(
            {"command_id": command_id, "execution_id": str(lease.execution_id), "step": _step(command_id)}
        )
    workers = []
    for record in control.live_workers():
        capacity = record.info.get("capacity")
        held = running.pop(record.name, [])
        workers.append(
            {
                "name": record.name,
                "kind": record.kind,
                "status": record.status,
                "pools": _pools(record.info.get("labels")),
                "hostname": record.info.get("hostname"),
                "capacity": capacity,
                "free_slots": max(0, capacity - len(held)) if isinstance(capacity, int) else None,
                "heartbeat": iso(record.heartbeat),
                "running": held,
            }
        )
    for name, held in sorted(running.items()):  # in-process workers hold leases without registering
        workers.append({"name": name, "kind": "in_process", "status": "active", "pools": [], "running": held})
    return {"pools": [{"pool": p, "waiting": n} for p, n in sorted(waiting.items())], "workers": workers}


def _pools(labels: Any) -> list[str]:
    text = labels.get("pools") if isinstance(labels, dict) else None
    return [p for p in str(text).split(",") if p] if text else ["shared"]


def _step(command_id: str) -> str | None:
    parts = command_id.split(":")
    return parts[1] if len(parts) > 2 else None


__all__ = ["activity_view"]
