"""`/api/executions/*`: list, detail, status, events, cancel (upstream §1.6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from noetl.api.common import iso, json_object
from noetl.engine import events as ev
from noetl.errors import NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.ports import ExecutionSummary

JsonBody = Annotated[Any, Body()]
MAX_LIMIT = 1000


def summary_json(summary: ExecutionSummary) -> dict[str, Any]:
    return {
        "execution_id": summary.execution_id,
        "catalog_id": summary.catalog_id,
        "path": summary.path,
        "status": summary.status,
        "started_at": iso(summary.started_at),
        "completed_at": iso(summary.completed_at),
        "parent_execution_id": summary.parent_execution_id,
    }


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/executions", tags=["executions"])
    store = control.store

    @api.get("")
    def list_executions(
        status: str | None = None,
        parent_execution_id: int | None = None,
        limit: Annotated[int, Query(ge=1)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Executions, newest first."""
        rows = store.executions(
            status=status.upper() if status else None,
            parent_execution_id=parent_execution_id,
            limit=min(limit, MAX_LIMIT),
            offset=offset,
        )
        return [summary_json(row) for row in rows]

    @api.get("/{execution_id}")
    def get_execution(execution_id: int) -> dict[str, Any]:
        """One execution with its workload and its events, oldest first."""
        summary = store.execution(execution_id)
        if summary is None:
            raise NotFound(f"execution {execution_id} not found")
        events = store.read(execution_id)
        workload: Any = None
        for event in events:
            if event.event_type == ev.PLAYBOOK_STARTED:
                workload = (event.context or {}).get("workload")
                break
        return {
            **summary_json(summary),
            "error": summary.error,
            "workload": workload,
            "events": [event.to_dict() for event in events],
        }

    @api.get("/{execution_id}/status")
    def get_status(execution_id: int) -> dict[str, Any]:
        """Status derived from the execution's engine (rebuilt from the log when needed)."""
        return control.status(execution_id)

    @api.get("/{execution_id}/events")
    def get_events(execution_id: int) -> dict[str, Any]:
        """The event log of one execution, oldest first."""
        events = store.read(execution_id)
        if not events and store.execution(execution_id) is None:
            raise NotFound(f"execution {execution_id} not found")
        return {"events": [event.to_dict() for event in events]}

    @api.post("/{execution_id}/cancel")
    def cancel(execution_id: int, body: JsonBody = None) -> dict[str, Any]:
        """Cancel a running execution (and, unless `cascade: false`, its children)."""
        doc = json_object(body, required=False)
        reason = doc.get("reason")
        cascade = doc.get("cascade", True)
        if not isinstance(cascade, bool):
            raise ValidationFailed("'cascade' must be a boolean")
        text = str(reason) if reason not in (None, "") else "cancelled by request"
        return control.cancel(execution_id, cascade=cascade, reason=text)

    return api
