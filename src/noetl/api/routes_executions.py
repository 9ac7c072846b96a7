"""`/api/executions/*`: list, detail, status, events, cancel (upstream §1.6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from noetl.api.common import iso
from noetl.api.models import (
    CancelBody,
    Cancelled,
    Events,
    ExecutionDetail,
    ExecutionOut,
    ExecutionStatus,
)
from noetl.api.routing import BODY_ERRORS, api_router, errors, in_range
from noetl.api.types import MAX_ID, Text
from noetl.api.wire import event_json
from noetl.engine import events as ev
from noetl.errors import NotFound
from noetl.runtime.control import ControlPlane
from noetl.store.ports import ExecutionSummary

MAX_LIMIT = 1000
ExecutionId = Annotated[int, Path(ge=0, description="The execution's id (int64).")]


def known(execution_id: int) -> int:
    return in_range(execution_id, f"execution {execution_id} not found")


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def summary_json(summary: ExecutionSummary) -> dict[str, Any]:
    return {
        "execution_id": str(summary.execution_id),
        "catalog_id": _id(summary.catalog_id),
        "path": summary.path,
        "status": summary.status,
        "started_at": iso(summary.started_at),
        "completed_at": iso(summary.completed_at),
        "parent_execution_id": _id(summary.parent_execution_id),
    }


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api/executions", "executions")
    store = control.store

    @api.get("", response_model=list[ExecutionOut], responses=errors(422))
    def list_executions(
        status: Text | None = None,
        parent_execution_id: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, description=f"At most {MAX_LIMIT} rows.")] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Executions, newest first."""
        if parent_execution_id is not None and parent_execution_id > MAX_ID:
            return []
        rows = store.executions(
            status=status.upper() if status else None,
            parent_execution_id=parent_execution_id,
            limit=min(limit, MAX_LIMIT),
            offset=min(offset, MAX_ID),
        )
        return [summary_json(row) for row in rows]

    @api.get("/{execution_id}", response_model=ExecutionDetail, responses=errors(404, 422))
    def get_execution(execution_id: ExecutionId) -> dict[str, Any]:
        """One execution with its workload and its events, oldest first."""
        known(execution_id)
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
            "events": [event_json(event) for event in events],
        }

    @api.get("/{execution_id}/status", response_model=ExecutionStatus, responses=errors(404, 422))
    def get_status(execution_id: ExecutionId) -> dict[str, Any]:
        """Status derived from the execution's engine (rebuilt from the log when needed); the
        result and each step's outcome once it has ended."""
        known(execution_id)
        view = control.status(execution_id)
        return {**view, "execution_id": str(view["execution_id"])}

    @api.get("/{execution_id}/events", response_model=Events, responses=errors(404, 422))
    def get_events(execution_id: ExecutionId) -> dict[str, Any]:
        """The event log of one execution, oldest first."""
        known(execution_id)
        events = store.read(execution_id)
        if not events and store.execution(execution_id) is None:
            raise NotFound(f"execution {execution_id} not found")
        return {"events": [event_json(event) for event in events]}

    @api.post("/{execution_id}/cancel", response_model=Cancelled, responses=errors(404, *BODY_ERRORS))
    def cancel(execution_id: ExecutionId, body: CancelBody | None = None) -> dict[str, Any]:
        """Cancel a running execution (and, unless `cascade: false`, its children); 422 when it
        has ended. The body is optional."""
        known(execution_id)
        doc = body or CancelBody()
        answer = control.cancel(
            execution_id, cascade=doc.cascade, reason=doc.reason or "cancelled by request"
        )
        return {**answer, "execution_id": str(answer["execution_id"])}

    return api
