"""`/api/schedules`: cron and interval schedules (`noetl.triggers`).

    POST   /api/schedules                 create           GET /api/schedules           list
    GET    /api/schedules/{id}            one              PATCH /api/schedules/{id}    change
    DELETE /api/schedules/{id}            delete           POST /api/schedules/{id}/trigger  run now
    GET    /api/schedules/{id}/ticks      latest ticks (when, which execution, started/skipped/failed)

Every id in an answer is a string; times are ISO 8601 UTC (`...Z`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import ConfigDict, Field

from noetl.api.common import iso
from noetl.api.models import Answer, Request
from noetl.api.routing import BODY_ERRORS, api_router, errors, in_range
from noetl.api.types import IdText, Int, JsonObject, Name, OptionalIdText, ShortName, Text
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import ScheduleRecord, TickRecord
from noetl.triggers.schedules import Schedules
from noetl.triggers.specs import MAX_ACTIVE, schedule_spec
from noetl.triggers.timing import MAX_INTERVAL

Interval = Annotated[
    Text | Annotated[float, Field(ge=0.1, le=MAX_INTERVAL)] | None,
    Field(description="An interval: seconds, or '30s', '5m', '1h30m', '1d' (0.1 s to a year)"),
]
ScheduleId = Annotated[int, Path(ge=0, description="The schedule's id (int64).")]


class ScheduleFields(Request):
    """Unknown fields are refused (a misspelt field would silently change nothing)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cron: Text | None = Field(None, description="5 fields, or 6 with seconds first, or @daily etc.")
    every: Interval = None
    timezone: Text | None = Field(None, description="IANA time zone of the cron expression (default UTC)")
    payload: JsonObject | None = Field(None, description="The workload of each run")
    catchup: Literal["skip", "one", "all"] | None = Field(
        None, description="Ticks missed while no server ran"
    )
    max_active: Int | None = Field(
        None, ge=1, le=MAX_ACTIVE, description="Runs of this schedule allowed at once"
    )
    overlap: Literal["skip", "queue"] | None = Field(None, description="A tick at max_active: skip or queue")
    execution_pool: Text | None = None
    enabled: bool | None = None


class ScheduleCreate(ScheduleFields):
    name: ShortName
    path: Name = Field(description="Catalog path of the playbook (its latest version runs)")


class ScheduleUpdate(ScheduleFields):
    name: ShortName | None = None
    path: Name | None = None


class Tick(Answer):
    schedule_id: IdText
    tick_at: str
    execution_id: OptionalIdText
    status: str
    error: str | None = None


class Schedule(Answer):
    schedule_id: IdText
    name: str
    path: str
    cron: str | None
    every: float | None
    timezone: str
    payload: JsonObject
    catchup: str
    max_active: int | None
    overlap: str
    execution_pool: str | None
    enabled: bool
    source: str
    next_run_at: str | None
    last_tick: Tick | None
    created_at: str | None
    updated_at: str | None


class ScheduleList(Answer):
    items: list[Schedule]


class TickList(Answer):
    items: list[Tick]


class Deleted(Answer):
    schedule_id: IdText
    deleted: bool


def tick_json(tick: TickRecord) -> Tick:
    return Tick(
        schedule_id=str(tick.schedule_id),
        tick_at=iso(tick.tick_at) or "",
        execution_id=str(tick.execution_id) if tick.execution_id is not None else None,
        status=tick.status,
        error=tick.error,
    )


def schedule_json(record: ScheduleRecord, last: TickRecord | None) -> Schedule:
    spec = schedule_spec(record.spec)
    return Schedule(
        schedule_id=str(record.schedule_id),
        name=record.name,
        path=record.path,
        cron=spec.timing.cron,
        every=spec.timing.every,
        timezone=spec.timing.timezone,
        payload=spec.payload,
        catchup=spec.catchup,
        max_active=spec.max_active,
        overlap=spec.overlap,
        execution_pool=spec.execution_pool,
        enabled=record.enabled,
        source=record.source,
        next_run_at=iso(record.next_run_at) if record.enabled else None,
        last_tick=tick_json(last) if last is not None else None,
        created_at=iso(record.created_at),
        updated_at=iso(record.updated_at),
    )


def known(schedule_id: int) -> int:
    return in_range(schedule_id, f"schedule {schedule_id} not found")


def router(control: ControlPlane, schedules: Schedules | None = None) -> APIRouter:
    api = api_router("/api/schedules", "schedules")
    service = schedules or Schedules(control)
    store = control.store

    def view(record: ScheduleRecord) -> Schedule:
        last = store.ticks(record.schedule_id, limit=1)
        return schedule_json(record, last[0] if last else None)

    @api.post("", response_model=Schedule, responses=errors(409, *BODY_ERRORS))
    def create(body: ScheduleCreate) -> Schedule:
        """Create a schedule of a catalog playbook; 409 when the name is taken."""
        fields = body.model_dump(exclude={"name", "path", "enabled"}, exclude_none=True)
        spec = schedule_spec(fields)
        return view(service.create(body.name, body.path, spec, enabled=body.enabled is not False))

    @api.get("", response_model=ScheduleList, responses=errors())
    def list_schedules() -> ScheduleList:
        """Every schedule, by name, with its next run and its latest tick."""
        return ScheduleList(items=[view(record) for record in store.schedules()])

    @api.get("/{schedule_id}", response_model=Schedule, responses=errors(404, 422))
    def get(schedule_id: ScheduleId) -> Schedule:
        """One schedule, with its next run and its latest tick."""
        return view(service.get(known(schedule_id)))

    @api.patch("/{schedule_id}", response_model=Schedule, responses=errors(404, 409, *BODY_ERRORS))
    def update(schedule_id: ScheduleId, body: ScheduleUpdate) -> Schedule:
        """Change fields (`null` clears max_active, execution_pool); `enabled` pauses or resumes."""
        return view(service.update(known(schedule_id), body.model_dump(exclude_unset=True)))

    @api.delete("/{schedule_id}", response_model=Deleted, responses=errors(404, 422))
    def delete(schedule_id: ScheduleId) -> Deleted:
        """Delete a schedule (its past runs stay)."""
        service.delete(known(schedule_id))
        return Deleted(schedule_id=str(schedule_id), deleted=True)

    @api.post("/{schedule_id}/trigger", response_model=Tick, responses=errors(404, 422))
    def trigger(schedule_id: ScheduleId) -> Tick:
        """Run the schedule now; the answer names the execution (404 when its playbook is gone)."""
        return tick_json(service.trigger(known(schedule_id)))

    @api.get("/{schedule_id}/ticks", response_model=TickList, responses=errors(404, 422))
    def ticks(schedule_id: ScheduleId, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> TickList:
        """The latest ticks, newest first."""
        record = service.get(known(schedule_id))
        return TickList(items=[tick_json(t) for t in store.ticks(record.schedule_id, limit=limit)])

    return api
