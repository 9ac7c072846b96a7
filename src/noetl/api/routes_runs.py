"""`/api/runs/*` and `/api/activity`: run history for people (the web UI, `noetl runs`, `noetl
logs`): pages of runs filtered by status, playbook and start time; one run's steps, attempts,
loops, graph and children; its logs; the live pools and workers with what they run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from noetl.api.models_runs import Activity, IterationPage, RunLogs, RunPage, RunView
from noetl.api.routing import api_router, errors, in_range
from noetl.api.types import MAX_ID, Text
from noetl.errors import ValidationFailed
from noetl.observability import history
from noetl.observability.activity import activity_view
from noetl.runtime.control import ControlPlane
from noetl.secrets import mask_for

ExecutionId = Annotated[int, Path(ge=0, description="The run's execution id (int64).")]
StepName = Annotated[Text, Path(description="The step's name.")]


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (a date alone is midnight UTC); naive times are UTC."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed(f"'{name}' is not an ISO 8601 time: {value!r}") from None


def known(execution_id: int) -> int:
    return in_range(execution_id, f"execution {execution_id} not found")


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api", "runs")
    store = control.store
    parse = control.orchestrator.engines.playbook

    @api.get("/runs", response_model=RunPage, responses=errors(422))
    def list_runs(
        status: Text | None = None,
        playbook: Annotated[Text | None, Query(description="A playbook path")] = None,
        since: Annotated[Text | None, Query(description="Started at or after (ISO 8601)")] = None,
        until: Annotated[Text | None, Query(description="Started before (ISO 8601)")] = None,
        parent_execution_id: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=history.MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Runs newest first, one page at a time (`has_more` says whether another follows)."""
        query = history.RunQuery(
            status=status,
            playbook=playbook,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            parent_execution_id=parent_execution_id,
            limit=limit,
            offset=min(offset, MAX_ID),
        )
        if parent_execution_id is not None and parent_execution_id > MAX_ID:
            return {"runs": [], "limit": limit, "offset": query.offset, "has_more": False}
        return history.list_runs(store, query, now=datetime.now(UTC))

    @api.get("/runs/{execution_id}", response_model=RunView, responses=errors(404, 422))
    def run(execution_id: ExecutionId) -> dict[str, Any]:
        """One run: steps with attempts, results, stdout/stderr and errors; loop progress;
        the playbook's graph coloured by state; child runs; the event timeline."""
        known(execution_id)
        return mask_for(execution_id, history.run_view(store, execution_id, parse=parse))

    @api.get("/runs/{execution_id}/logs", response_model=RunLogs, responses=errors(404, 422))
    def logs(execution_id: ExecutionId, step: Text | None = None) -> dict[str, Any]:
        """Every attempt of the run's steps (or of one step): stdout, stderr, errors, timing."""
        known(execution_id)
        return mask_for(execution_id, history.logs(store, execution_id, step))

    @api.get(
        "/runs/{execution_id}/steps/{step}/iterations",
        response_model=IterationPage,
        responses=errors(404, 422),
    )
    def iterations(
        execution_id: ExecutionId,
        step: StepName,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=history.MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """A page of a loop step's iterations, in index order."""
        known(execution_id)
        page = history.iterations(store, execution_id, step, offset=offset, limit=limit)
        return mask_for(execution_id, page)

    @api.get("/activity", response_model=Activity, responses=errors())
    def activity() -> dict[str, Any]:
        """Live now: commands waiting per pool, workers heard from within a lease (capacity,
        free slots) and the commands each is running."""
        return activity_view(control)

    return api


__all__ = ["parse_time", "router"]
