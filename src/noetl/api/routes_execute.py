"""`/api/execute` and `/api/execute/batch` (the seed's execute API, upstream §1.3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from noetl.api.auth import principal_of
from noetl.api.models import BatchStarted, ExecuteBatchBody, ExecuteBody, Started
from noetl.api.routing import BODY_ERRORS, api_router, errors
from noetl.api.wire import check_child, execute_batch, execute_request
from noetl.runtime.control import ControlPlane
from noetl.tokens import ADMIN


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api/execute", "execute")

    @api.post("", response_model=Started, responses=errors(404, *BODY_ERRORS))
    def execute(request: Request, body: ExecuteBody) -> dict[str, Any]:
        """Start an execution of a catalog playbook (`path` or `catalog_id`). A worker token may
        start only the child of a command it runs (a pipeline's playbook task)."""
        principal = principal_of(request.state)
        if principal is None or not principal.may(ADMIN):
            check_child(control, body)
        return control.execute(execute_request(body)).to_json()

    @api.post("/batch", response_model=BatchStarted, responses=errors(*BODY_ERRORS))
    def start_batch(body: ExecuteBatchBody) -> dict[str, Any]:
        """Start up to 1000 executions; each item succeeds or fails on its own."""
        return execute_batch(control, body.executions)

    return api
