"""`/api/execute` and `/api/execute/batch` (the seed's execute API, upstream §1.3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from noetl.api.common import json_object, raw_json
from noetl.api.wire import execute_batch as start_batch
from noetl.api.wire import execute_request
from noetl.runtime.control import ControlPlane

JsonBody = Annotated[Any, Body()]


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/execute", tags=["execute"])

    @api.post("")
    def execute(body: JsonBody = None) -> dict[str, Any]:
        """Start an execution of a catalog playbook (`path` or `catalog_id`)."""
        request = execute_request(raw_json(body))
        return control.execute(request).to_json()

    @api.post("/batch")
    def execute_batch(body: JsonBody = None) -> dict[str, Any]:
        """Start up to 1000 executions; each item succeeds or fails on its own."""
        doc = json_object(body)
        return start_batch(control, doc.get("executions"))

    return api
