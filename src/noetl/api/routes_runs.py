"""`/api/runs/*` and `/api/activity`: run history for people (the web UI, `noetl runs`, `noetl
logs`): pages of runs filtered by status, playbook and start time; one run's steps, attempts,
loops, graph and children; its logs; the live pools and workers with what they run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from noetl.errors import ValidationFailed
from noetl.observability import history
from noetl.observability.activity import activity_view
from noetl.runtime.control import ControlPlane
from noetl.secrets import mask_for


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (a date alone is midnight UTC); naive times are UTC."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"'{name}' is not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def router(control: ControlPlane) -> APIRouter:
    api = APIRouter(tags=["runs"])
    store = control.store
    parse = control.orchestrator.engines.playbook

    @api.get("/api/runs")
    def list_runs(
        status: str | None = None,
        playbook: Annotated[str | None, Query(description="A playbook path")] = None,
        since: Annotated[str | None, Query(description="Started at or after (ISO 8601)")] = None,
        until: Annotated[str | None, Query(description="Started before (ISO 8601)")] = None,
        parent_execution_id: int | None = None,
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
            offset=offset,
        )
        return history.list_runs(store, query, now=datetime.now(UTC))

    @api.get("/api/runs/{execution_id}")
    def run(execution_id: int) -> dict[str, Any]:
        """One run: steps with attempts, results, stdout/stderr and errors; loop progress;
        the playbook's graph coloured by state; child runs; the event timeline."""
        return mask_for(execution_id, history.run_view(store, execution_id, parse=parse))

    @api.get("/api/runs/{execution_id}/logs")
    def logs(execution_id: int, step: str | None = None) -> dict[str, Any]:
        """Every attempt of the run's steps (or of one step): stdout, stderr, errors, timing."""
        return mask_for(execution_id, history.logs(store, execution_id, step))

    @api.get("/api/runs/{execution_id}/steps/{step}/iterations")
    def iterations(
        execution_id: int,
        step: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=history.MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """A page of a loop step's iterations, in index order."""
        page = history.iterations(store, execution_id, step, offset=offset, limit=limit)
        return mask_for(execution_id, page)

    @api.get("/api/activity")
    def activity() -> dict[str, Any]:
        """Live now: commands waiting per pool, workers heard from within a lease (capacity,
        free slots) and the commands each is running."""
        return activity_view(control)

    return api


__all__ = ["parse_time", "router"]
