"""`/api/execute` and `/api/execute/batch` (the seed's execute API, upstream §1.3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from noetl.api.common import json_object, raw_json
from noetl.runtime.control import ControlPlane, ExecuteRequest

JsonBody = Annotated[Any, Body()]


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/execute", tags=["execute"])

    @api.post("")
    def execute(body: JsonBody = None) -> dict[str, Any]:
        """Start an execution of a catalog playbook (`path` or `catalog_id`)."""
        request = ExecuteRequest.from_json(raw_json(body))
        return control.execute(request).to_json()

    @api.post("/batch")
    def execute_batch(body: JsonBody = None) -> dict[str, Any]:
        """Start up to 1000 executions; each item succeeds or fails on its own."""
        doc = json_object(body)
        return control.execute_batch(doc.get("executions"))

    return api
